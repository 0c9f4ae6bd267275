"""dlib's deep networks read from dlib's own files and rebuilt as ONNX graphs, so that no dlib code runs to serve them.

A network file is what `dlib::serialize(net)` writes (dlib/serialize.h, dlib/dnn/core.h, layers.h, input.h,
loss.h). Integers are dlib's variable-length encoding (a control byte: the count of little-endian bytes that
follow, 0x80 set for a negative number); floats are a pair of such integers (mantissa, exponent: mantissa * 2 **
exponent); strings an unsigned length then the bytes; bools '1' or '0'; a tensor's values raw little-endian
float32. What the file does not hold is the network's *type*: which layers wrap which, and the tags skips and
`add_prev` refer to. `add_layer` writes its subnetwork before its own layer, so the layers come input first,
each wrapper's version number written on the way in. The type is given here as a tree of `Node`s mirroring dlib's
C++ template (`face_recognition_resnet()` is dlib_face_recognition_resnet_model_v1's, from
dlib/examples/dnn_face_recognition_ex.cpp); each layer's own settings (filter counts, sizes, strides, padding) and
weights are read from the file, and checked where the type and the file could disagree.

The ONNX graph takes a float NHWC batch of RGB images already multiplied by 1/256 (the recipe's scale: dlib's
`input_rgb_image` feeds `(pixel - channel mean) / 256`); it subtracts the file's channel means / 256, which is
the same float arithmetic (a power of two scales without rounding), and has a dynamic batch.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from faceserve.models.repository import INPUT_NAME

OPSET = 17
IR_VERSION = 8  # opset 17's; onnxruntime refuses newer IR versions than it knows


class DlibFormatError(ValueError):
    """The file is not the network the type describes (or not a dlib network at all)."""


# ---- dlib's serialization -------------------------------------------------------------------


class Reader:
    """dlib's portable serialization (dlib/serialize.h) read from bytes."""

    def __init__(self, data: bytes):
        self.data, self.at = data, 0

    def _take(self, count: int) -> bytes:
        if self.at + count > len(self.data):
            raise DlibFormatError(f"the file ends at byte {len(self.data)}, {count} more were expected at {self.at}")
        chunk = self.data[self.at:self.at + count]
        self.at += count
        return chunk

    def integer(self) -> int:
        """Any of dlib's integer types: a control byte (its low nibble the byte count, 0x80 for negative)."""
        control = self._take(1)[0]
        size = control & 0x0F
        if size == 0 or size > 8 or control & 0x70:
            raise DlibFormatError(f"byte {self.at - 1}: {control:#04x} is not an integer's control byte")
        value = int.from_bytes(self._take(size), "little")
        return -value if control & 0x80 else value

    def real(self) -> float:
        """A float or double: `float_details` (mantissa, exponent); the old ASCII form is not read."""
        if self.data[self.at] & 0x70:
            raise DlibFormatError(f"byte {self.at}: a floating point number in dlib's old text form")
        mantissa, exponent = self.integer(), self.integer()
        special = {32000: math.inf, 32001: -math.inf, 32002: math.nan}
        return special[exponent] if exponent in special else math.ldexp(mantissa, exponent)

    def boolean(self) -> bool:
        byte = self._take(1)
        if byte not in (b"0", b"1"):
            raise DlibFormatError(f"byte {self.at - 1}: {byte!r} is not a bool ('0' or '1')")
        return byte == b"1"

    def string(self) -> str:
        return self._take(self.integer()).decode("latin-1")

    def version(self, accepted: range, what: str) -> int:
        version = self.integer()
        if version not in accepted:
            raise DlibFormatError(f"{what}: version {version}, expected {accepted.start}..{accepted.stop - 1}")
        return version

    def tensor(self) -> np.ndarray:
        """A `resizable_tensor`: version 2, its (num_samples, k, nr, nc), then raw little-endian float32."""
        self.version(range(2, 3), "tensor")
        shape = tuple(self.integer() for _ in range(4))
        count = int(np.prod(shape))
        return np.frombuffer(self._take(4 * count), dtype="<f4").astype(np.float32).reshape(shape)

    def alias_shape(self) -> tuple[int, int, int, int]:
        """An `alias_tensor`: only its shape (its offset into the layer's params is the layer's own)."""
        self.version(range(1, 2), "alias_tensor")
        return tuple(self.integer() for _ in range(4))


