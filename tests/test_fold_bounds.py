"""``fold_integer_constants`` runs in the driver (saving a bug case), so it must be bounded by size
before it starts: adversarial models (a huge constant pooled with a huge kernel, a giant Pad, tensors
grown by ConstantOfShape/Tile/Expand, a deep chain) are folded without evaluating their float part or
anything large. The evaluator is spied on: the assertions count what it was asked to compute."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import higen.onnx_fold as fold
from conftest import float_input, make_model


@pytest.fixture
def evaluated(monkeypatch) -> list[str]:
    """The op types the reference evaluator is built for, in order."""
    seen: list[str] = []
    real = fold.ReferenceEvaluator

    def spy(node, *args, **kwargs):
        seen.append(node.op_type)
        return real(node, *args, **kwargs)

    monkeypatch.setattr(fold, "ReferenceEvaluator", spy)
    return seen


def constant(name: str, value: np.ndarray) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(value))


def test_huge_constant_pooled_with_a_huge_kernel_is_never_evaluated(evaluated):
    big = np.ones((1, 1, 1024, 1024), np.float32)  # 1 M elements: ONNX's Python pooling would take minutes
    small = np.ones((1, 1, 64, 64), np.float32)  # small enough to read, but pooling is not a shape op
    nodes = [constant("big", big), constant("small", small),
             helper.make_node("AveragePool", ["big"], ["pooled"], kernel_shape=[1000, 1000]),
             helper.make_node("AveragePool", ["small"], ["pooled_small"], kernel_shape=[64, 64], pads=[60, 60, 60, 60]),
             helper.make_node("Cast", ["pooled"], ["as_int"], to=TensorProto.INT64),
             helper.make_node("Cast", ["pooled_small"], ["small_int"], to=TensorProto.INT64),
             helper.make_node("Mul", ["x", "x"], ["y"])]
    model = make_model(nodes, [float_input("x", [2])], [float_input("y", [2])])
    folded = fold.fold_integer_constants(model)
    assert "AveragePool" not in evaluated and evaluated.count("Constant") == 1  # only the small one is read
    assert [n.op_type for n in folded.graph.node] == [n.op_type for n in model.graph.node]


def test_giant_pad_and_growing_ops_are_not_evaluated(evaluated):
    nodes = [constant("data", np.arange(4, dtype=np.int64).reshape(2, 2)),
             constant("pads", np.array([0, 0, 100_000, 100_000], np.int64)),
             helper.make_node("Pad", ["data", "pads"], ["padded"]),
             constant("huge_shape", np.array([1 << 20, 1 << 20], np.int64)),
             helper.make_node("ConstantOfShape", ["huge_shape"], ["filled"]),
             helper.make_node("Tile", ["data", "huge_shape"], ["tiled"]),
             constant("expand_to", np.array([1 << 20, 2, 2], np.int64)),
             helper.make_node("Expand", ["data", "expand_to"], ["expanded"]),
             constant("start", np.array(0, np.int64)), constant("limit", np.array(1 << 40, np.int64)),
             constant("one", np.array(1, np.int64)),
             helper.make_node("Range", ["start", "limit", "one"], ["range"]),
             helper.make_node("Mul", ["x", "x"], ["y"])]
    model = make_model(nodes, [float_input("x", [2])], [float_input("y", [2])])
    fold.fold_integer_constants(model)
    assert not {"Pad", "ConstantOfShape", "Tile", "Expand", "Range"} & set(evaluated)
    assert evaluated.count("Constant") == 7


def test_deep_chains_are_bounded_by_node_counts(evaluated):
    def chain(length: int) -> onnx.ModelProto:
        nodes = [constant("c0", np.array([1], np.int64))]
        nodes += [helper.make_node("Add", [f"c{i}", f"c{i}"], [f"c{i + 1}"]) for i in range(length)]
        nodes += [helper.make_node("Cast", [f"c{length}"], ["shape"], to=TensorProto.INT64),
                  helper.make_node("Reshape", ["x", "shape"], ["y"])]
        return helper.make_model(helper.make_graph(nodes, "chain", [float_input("x", [1])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]),
                                 opset_imports=[helper.make_opsetid("", 14)], ir_version=8)

    fold.fold_integer_constants(chain(fold.MAX_EVALUATED_NODES * 2))
    assert len(evaluated) == fold.MAX_EVALUATED_NODES  # stops after the budget, keeps the graph valid
    evaluated.clear()
    untouched = chain(fold.MAX_MODEL_NODES + 1)
    assert fold.fold_integer_constants(untouched) == untouched and evaluated == []


def test_shape_computation_next_to_a_large_float_constant_still_folds(evaluated):
    """What TVM needs (an integer shape computed from small constants) folds; the float part is
    left alone and never computed."""
    nodes = [constant("big", np.ones((512, 512), np.float32)),
             helper.make_node("ReduceSum", ["big"], ["total"], keepdims=0),
             constant("c", np.array([0.0, 1.0], np.float32)),
             helper.make_node("Cast", ["c"], ["c_int"], to=TensorProto.INT64),
             constant("zeros", np.array([0, 0], np.int64)),
             helper.make_node("Concat", ["zeros", "c_int"], ["pads"], axis=0),
             helper.make_node("Pad", ["x", "pads"], ["y"])]
    model = make_model(nodes, [float_input("x", [2, 3])], [float_input("y", [2, 4])])
    folded = fold.fold_integer_constants(model)
    assert [n.op_type for n in folded.graph.node] == ["Constant", "ReduceSum", "Pad"]
    pads = {i.name: numpy_helper.to_array(i) for i in folded.graph.initializer}["pads"]
    assert pads.tolist() == [0, 0, 0, 1]
    assert "ReduceSum" not in evaluated
