"""`convert quantize`'s parity mode for embeddings (`quantize.embedding_verdict`) on vectors made to the point:
the least cosine to the float descriptor, and the verification accuracy on every pair, at most half a point lost."""

from __future__ import annotations

import numpy as np

from convert.quantize import Budget, embedding_verdict

THRESHOLD = 0.5


def people_and_vectors() -> tuple[list[str], np.ndarray]:
    """Three people of four faces each (14 % of the pairs same-person, as the identity set), each face near its
    person's direction; and two faces of no person (labelled-detection faces: no pair), 66 pairs in all."""
    rng = np.random.default_rng(7)
    centres = np.linalg.qr(rng.standard_normal((64, 3)))[0].T  # three orthogonal directions
    people = [p for p in "abc" for _ in range(4)] + ["", ""]
    rows = [centres["abc".index(p)] + 0.2 * rng.standard_normal(64) / 8 if p else rng.standard_normal(64)
            for p in people]
    return people, np.array(rows, np.float32)


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def test_the_same_vectors_pass_with_every_figure():
    people, vectors = people_and_vectors()
    figures, problems = embedding_verdict(vectors, vectors.copy(), people, THRESHOLD, Budget())
    assert problems == []
    assert figures["pairs"] == 66 and figures["decisions_changed"] == 0
    assert figures["verification_accuracy"] == {"float": 1.0, "int8": 1.0}
    assert figures["cosine_min"] > 0.99999 and figures["threshold"] == THRESHOLD


def test_one_decision_made_wrong_loses_more_than_half_a_point_and_is_refused():
    people, vectors = people_and_vectors()
    moved = vectors.copy()
    moved[0] = unit(vectors[0]) * 0.2 + unit(vectors[4]) * 0.98  # a's first face now looks like b: wrong pairs
    figures, problems = embedding_verdict(vectors, moved, people, THRESHOLD, Budget(embedding_cosine=-1.0))
    changed = figures["decisions_changed"]
    assert changed >= 1 and figures["verification_accuracy"]["int8"] == 1.0 - changed / 66
    assert len(problems) == 1 and problems[0].startswith(
        f"verification accuracy {1 - changed / 66:.1%} is {changed / 66 * 100:.1f} points below the float model's "
        f"100.0% ({changed} of 66 decisions changed; at most 0.5 points)")
    # a budget of more points takes it; the cosine rule still judges on its own
    assert embedding_verdict(vectors, moved, people, THRESHOLD, Budget(embedding_cosine=-1.0,
                                                                       verification_points=100))[1] == []
    _, problems = embedding_verdict(vectors, moved, people, THRESHOLD, Budget(verification_points=100))
    assert len(problems) == 1 and problems[0].startswith("cosine to the float descriptor ")


def test_a_small_move_of_every_vector_keeps_every_decision_and_passes():
    people, vectors = people_and_vectors()
    rng = np.random.default_rng(3)
    moved = unit(vectors) + 0.003 * rng.standard_normal(vectors.shape).astype(np.float32) / 8
    figures, problems = embedding_verdict(vectors, moved, people, THRESHOLD, Budget())
    assert problems == [] and figures["decisions_changed"] == 0 and 0.99 < figures["cosine_min"] < 1.0


def relu6_graph() -> bytes:
    """x -> Relu -> Min(6) -> Max(0) -> Mul(2) -> y (TensorFlow's ReLU6), beside a Min(1) that no Max follows
    and whose output is the graph's second output."""
    from onnx import TensorProto, helper, numpy_helper

    constants = [numpy_helper.from_array(np.array(value, np.float32).reshape(shape), name) for name, value, shape in
                 (("six", 6.0, (1, 1)), ("zero", 0.0, (1, 1)), ("two", 2.0, ()), ("one", 1.0, ()))]
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Min", ["r", "six"], ["low"]),
             helper.make_node("Max", ["low", "zero"], ["clipped"]), helper.make_node("Mul", ["clipped", "two"], ["y"]),
             helper.make_node("Min", ["x", "one"], ["z"])]
    graph = helper.make_graph(nodes, "relu6", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 3]) for n in ("y", "z")],
                              constants)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString()


def test_min_max_pairs_become_one_clip_with_the_same_answers():
    import onnx

    from convert.quantize import clip_pairs_as_clip, session

    before = relu6_graph()
    after, rewritten = clip_pairs_as_clip(before)
    model = onnx.load_from_string(after)
    onnx.checker.check_model(model)
    assert rewritten == 1 and [n.op_type for n in model.graph.node] == ["Relu", "Clip", "Mul", "Min"]
    assert {i.name for i in model.graph.initializer} >= {"two", "one"} and "six" not in {
        i.name for i in model.graph.initializer}
    x = np.array([[-3.0, 0.5, 2.0], [5.9, 6.1, 40.0]], np.float32)
    for got, want in zip(session(after).run(None, {"x": x}), session(before).run(None, {"x": x})):
        np.testing.assert_array_equal(got, want)