def _slice(params: np.ndarray, offset: int, shape: tuple[int, ...]) -> np.ndarray:
    count = int(np.prod(shape))
    flat = params.reshape(-1)
    if offset + count > flat.size:
        raise DlibFormatError(f"params hold {flat.size} values, {offset + count} are needed")
    return flat[offset:offset + count].reshape(shape)


# ---- layers: what each `*_` details object holds -------------------------------------------------


@dataclasses.dataclass
class Details:
    """One layer's settings and weights as read (`kind` is dlib's class without its version, e.g. `con`)."""

    kind: str
    values: dict


def _con(reader: Reader, version: str) -> dict:
    params = reader.tensor()
    num_filters, nr, nc = reader.integer(), reader.integer(), reader.integer()
    stride_y, stride_x, padding_y, padding_x = (reader.integer() for _ in range(4))
    filters, biases = reader.alias_shape(), reader.alias_shape()
    for _ in range(4):  # learning-rate and weight-decay multipliers
        reader.real()
    use_bias = reader.boolean() if version in ("con_5", "con_6") else True
    if version == "con_6" and reader.boolean():
        raise DlibFormatError("a con_ layer with its relu fused in is not read")
    weights = _slice(params, 0, filters)
    bias = _slice(params, weights.size, biases).reshape(-1) if use_bias else np.zeros(num_filters, np.float32)
    if filters[0] != num_filters or filters[2:] != (nr, nc):
        raise DlibFormatError(f"con_: filters {filters} for {num_filters} filters of {nr}x{nc}")
    return {"weights": weights, "bias": bias, "strides": (stride_y, stride_x), "pads": (padding_y, padding_x)}


def _affine(reader: Reader, version: str) -> dict:
    params = reader.tensor()
    gamma, beta = reader.alias_shape(), reader.alias_shape()
    mode = reader.integer()
    disabled = reader.boolean() if version == "affine_2" else False
    scale = _slice(params, 0, gamma)
    return {"scale": scale.reshape(-1), "shift": _slice(params, scale.size, beta).reshape(-1),
            "conv_mode": mode == 0, "disabled": disabled}  # CONV_MODE 0, FC_MODE 1


def _relu(reader: Reader, version: str) -> dict:
    return {"disabled": reader.boolean() if version == "relu_2" else False}


def _pool(reader: Reader, version: str) -> dict:
    nr, nc, stride_y, stride_x, padding_y, padding_x = (reader.integer() for _ in range(6))
    return {"window": (nr, nc), "strides": (stride_y, stride_x), "pads": (padding_y, padding_x)}


def _fc(reader: Reader, version: str) -> dict:
    num_outputs, num_inputs = reader.integer(), reader.integer()
    params = reader.tensor()
    weights, biases = reader.alias_shape(), reader.alias_shape()
    bias_mode = reader.integer()  # FC_HAS_BIAS 0, FC_NO_BIAS 1
    for _ in range(4):
        reader.real()
    use_bias = (reader.boolean() if version == "fc_3" else True) and bias_mode == 0
    matrix = _slice(params, 0, weights).reshape(num_inputs, num_outputs)
    bias = _slice(params, matrix.size, biases).reshape(-1) if use_bias else None
    return {"weights": matrix, "bias": bias}


def _input_rgb(reader: Reader, version: str) -> dict:
    means = tuple(reader.real() for _ in range(3))
    size = (reader.integer(), reader.integer()) if version == "input_rgb_image_sized" else None
    return {"means": means, "size": size}


def _loss_metric(reader: Reader, version: str) -> dict:
    margin = reader.real()
    distance_threshold = reader.real() if version == "loss_metric_2" else 0.6
    return {"margin": margin, "distance_threshold": distance_threshold}


# dlib's version strings, by the kind a network type names
LAYER_READERS = {
    "con": ({"con_4", "con_5", "con_6"}, _con),
    "affine": ({"affine_", "affine_2"}, _affine),  # (a bn_ layer, which dlib also reads as affine_, is not read)
    "relu": ({"relu_", "relu_2"}, _relu),
    "max_pool": ({"max_pool_2"}, _pool),
    "avg_pool": ({"avg_pool_2"}, _pool),
    "add_prev": ({"add_prev_"}, lambda reader, version: {}),
    "fc": ({"fc_2", "fc_3"}, _fc),
    "input_rgb_image": ({"input_rgb_image", "input_rgb_image_sized"}, _input_rgb),
    "loss_metric": ({"loss_metric_", "loss_metric_2"}, _loss_metric),
}


