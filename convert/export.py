"""Source framework model -> ONNX through tf2onnx, with a dynamic batch and stable names.

Each loader returns a `SourceModel`: a callable running the source framework on a
float32 NHWC batch (the parity reference), and the ONNX bytes tf2onnx produced.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import onnx

from faceserve.models.repository import INPUT_NAME
from faceserve.models.spec import ModelSpec

OPSET = 17


@dataclasses.dataclass
class SourceModel:
    run: Callable[[np.ndarray], dict[str, np.ndarray]]  # outputs keyed by their ONNX names
    onnx_model: onnx.ModelProto
    input_shape: tuple[int, int, int]
    # the parity sample sets (`convert.parity.check`'s `sets`) of a source that cannot take parity's own: None for most
    samples: Callable[[ModelSpec], dict[str, list[np.ndarray]]] | None = None


def _rename(model: onnx.ModelProto, old: str, new: str) -> None:
    if old == new:
        return
    for node in model.graph.node:
        node.input[:] = [new if n == old else n for n in node.input]
        node.output[:] = [new if n == old else n for n in node.output]
    for value in (*model.graph.input, *model.graph.output):
        if value.name == old:
            value.name = new


def _stable_names(model: onnx.ModelProto, outputs: list[str]) -> onnx.ModelProto:
    _rename(model, model.graph.input[0].name, INPUT_NAME)
    if len(model.graph.output) != len(outputs):
        raise ValueError(f"the model has {len(model.graph.output)} outputs "
                         f"({', '.join(o.name for o in model.graph.output)}) but the recipe names {len(outputs)} "
                         f"({', '.join(outputs)}); give `outputs` (--outputs) one name per output, in order")
    for value, name in zip(list(model.graph.output), outputs):
        _rename(model, value.name, name)
    return model


def _dynamic_batch(model: onnx.ModelProto) -> onnx.ModelProto:
    """Make a batch-1 graph (TFLite exports) batch-dynamic: batch dims become symbolic and
    constant Reshape targets copy the batch from their input (ONNX Reshape's 0)."""
    for value in (*model.graph.input, *model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    reshape_shapes = {n.input[1] for n in model.graph.node if n.op_type == "Reshape"}
    for init in model.graph.initializer:
        if init.name in reshape_shapes:
            shape = onnx.numpy_helper.to_array(init).copy()
            if shape.size and shape[0] == 1:
                shape[0] = 0
                init.CopyFrom(onnx.numpy_helper.from_array(shape, init.name))
    return model


def from_keras(path: Path, outputs: list[str]) -> SourceModel:
    import keras

    return _from_keras_model(keras.models.load_model(path, compile=False), outputs)


def _from_keras_model(model, outputs: list[str]) -> SourceModel:
    import tensorflow as tf
    import tf2onnx

    shape = tuple(int(d) for d in model.inputs[0].shape[1:])
    signature = (tf.TensorSpec((None, *shape), tf.float32, name=INPUT_NAME),)
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=signature, opset=OPSET)

    def run(batch: np.ndarray) -> dict[str, np.ndarray]:
        result = model(batch, training=False)
        result = result if isinstance(result, (list, tuple)) else [result]
        return {name: np.asarray(r) for name, r in zip(outputs, result)}

    return SourceModel(run, _stable_names(proto, outputs), shape)


def from_saved_model(path: Path, outputs: list[str], signature_key: str = "serve") -> SourceModel:
    import tensorflow as tf
    import tf2onnx

    loaded = tf.saved_model.load(str(path))
    signature = loaded.signatures[signature_key]
    (arg_name, spec), = signature.structured_input_signature[1].items()
    shape = tuple(int(d) for d in spec.shape[1:])
    output_keys = sorted(signature.structured_outputs)

    @tf.function(input_signature=[tf.TensorSpec((None, *shape), tf.float32, name=INPUT_NAME)])
    def serve(x):
        result = signature(**{arg_name: x})
        return [result[k] for k in output_keys]

    proto, _ = tf2onnx.convert.from_function(serve, input_signature=serve.input_signature, opset=OPSET)

    def run(batch: np.ndarray) -> dict[str, np.ndarray]:
        return {name: np.asarray(r) for name, r in zip(outputs, serve(tf.constant(batch)))}

    return SourceModel(run, _stable_names(proto, outputs), shape)


def _densified(path: Path, scratch: Path) -> Path:
    """`path` itself, or, for a model with sparse weights (DENSIFY ops, which tf2onnx cannot read), a copy written to
    `scratch` where each DENSIFY's output is the dense constant TFLite makes of it and the op is gone. TFLite's own
    kernel does the densifying; parity then checks the ONNX model against the sparse original."""
    import tensorflow as tf
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(path))
    codes = [max(code.builtinCode, code.deprecatedBuiltinCode) for code in model.operatorCodes]
    graph = model.subgraphs[0]
    densify = [op for op in graph.operators if codes[op.opcodeIndex] == schema.BuiltinOperator.DENSIFY]
    if not densify:
        return path
    # Without the XNNPACK delegate, which takes the sparse weights over itself and leaves DENSIFY's outputs unwritten.
    interpreter = tf.lite.Interpreter(
        model_path=str(path), experimental_preserve_all_tensors=True,
        experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    interpreter.invoke()  # DENSIFY's outputs depend on its constant input only
    for op in densify:
        (sparse,), (dense,) = op.inputs, op.outputs
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(interpreter.get_tensor(dense).tobytes(), np.uint8)
        model.buffers.append(buffer)
        # the sparse input, now unused, takes the same dense data: tf2onnx reads every constant
        for index in (dense, sparse):
            graph.tensors[index].buffer = len(model.buffers) - 1
            graph.tensors[index].type = graph.tensors[dense].type
            graph.tensors[index].sparsity = None
    graph.operators = [op for op in graph.operators if op not in densify]
    flatbuffer_utils.write_model(model, str(scratch))
    return scratch


def from_tflite(path: Path, outputs: list[str]) -> SourceModel:
    import tensorflow as tf
    import tf2onnx

    # Builtin kernels, not the XNNPACK delegate: the reference should be TFLite's own arithmetic.
    interpreter = tf.lite.Interpreter(
        model_path=str(path),
        experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    (input_detail,) = interpreter.get_input_details()
    output_details = interpreter.get_output_details()
    shape = tuple(int(d) for d in input_detail["shape"][1:])
    with tempfile.TemporaryDirectory() as scratch:
        dense = _densified(path, Path(scratch) / path.name)
        proto, _ = tf2onnx.convert.from_tflite(str(dense), opset=OPSET)
    # The manifest names the outputs in the TFLite interpreter's order.
    final_name = {d["name"]: name for d, name in zip(output_details, outputs)}
    proto = _dynamic_batch(proto)
    _stable_names(proto, [final_name[o.name] for o in proto.graph.output])

    def run(batch: np.ndarray) -> dict[str, np.ndarray]:
        rows: dict[str, list[np.ndarray]] = {name: [] for name in outputs}
        for sample in batch:  # the TFLite graph takes one image at a time
            interpreter.set_tensor(input_detail["index"], sample[None])
            interpreter.invoke()
            for detail in output_details:
                rows[final_name[detail["name"]]].append(interpreter.get_tensor(detail["index"])[0])
        return {name: np.stack(values) for name, values in rows.items()}

    return SourceModel(run, proto, shape)


def _tfjs_for_conversion(model: dict) -> dict:
    """The two edits a TensorFlow.js graph needs before TensorFlow or tf2onnx 1.17 reads it.

    `_FusedConv2D` nodes written by the tfjs converter lack the `TArgs` attribute TensorFlow's op
    definition requires (one DT_FLOAT per extra argument). An integer image input (and the Cast that
    follows it) becomes a float input: every backend here sends float32, and integer pixel values
    are exact in float32, so the arithmetic is unchanged."""
    model = json.loads(json.dumps(model))
    nodes = model["modelTopology"]["node"]
    integer_inputs = set()
    for node in nodes:
        if node["op"] == "_FusedConv2D" and "TArgs" not in node["attr"]:
            node["attr"]["TArgs"] = {"list": {"type": ["DT_FLOAT"] * int(node["attr"]["num_args"]["i"])}}
        if node["op"] == "Placeholder" and node["attr"]["dtype"]["type"] != "DT_FLOAT":
            node["attr"]["dtype"] = {"type": "DT_FLOAT"}
            integer_inputs.add(node["name"])
    for node in nodes:
        if node["op"] == "Cast" and node.get("input", [None])[0] in integer_inputs:
            node["op"], node["attr"] = "Identity", {"T": {"type": "DT_FLOAT"}}
    return model


def _unfused_depthwise(nodes: list[dict]) -> list[dict]:
    """`FusedDepthwiseConv2dNative` is an op of TensorFlow.js alone (its converter fuses a depthwise
    convolution with its bias and activation); TensorFlow runs the same arithmetic as the three ops it
    fused, the last one keeping the node's name so that its consumers are unchanged."""
    unfused = []
    for node in nodes:
        if node["op"] != "FusedDepthwiseConv2dNative":
            unfused.append(node)
            continue
        name, (x, weights, bias) = node["name"], node["input"]
        fused = [base64.b64decode(op).decode() for op in node["attr"]["fused_ops"]["list"]["s"]]
        if fused not in (["BiasAdd"], ["BiasAdd", "Relu"]):
            raise ValueError(f"{name}: cannot unfuse {fused}")
        conv_attr = {key: value for key, value in node["attr"].items() if key not in ("fused_ops", "num_args")}
        steps = [{"name": f"{name}/depthwise", "op": "DepthwiseConv2dNative", "input": [x, weights], "attr": conv_attr},
                 {"name": f"{name}/bias", "op": "BiasAdd", "input": [f"{name}/depthwise", bias],
                  "attr": {"T": node["attr"]["T"], "data_format": node["attr"]["data_format"]}}]
        if fused[-1] == "Relu":
            steps.append({"name": f"{name}/relu", "op": "Relu", "input": [f"{name}/bias"], "attr": {"T": node["attr"]["T"]}})
        steps[-1]["name"] = name
        unfused.extend(steps)
    return unfused


def _tfjs_session(model: dict, folder: Path):
    """The graph run by TensorFlow itself (a v1 Session over the GraphDef the JSON describes)."""
    import tensorflow as tf
    from google.protobuf import json_format
    from tf2onnx import tfjs_utils

    manifest = model["weightsManifest"][0]
    data = b"".join((folder / shard).read_bytes() for shard in manifest["paths"])
    weights, offset = {}, 0
    for weight in manifest["weights"]:
        name, values, size = tfjs_utils.read_tfjs_weight(weight, data, offset)
        weights[name], offset = values, offset + size
    topology = {**model["modelTopology"], "node": _unfused_depthwise(model["modelTopology"]["node"])}
    graph_def = json_format.ParseDict(topology, tf.compat.v1.GraphDef(), ignore_unknown_fields=True)
    for node in graph_def.node:
        if node.op == "Const" and node.name in weights:  # shards hold doubles as float32: cast back
            dtype = tf.as_dtype(node.attr["dtype"].type)
            node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(weights[node.name].astype(dtype.as_numpy_dtype)))
    graph = tf.Graph()
    with graph.as_default():
        tf.graph_util.import_graph_def(graph_def, name="")
    return tf.compat.v1.Session(graph=graph)


def from_tfjs(path: Path, outputs: list[str], graph_outputs: list[str] | None = None) -> SourceModel:
    """A TensorFlow.js graph model (`model.json` + weight shards) through tf2onnx's tfjs reader.

    `graph_outputs` cuts the graph at these tensors (FaceBoxes: before its built-in NMS loop, which
    decodes one image at a time; our own decoding and OpenCV's NMS take it from there)."""
    from tf2onnx import convert as tf2onnx_convert

    np.product = np.prod  # tf2onnx 1.17's tfjs reader calls numpy.product, which numpy 2 removed
    model = _tfjs_for_conversion(json.loads(path.read_text()))
    (placeholder,) = [n for n in model["modelTopology"]["node"] if n["op"] == "Placeholder"]
    graph_outputs = graph_outputs or [spec["name"] for spec in model["signature"]["outputs"].values()]
    edited = path.with_name(path.stem + ".float-input.json")
    edited.write_text(json.dumps(model))
    proto, _ = tf2onnx_convert._convert_common(  # the function behind `python -m tf2onnx.convert --tfjs`
        None, name=str(edited), opset=OPSET, tfjs_path=str(edited),
        input_names=[f"{placeholder['name']}:0"], output_names=[f"{o}:0" for o in graph_outputs])
    dims = placeholder["attr"]["shape"]["shape"]["dim"][1:]
    shape = tuple(int(d["size"]) for d in dims)
    session = _tfjs_session(model, path.parent)
    fetches = [f"{o}:0" for o in graph_outputs]

    def run(batch: np.ndarray) -> dict[str, np.ndarray]:
        values = session.run(fetches, {f"{placeholder['name']}:0": batch})
        return dict(zip(outputs, values))

    return SourceModel(run, _stable_names(proto, outputs), shape)


def _tfjs_artifact(path: Path):
    """A TensorFlow.js file as published: JSON (`model.json`, binary shards), or, as in nsfwjs, a browserified
    JS module exporting the model object (a JS literal, not JSON) or a shard as a base64 string, read with
    node (which `npm pack` needs anyway)."""
    if path.suffix != ".js":
        return json.loads(path.read_text()) if path.suffix == ".json" else path.read_bytes()
    import subprocess

    exported = subprocess.run(["node", "-e", "process.stdout.write(JSON.stringify(require(process.argv[1])))",
                               str(path.resolve())], check=True, capture_output=True, text=True).stdout
    value = json.loads(exported)
    return base64.b64decode(value) if isinstance(value, str) else value


# Keras 2 variable names (as tfjs layers files carry them) that Keras 3 shortened
_KERAS2_VARIABLE_NAMES = {"depthwise_kernel": "kernel"}


def from_tfjs_layers(path: Path, outputs: list[str]) -> SourceModel:
    """A TensorFlow.js *layers* model (a Keras model config + weight shards, which tf2onnx's tfjs reader,
    made for graph models, cannot read): rebuilt in Keras from its config, given its (dequantised) weights,
    then converted like any Keras model. `path` is the model file; the shards lie beside it under the
    manifest's names (with the model file's `.min.js` suffix when it is a JS bundle)."""
    import keras
    from tf2onnx import tfjs_utils

    np.product = np.prod  # tf2onnx 1.17's tfjs reader calls numpy.product, which numpy 2 removed
    artifact = _tfjs_artifact(path)
    bundle_suffix = ".min.js" if path.name.endswith(".min.js") else ""
    weights = {}
    for group in artifact["weightsManifest"]:
        data = b"".join(_tfjs_artifact(path.parent / f"{shard}{bundle_suffix}") for shard in group["paths"])
        offset = 0
        for weight in group["weights"]:
            name, values, size = tfjs_utils.read_tfjs_weight(weight, data, offset)
            layer, _, variable = name.rpartition("/")
            weights[f"{layer}/{_KERAS2_VARIABLE_NAMES.get(variable, variable)}"] = values
            offset += size
    config = artifact["modelTopology"]["model_config"]
    if config["class_name"] not in ("Model", "Functional"):
        raise ValueError(f"{path}: a {config['class_name']} model; only functional models are read")
    model = keras.Model.from_config(config["config"])
    for layer in model.layers:
        for variable in layer.weights:
            variable.assign(weights.pop(f"{layer.name}/{variable.name}"))
    if weights:
        raise ValueError(f"{path}: weights no layer takes: {', '.join(sorted(weights))}")
    return _from_keras_model(model, outputs)


def from_onnx(path: Path, outputs: list[str]) -> SourceModel:
    """An ONNX model as trained elsewhere: served under our stable names with a dynamic batch, and checked
    against the original file run by onnxruntime (the reference)."""
    import onnxruntime as ort

    original = onnx.load(str(path))
    weights = {init.name for init in original.graph.initializer}
    inputs = [i for i in original.graph.input if i.name not in weights]
    if len(inputs) != 1:
        raise ValueError(f"{path}: {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); a served model "
                         f"takes one image batch")
    (graph_input,) = inputs
    dims = graph_input.type.tensor_type.shape.dim
    if len(dims) != 4 or graph_input.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
        raise ValueError(f"{path}: input {graph_input.name} is not a float NHWC image batch [N, H, W, C]; "
                         f"export the model with one float32 input laid out batch, height, width, channels")
    shape = tuple(int(d.dim_value) if d.HasField("dim_value") else -1 for d in dims[1:])
    if shape[2] not in (1, 3):
        raise ValueError(f"{path}: input {graph_input.name} has {shape[2]} channels last (shape "
                         f"{list(shape)}); the model must take NHWC images with 1 or 3 channels (a "
                         f"channels-first export needs a Transpose at its input)")
    original_names = [o.name for o in original.graph.output]
    session = ort.InferenceSession(path.read_bytes(), providers=["CPUExecutionProvider"])
    batch_one = dims[0].HasField("dim_value") and dims[0].dim_value == 1
    served = onnx.ModelProto()
    served.CopyFrom(original)
    if batch_one:
        _dynamic_batch(served)

    def run(batch: np.ndarray) -> dict[str, np.ndarray]:
        if batch_one:  # the original takes one image at a time
            rows = [session.run(original_names, {graph_input.name: sample[None]}) for sample in batch]
            values = [np.concatenate([row[i] for row in rows]) for i in range(len(original_names))]
        else:
            values = session.run(original_names, {graph_input.name: batch})
        return dict(zip(outputs, values))

    return SourceModel(run, _stable_names(served, outputs), shape)


def from_dlib(path: Path, outputs: list[str]) -> SourceModel:
    """A network file of dlib's (dlib_face_recognition_resnet_model_v1.dat), read and rebuilt by convert.dlib;
    dlib itself, run in the face_recognition peer, is the reference."""
    from convert import dlib

    return dlib.source_model(path, outputs)


LOADERS = {"keras": from_keras, "savedmodel": from_saved_model, "tflite": from_tflite, "tfjs": from_tfjs,
           "tfjs_layers": from_tfjs_layers, "onnx": from_onnx, "dlib": from_dlib}


def load(fmt: str, path: Path, outputs: list[str], **options) -> SourceModel:
    """Convert a source artifact; `fmt` is keras (.h5/.keras), savedmodel, tflite, tfjs (a graph model's
    model.json), tfjs_layers (a layers model's model.json or JS bundle), onnx or dlib; `options` are the format's own
    (tfjs: graph_outputs)."""
    if fmt not in LOADERS:
        raise ValueError(f"unknown source format {fmt!r}; use one of {sorted(LOADERS)}")
    return LOADERS[fmt](path, outputs, **options)


def guess_format(path: Path) -> str:
    if path.is_dir():
        return "savedmodel"
    suffix = path.suffix.lower()
    if suffix in (".h5", ".hdf5", ".keras"):
        return "keras"
    if suffix == ".tflite":
        return "tflite"
    if suffix == ".onnx":
        return "onnx"
    if suffix == ".json":  # the TensorFlow.js converter names what it wrote
        written = json.loads(path.read_text()).get("format", "graph-model")
        return "tfjs_layers" if written == "layers-model" else "tfjs"
    raise ValueError(f"cannot tell the format of {path} from its name; give --format ({', '.join(LOADERS)})")
