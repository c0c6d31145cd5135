"""The graph toolkit (higen/graph.py) on one crafted model, and the atomic writers (higen/files.py)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from higen.files import replacing, write_json_atomic
from higen.graph import (
    ancestor_ops,
    ancestors,
    cone,
    constant_names,
    constant_values,
    data_dependent,
    expose_intermediates,
    prefix_model,
    producer_nodes,
    producers,
    submodel,
    upstream_tensors,
)

from conftest import float_input, make_model


def side_branch_model() -> onnx.ModelProto:
    """y = Relu(x * Exp(w)) reshaped by Shape(x); z = Neg(x) beside it; Exp(w) is a float constant
    subgraph, Shape(x) and Add(Shape, one) integer shape arithmetic. The Relu is unnamed."""
    nodes = [helper.make_node("Exp", ["w"], ["ew"], name="exp_w"),
             helper.make_node("Mul", ["x", "ew"], ["m"], name="mul"),
             helper.make_node("Relu", ["m"], ["r"]),
             helper.make_node("Shape", ["x"], ["s"], name="shape"),
             helper.make_node("Constant", [], ["zero"], name="zero",
                              value=numpy_helper.from_array(np.array([0], np.int64))),
             helper.make_node("Add", ["s", "zero"], ["s2"], name="shape_plus"),
             helper.make_node("Reshape", ["r", "s2"], ["y"], name="reshape"),
             helper.make_node("Neg", ["x"], ["z"], name="neg")]
    return make_model(nodes, [float_input("x", [2, 3])], [float_input("y", [2, 3]), float_input("z", [2, 3])],
                      [numpy_helper.from_array(np.full((2, 3), 0.5, np.float32), "w")])


def test_producers_and_cones_follow_the_data_backwards():
    model = side_branch_model()
    assert producers(model)["r"] == "Relu" and "x" not in producers(model) and "w" not in producers(model)
    assert producer_nodes(model)["s2"].name == "shape_plus"
    assert cone(model, ["m"]) == [0, 1]
    assert cone(model, ["y"]) == [0, 1, 2, 3, 4, 5, 6]  # everything but the Neg beside it
    assert cone(model, ["z", "ew"]) == [0, 7]
    assert ancestors(model, "r") == {"exp_w", "mul", "Relu_2"}  # unnamed nodes: OpType_index
    assert ancestors(model, None) == ancestors(model, "unknown") == {
        "exp_w", "mul", "Relu_2", "shape", "zero", "shape_plus", "reshape", "neg"}
    assert ancestor_ops(model, "z") == {"Neg"}
    assert upstream_tensors(model, "r") == {"r", "m", "x", "ew", "w"}


def test_constants_and_data_dependence():
    model = side_branch_model()
    assert data_dependent(model) == {"x", "m", "r", "y", "z"}  # Shape reads the shape only, not values
    assert constant_names(model) == {"w", "ew", "zero"}  # Shape(x) depends on an input: not constant
    values = constant_values(model)
    assert set(values) == {"w", "zero"}  # written in the model; Exp(w) is not evaluated here
    np.testing.assert_array_equal(values["zero"], [0])
    overridable = onnx.ModelProto()
    overridable.CopyFrom(model)
    overridable.graph.input.append(float_input("w", [2, 3]))  # an initializer that is a graph input too
    assert "w" not in constant_names(overridable) and "ew" not in constant_names(overridable)


def test_exposed_intermediates_and_prefixes_compute_the_same_values():
    model = side_branch_model()
    instrumented, exposed = expose_intermediates(model)
    assert exposed == ["ew", "m", "r"]  # data-dependent and float constant results; shape arithmetic stays inside
    x = np.arange(6, dtype=np.float32).reshape(2, 3) - 2
    full = dict(zip([o.name for o in instrumented.graph.output], ReferenceEvaluator(instrumented).run(None, {"x": x})))
    np.testing.assert_allclose(full["r"], np.maximum(x * np.exp(0.5), 0), rtol=1e-6)
    prefix = prefix_model(model, "r")
    onnx.checker.check_model(prefix, full_check=True)
    assert [n.op_type for n in prefix.graph.node] == ["Exp", "Mul", "Relu"]
    assert [v.name for v in prefix.graph.initializer] == ["w"] and [v.name for v in prefix.graph.input] == ["x"]
    np.testing.assert_array_equal(ReferenceEvaluator(prefix).run(None, {"x": x})[0], full["r"])
    part = submodel(model, [model.graph.node[7]], [float_input("x", [2, 3])], [float_input("z", [2, 3])], [], "part")
    assert part.graph.name == "part" and part.opset_import == model.opset_import and part.ir_version == model.ir_version
    np.testing.assert_array_equal(ReferenceEvaluator(part).run(None, {"x": x})[0], -x)
    with pytest.raises(KeyError):
        prefix_model(model, "no-such-tensor")


def test_atomic_writes_keep_the_old_file_on_failure(tmp_path):
    path = tmp_path / "index.json"
    write_json_atomic(path, {"b": 1, "a": {2}})  # a set is written as its str
    text = path.read_text()
    assert json.loads(text) == {"a": "{2}", "b": 1} and text.index('"a"') < text.index('"b"')  # keys sorted
    with pytest.raises(RuntimeError):
        with replacing(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed while writing")
    assert json.loads(path.read_text())["b"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["index.json"]  # no temporary file left behind