def read_details(reader: Reader, kind: str) -> Details:
    versions, read = LAYER_READERS[kind]
    at = reader.at
    version = reader.string()
    if version not in versions:
        raise DlibFormatError(f"byte {at}: a {kind} layer was expected, the file has {version!r}")
    return Details(kind, read(reader, version))


# ---- the network type ----------------------------------------------------------------------------


@dataclasses.dataclass
class Node:
    """One wrapper of dlib's network type: `layer` (add_layer over `kind`), `tag`, `skip`, `input` or `loss`;
    `tag` is the tag id of a tag, skip or add_prev. `details` is filled by `read_network`."""

    wrapper: str
    kind: str = ""
    sub: Node | None = None
    tag: int = 0
    details: Details | None = None


def layer(kind: str, sub: Node, tag: int = 0) -> Node:
    return Node("layer", kind, sub, tag)


def tag(tag_id: int, sub: Node) -> Node:
    return Node("tag", sub=sub, tag=tag_id)


def skip(tag_id: int, sub: Node) -> Node:
    return Node("skip", sub=sub, tag=tag_id)


# dlib/examples/dnn_face_recognition_ex.cpp and tools/python/src/face_recognition.cpp, word for word:
#   residual      = add_prev1<block<N,BN,1,tag1<SUBNET>>>
#   residual_down = add_prev2<avg_pool<2,2,2,2,skip1<tag2<block<N,BN,2,tag1<SUBNET>>>>>>
#   block         = BN<con<N,3,3,1,1,relu<BN<con<N,3,3,stride,stride,SUBNET>>>>>
#   ares = relu<residual<block,N,affine,SUBNET>>, ares_down = relu<residual_down<block,N,affine,SUBNET>>
def _block(sub: Node) -> Node:
    return layer("affine", layer("con", layer("relu", layer("affine", layer("con", sub)))))


def _ares(sub: Node) -> Node:
    return layer("relu", layer("add_prev", _block(tag(1, sub)), tag=1))


def _ares_down(sub: Node) -> Node:
    return layer("relu", layer("add_prev", layer("avg_pool", skip(1, tag(2, _block(tag(1, sub))))), tag=2))


def face_recognition_resnet() -> Node:
    """loss_metric<fc_no_bias<128,avg_pool_everything<alevel0<alevel1<alevel2<alevel3<alevel4<
    max_pool<3,3,2,2,relu<affine<con<32,7,7,2,2,input_rgb_image_sized<150>>>>>>>>>>>>>"""
    net = layer("max_pool", layer("relu", layer("affine", layer("con", Node("input", "input_rgb_image")))))
    for repeats, down in ((3, False), (4, True), (3, True), (3, True), (1, True)):  # alevel4 .. alevel0
        if down:
            net = _ares_down(net)
        for _ in range(repeats - down):
            net = _ares(net)
    return Node("loss", "loss_metric", layer("fc", layer("avg_pool", net)))



def read_network(data: bytes, network: Node) -> Node:
    """`network` with every layer's details read from `data` (what `dlib::serialize(net)` wrote)."""
    reader = Reader(data)
    _read(reader, network)
    if reader.at != len(data):
        raise DlibFormatError(f"{len(data) - reader.at} bytes are left after the network")
    return network


def _read(reader: Reader, node: Node) -> None:
    if node.wrapper == "loss":
        reader.version(range(1, 2), "add_loss_layer")
        node.details = read_details(reader, node.kind)
        _read(reader, node.sub)
    elif node.wrapper in ("tag", "skip"):
        # a tag over the input layer is another class in dlib (it keeps outputs of its own): not in these nets
        if node.sub.wrapper == "input":
            raise DlibFormatError("a tag directly over the input layer is not read")
        reader.version(range(1, 2), f"add_{node.wrapper}_layer")
        _read(reader, node.sub)
    elif node.wrapper == "layer" and node.sub.wrapper == "input":
        version = reader.version(range(2, 4), "add_layer over the input")
        node.sub.details = read_details(reader, node.sub.kind)
        node.details = read_details(reader, node.kind)
        for _ in range(3):  # this_layer_setup_called, gradient_input_is_stale, ..._disabled
            reader.boolean()
        for _ in range(3):  # x_grad, cached_output, grad_final
            reader.tensor()
        if version >= 3:
            reader.integer()  # _sample_expansion_factor
    elif node.wrapper == "layer":
        version = reader.version(range(1, 3), "add_layer")
        _read(reader, node.sub)
        node.details = read_details(reader, node.kind)
        for _ in range(3):
            reader.boolean()
        for _ in range(3 if version == 2 else 2):  # x_grad, cached_output, params_grad
            reader.tensor()
    else:
        raise DlibFormatError(f"a {node.wrapper} node cannot be read on its own")


