"""convert.dlib without dlib: its reading of dlib's portable encodings (bytes as dlib writes them, from the face
ResNet's own file), and the graph it builds for dlib's layers, residual sums of unequal sizes included, against a
numpy reading of dlib's arithmetic."""

from __future__ import annotations

import math

import numpy as np
import onnxruntime as ort
import pytest

from convert import dlib
from convert.dlib import Details, DlibFormatError, Node, Reader


def test_integers_floats_bools_and_strings_read_as_dlib_writes_them():
    # the face ResNet's file opens with: version 1, "loss_metric_2", margin 0.04, distance threshold 0.6
    reader = Reader(b"\x01\x01" b"\x01\x0dloss_metric_2" b"\x03\x0a\xd7\xa3\x81\x1c" b"\x03\x9a\x99\x99\x81\x18"
                    b"\x81\x05" b"\x02\x00\x01" b"1" b"0")
    assert reader.integer() == 1
    assert reader.string() == "loss_metric_2"
    assert np.float32(reader.real()) == np.float32(0.04) and np.float32(reader.real()) == np.float32(0.6)
    assert reader.integer() == -5 and reader.integer() == 256
    assert reader.boolean() is True and reader.boolean() is False
    assert reader.at == len(reader.data)


def test_special_floats_and_a_tensor():
    # mantissa 0, exponent 32000 (inf) and 32002 (NaN); a tensor: version 2, shape (1, 2, 1, 1), raw float32
    reader = Reader(b"\x01\x00\x02\x00\x7d" b"\x01\x00\x02\x02\x7d" b"\x01\x02" b"\x01\x01\x01\x02\x01\x01\x01\x01"
                    + np.array([1.5, -2.0], "<f4").tobytes())
    assert reader.real() == math.inf and math.isnan(reader.real())
    np.testing.assert_array_equal(reader.tensor(), np.array([1.5, -2.0], np.float32).reshape(1, 2, 1, 1))


@pytest.mark.parametrize("data, message", [
    (b"\x02\x01", "the file ends"),  # two bytes promised, one given
    (b"\x31\x01", "not an integer's control byte"),
    (b"2", "not a bool"),
])
def test_what_is_not_dlib_serialization_is_refused(data, message):
    reader = Reader(data)
    with pytest.raises(DlibFormatError, match=message):
        reader.boolean() if data == b"2" else reader.integer()


def test_a_layer_of_another_kind_than_the_type_says_is_refused():
    with pytest.raises(DlibFormatError, match="a con layer was expected, the file has 'relu_2'"):
        dlib.read_details(Reader(b"\x01\x06relu_2" b"0"), "con")


def _layer(kind: str, sub: Node, tag: int = 0, **values) -> Node:
    node = dlib.layer(kind, sub, tag)
    node.details = Details(kind, values)
    return node


def _conv(x: np.ndarray, weights: np.ndarray, bias: np.ndarray, stride: int) -> np.ndarray:
    """Cross-correlation without padding, as dlib's con_ with stride != 1 (NCHW)."""
    out_rows = 1 + (x.shape[2] - weights.shape[2]) // stride
    out_cols = 1 + (x.shape[3] - weights.shape[3]) // stride
    out = np.zeros((x.shape[0], weights.shape[0], out_rows, out_cols), np.float64)
    for r in range(out_rows):
        for c in range(out_cols):
            patch = x[:, :, r * stride:r * stride + weights.shape[2], c * stride:c * stride + weights.shape[3]]
            out[:, :, r, c] = np.einsum("nkij,fkij->nf", patch, weights) + bias
    return out


def test_a_strided_residual_with_a_pooled_shortcut_of_other_sizes_sums_as_dlib_does():
    """add_prev2<avg_pool<2,2,2,2,skip1<tag2<relu<affine<con<4,3,3,2,2,tag1<input 6x6>>>>>>>>, then an fc: the block
    gives 4 channels of 2x2, the pooled shortcut 3 channels of 3x3; dlib's sum is 4x3x3, each side zero where it has
    no values."""
    rng = np.random.default_rng(3)
    means = (120.0, 110.0, 100.0)
    weights, bias = rng.normal(size=(4, 3, 3, 3)).astype(np.float32), rng.normal(size=4).astype(np.float32)
    scale, shift = rng.uniform(0.5, 2, 4).astype(np.float32), rng.normal(size=4).astype(np.float32)
    fc = rng.normal(size=(36, 5)).astype(np.float32)
    network = Node("input", "input_rgb_image")
    network.details = Details("input_rgb_image", {"means": means, "size": (6, 6)})
    block = _layer("con", dlib.tag(1, network), weights=weights, bias=bias, strides=(2, 2), pads=(0, 0))
    block = _layer("relu", _layer("affine", block, scale=scale, shift=shift, conv_mode=True, disabled=False),
                   disabled=False)
    pooled = _layer("avg_pool", dlib.skip(1, dlib.tag(2, block)), window=(2, 2), strides=(2, 2), pads=(0, 0))
    summed = _layer("add_prev", pooled, tag=2)
    network = Node("loss", "loss_metric", _layer("fc", summed, weights=fc, bias=None))

    model = dlib.to_onnx(network)
    pixels = rng.integers(0, 256, (2, 6, 6, 3))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (actual,) = session.run(None, {"input": (pixels / 256).astype(np.float32)})

    x = ((pixels - np.array(means)) / 256).transpose(0, 3, 1, 2)
    convolved = _conv(x, weights.astype(np.float64), bias, 2)
    block_out = np.maximum(convolved * scale[None, :, None, None] + shift[None, :, None, None], 0)
    shortcut = x.reshape(2, 3, 3, 2, 3, 2).mean(axis=(3, 5))
    total = np.zeros((2, 4, 3, 3))
    total[:, :3] += shortcut
    total[:, :, :2, :2] += block_out
    expected = total.reshape(2, -1) @ fc
    assert actual.shape == (2, 5)
    np.testing.assert_allclose(actual, expected, atol=1e-4, rtol=1e-4)


def test_the_face_resnet_type_is_dlibs():
    """29 convolutions (the stem and two per residual block: 3 + 4 + 3 + 3 + 1 blocks), five of them strided,
    then the average over everything and the 128-d fc."""
    kinds, node = [], dlib.face_recognition_resnet()
    while node is not None:
        kinds.append(node.kind or node.wrapper)
        node = node.sub
    assert kinds[:3] == ["loss_metric", "fc", "avg_pool"] and kinds[-2:] == ["con", "input_rgb_image"]
    assert kinds.count("con") == 29 and kinds.count("add_prev") == 14 and kinds.count("skip") == 4