# ---- the ONNX graph -------------------------------------------------------------------------------


class _Graph:
    """Nodes and initializers, with each tensor's (channels, rows, columns) known as the graph is built."""

    def __init__(self):
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.count = 0

    def name(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}_{self.count}"

    def constant(self, prefix: str, value: np.ndarray) -> str:
        name = self.name(prefix)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], prefix: str | None = None, **attributes) -> str:
        output = self.name(prefix or op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [output], name=output, **attributes))
        return output


def _pooled(size: int, window: int, stride: int, pad: int) -> int:
    return 1 + (size + 2 * pad - window) // stride


def _build(graph: _Graph, node: Node, tags: dict[int, tuple[str, tuple]]) -> tuple[str, tuple[int, int, int]]:
    """The ONNX tensor (NCHW) that `node` outputs and its (channels, rows, columns); `tags` the nearest tag of
    each id below the node, as dlib's `layer<tagN>(sub)` finds it."""
    if node.wrapper == "input":
        values = node.details.values
        if values["size"] is None:
            raise DlibFormatError("an input layer of any size (input_rgb_image) is not built: the graph needs one")
        rows, columns = values["size"]
        means = np.asarray(values["means"], dtype=np.float32) / np.float32(256)
        centred = graph.op("Sub", [INPUT_NAME, graph.constant("channel_means", means)])
        return graph.op("Transpose", [centred], perm=[0, 3, 1, 2]), (3, rows, columns)
    if node.wrapper == "loss":
        return _build(graph, node.sub, tags)
    below = _build(graph, node.sub, tags)
    if node.wrapper == "tag":
        tags[node.tag] = below
        return below
    if node.wrapper == "skip":
        return tags[node.tag]
    x, (channels, rows, columns) = below
    values = node.details.values
    if node.kind == "con":
        weights = values["weights"]
        if weights.shape[1] != channels:
            raise DlibFormatError(f"con_ filters take {weights.shape[1]} channels, its input has {channels}")
        (pad_y, pad_x), (stride_y, stride_x) = values["pads"], values["strides"]
        out = graph.op("Conv", [x, graph.constant("filters", weights), graph.constant("bias", values["bias"])],
                       kernel_shape=list(weights.shape[2:]), strides=[stride_y, stride_x],
                       pads=[pad_y, pad_x, pad_y, pad_x])
        return out, (weights.shape[0], _pooled(rows, weights.shape[2], stride_y, pad_y),
                     _pooled(columns, weights.shape[3], stride_x, pad_x))
    if node.kind == "affine":
        if values["disabled"]:
            return below
        if not values["conv_mode"] or values["scale"].size != channels:
            raise DlibFormatError(f"an affine layer of {values['scale'].size} values per channel over {channels}")
        shape = (1, channels, 1, 1)
        scaled = graph.op("Mul", [x, graph.constant("scale", values["scale"].reshape(shape))])
        shifted = graph.op("Add", [scaled, graph.constant("shift", values["shift"].reshape(shape))])
        return shifted, (channels, rows, columns)
    if node.kind == "relu":
        return below if values["disabled"] else (graph.op("Relu", [x]), (channels, rows, columns))
    if node.kind in ("max_pool", "avg_pool"):
        (window_y, window_x), (stride_y, stride_x), (pad_y, pad_x) = values["window"], values["strides"], values["pads"]
        if (window_y, window_x) == (0, 0):  # dlib's *_pool_everything
            return graph.op("GlobalAveragePool" if node.kind == "avg_pool" else "GlobalMaxPool", [x]), (channels, 1, 1)
        if node.kind == "avg_pool" and (pad_y or pad_x):
            raise DlibFormatError("a padded avg_pool is not built (which padded values dlib averages is not checked)")
        out = graph.op("MaxPool" if node.kind == "max_pool" else "AveragePool", [x],
                       kernel_shape=[window_y, window_x], strides=[stride_y, stride_x],
                       pads=[pad_y, pad_x, pad_y, pad_x])
        return out, (channels, _pooled(rows, window_y, stride_y, pad_y), _pooled(columns, window_x, stride_x, pad_x))
    if node.kind == "add_prev":
        return _add_prev(graph, below, tags[node.tag])
    if node.kind == "fc":
        weights = values["weights"]
        if weights.shape[0] != channels * rows * columns:
            raise DlibFormatError(f"fc_ takes {weights.shape[0]} inputs, its input has {channels * rows * columns}")
        out = graph.op("MatMul", [graph.op("Flatten", [x], axis=1), graph.constant("weights", weights)])
        if values["bias"] is not None:
            out = graph.op("Add", [out, graph.constant("bias", values["bias"])])
        return out, (weights.shape[1], 1, 1)
    raise DlibFormatError(f"no ONNX for dlib layer {node.kind}")


def _add_prev(graph: _Graph, first: tuple, second: tuple) -> tuple[str, tuple[int, int, int]]:
    """dlib's add_prev over tensors of different sizes (`tt::add`): the sum has the larger size of each dimension,
    each side counting as zero where it has no values (a projection-free residual with more channels, and a strided
    block one row and column smaller than its pooled shortcut, as at 8x8 -> 3x3 against 4x4)."""
    shape = tuple(max(a, b) for a, b in zip(first[1], second[1]))
    padded = []
    for name, own in (first, second):
        if own != shape:
            ends = [0, *(want - have for want, have in zip(shape, own))]
            name = graph.op("Pad", [name, graph.constant("pads", np.array([0, 0, 0, 0, *ends], dtype=np.int64))])
        padded.append(name)
    return graph.op("Add", padded), shape


def to_onnx(network: Node, output: str = "descriptor") -> onnx.ModelProto:
    """The ONNX model of a network read by `read_network`: input `input` [batch, rows, columns, 3] (RGB / 256),
    one output [batch, features]."""
    graph = _Graph()
    result, (features, _, _) = _build(graph, network, {})
    graph.nodes.append(helper.make_node("Identity", [result], [output], name=output))
    node = network
    while node.wrapper != "input":
        node = node.sub
    rows, columns = node.details.values["size"]
    model = helper.make_model(
        helper.make_graph(
            graph.nodes, "dlib_network",
            [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", rows, columns, 3])],
            [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["batch", features])],
            graph.initializers),
        opset_imports=[helper.make_opsetid("", OPSET)], producer_name="faceserve convert.dlib", ir_version=IR_VERSION)
    onnx.checker.check_model(model)
    return onnx.shape_inference.infer_shapes(model, strict_mode=True)


def face_recognition_onnx(path: Path, output: str = "descriptor") -> onnx.ModelProto:
    """dlib_face_recognition_resnet_model_v1.dat as an ONNX model."""
    return to_onnx(read_network(Path(path).read_bytes(), face_recognition_resnet()), output)


# ---- dlib itself, run in the face_recognition peer (faceserve.dev.peers), never in this environment ------------

# Run by the peer's interpreter: `chips IN OUT MODELS` finds the faces of photos (IN's image_0, image_1, ...:
# RGB uint8) with dlib's HOG detector (upsampled once, as face_recognition does) and its five-point shape
# predictor, and cuts dlib's aligned chips (get_face_chip: 150 px, padding 0.25, as compute_face_descriptor does);
# `descriptors IN OUT MODELS` runs dlib's network on chips, one call per chip (the chip overload, no jitter).
_PEER_PROGRAM = r"""
import sys
import dlib
import numpy as np

command, source, target, models = sys.argv[1:5]
given = np.load(source)
if command == "chips":
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(models + "/shape_predictor_5_face_landmarks.dat")
    chips, images, points = [], [], []
    for index in range(len(given.files)):
        image = np.ascontiguousarray(given[f"image_{index}"])
        for box in detector(image, 1):
            shape = predictor(image, box)
            chips.append(dlib.get_face_chip(image, shape, size=150, padding=0.25))
            images.append(index)
            points.append([(p.x, p.y) for p in shape.parts()])
    np.savez(target, chips=np.asarray(chips, dtype=np.uint8).reshape(-1, 150, 150, 3),
             images=np.asarray(images, dtype=np.int64), points=np.asarray(points, dtype=np.float64).reshape(-1, 5, 2))
elif command == "descriptors":
    net = dlib.face_recognition_model_v1(models + "/dlib_face_recognition_resnet_model_v1.dat")
    rows = [np.asarray(net.compute_face_descriptor(np.ascontiguousarray(chip))) for chip in given["chips"]]
    np.savez(target, descriptors=np.asarray(rows, dtype=np.float64).reshape(-1, 128))
"""


def _in_peer(command: str, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import subprocess
    import tempfile

    from faceserve.dev import peers

    models = peers.model_file("dlib_face_recognition_resnet_model_v1.dat").parent
    with tempfile.TemporaryDirectory(prefix="faceserve-dlib-") as folder:
        source, target = Path(folder) / "in.npz", Path(folder) / "out.npz"
        np.savez(source, **arrays)
        done = subprocess.run([str(peers.python()), "-c", _PEER_PROGRAM, command, str(source), str(target),
                               str(models)], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"dlib ({command}) failed in the peer environment: {done.stderr[-2000:]}")
        with np.load(target) as result:
            return dict(result)


def dlib_chips(images: list[np.ndarray]) -> dict[str, np.ndarray]:
    """dlib's own aligned face chips of RGB photos: `chips` [N, 150, 150, 3] uint8 RGB, `images` (the index of
    the photo each comes from), `points` (dlib's five landmarks in the photo: eye corners and the nose's base)."""
    return _in_peer("chips", {f"image_{i}": np.asarray(image, dtype=np.uint8) for i, image in enumerate(images)})


def dlib_descriptors(chips: np.ndarray) -> np.ndarray:
    """dlib's 128-d descriptors of aligned 150x150 RGB chips, computed by dlib itself: [N, 128] float64."""
    return _in_peer("descriptors", {"chips": np.asarray(chips, dtype=np.uint8)})["descriptors"]


# ---- the converter's source: dlib's file in, dlib itself as the parity reference ----------------------------

PIXEL_SCALE = 1 / 256  # the recipe's scale: the graph's input is RGB / 256 (module docstring)


def _pixels(batch: np.ndarray) -> np.ndarray:
    """The 8-bit RGB images a batch of the graph's inputs stands for (dlib takes nothing else)."""
    pixels = np.asarray(batch, dtype=np.float64) / PIXEL_SCALE
    whole = np.rint(pixels)
    if not (np.array_equal(pixels, whole) and whole.min() >= 0 and whole.max() <= 255):
        raise ValueError("dlib takes 8-bit pixels: the batch is not whole pixel values times 1/256")
    return whole.astype(np.uint8)


def parity_photos() -> list[np.ndarray]:
    """The photos dlib's chips are cut from for parity: every real photo of faces on this machine (the shared
    fixtures' detection, identity and image photos where present)."""
    from faceserve.dev import photos
    from faceserve.dev.fixtures import FIXTURES

    found = list(photos.face_photos().values())
    for folder in ("detection", "identity"):
        found += [photos.load_rgb(path) for path in sorted((FIXTURES / folder).rglob("*"))
                  if path.suffix.lower() in (".jpg", ".jpeg", ".png")]
    return found


def parity_samples(spec) -> dict[str, list[np.ndarray]]:
    """The parity mode of a dlib network: random images of whole pixel values, and dlib's own face chips of real
    photos (`dlib_chips`), both as the recipe scales them (which must be the graph's: RGB / 256)."""
    from convert.parity import random_pixel_inputs

    if (spec.scale, spec.offset, spec.colour) != (PIXEL_SCALE, 0.0, "rgb"):
        raise ValueError(f"{spec.name}: a dlib network takes RGB / 256; give the recipe colour = \"rgb\", "
                         f"scale = {PIXEL_SCALE} and offset = 0.0")
    chips = dlib_chips(parity_photos())["chips"]
    return {"random": random_pixel_inputs(spec), "real": [chips.astype(np.float32) * np.float32(PIXEL_SCALE)]}


def source_model(path: Path, outputs: list[str]):
    """`convert`'s source model (`convert.export.SourceModel`) of dlib_face_recognition_resnet_model_v1.dat: the
    ONNX graph read from the file, dlib itself (the face_recognition peer) as the reference it is checked against."""
    from convert.export import SourceModel

    (output,) = outputs
    model = face_recognition_onnx(path, output)
    rows, columns, channels = (d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[1:])

    def run(batch: np.ndarray) -> dict[str, np.ndarray]:
        return {output: dlib_descriptors(_pixels(batch)).astype(np.float32)}

    return SourceModel(run, model, (rows, columns, channels), samples=parity_samples)
