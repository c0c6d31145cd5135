"""The one execute-and-judge path (higen.execute) with real ONNX Runtime workers: the outcomes a
``revise`` hook returns are judged against the reference as it stands after the hook (the engine's
error-maximizing inputs rewrite it), a case's model gives the producing op types, and a reduction
computes the values onnx.reference cannot with its own ``ort:cpu:O0`` worker."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from higen.backends.base import REFERENCE, Target
from higen.backends.pool import BackendPool
from higen.bugs.case import BugCase
from higen.bugs.reduce import STAND_IN, evaluate_all
from higen.execute import execute
from higen.generation.config import GenConfig
from higen.tensors import save_tensors
from higen.testcase import TestCase as GeneratedTest

O0, O3 = "ort:cpu:O0", "ort:cpu:O3"
X = np.linspace(-2, 2, 6, dtype=np.float32).reshape(2, 3)


def relu_test(directory) -> GeneratedTest:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="relu")], "relu", [x], [y])
    test = GeneratedTest(GenConfig(), directory, producers={"y": "Relu"})
    directory.mkdir()
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)]), test.model_path)
    save_tensors(test.inputs_path, {"x": X})
    return test


def test_revised_outcomes_are_judged_against_the_reference_written_by_the_hook(tmp_path):
    test = relu_test(tmp_path / "test")
    save_tensors(test.reference_path, {"y": -np.ones((2, 3), np.float32)})  # wrong until the hook fixes it
    seen = []

    def revise(outcomes):
        seen.append(dict(outcomes))
        save_tensors(test.reference_path, {"y": np.maximum(X, 0)})
        return outcomes

    with BackendPool([Target.parse(O0)], tmp_path / "logs", 60.0) as pool:
        execution = execute(pool, test, test.directory, pairs=[(REFERENCE, O0)], reference=test.reference_path,
                            revise=revise)
        wrong = execute(pool, test, tmp_path / "again", pairs=[(REFERENCE, O0)],
                        reference={"y": -np.ones((2, 3), np.float32)})
    assert [list(o) for o in seen] == [[O0]] and execution.outcomes[O0].ok
    assert execution.judgement.findings == [] and set(execution.timings) == {"exec_s", "judge_s"}
    np.testing.assert_array_equal(execution.outputs[REFERENCE]["y"], np.maximum(X, 0))
    assert wrong.signatures == [f"mismatch|{REFERENCE}|{O0}|Relu|float32"]


def test_a_case_is_judged_with_the_op_types_of_its_model(tmp_path):
    test = relu_test(tmp_path / "case")
    case = BugCase(test.directory, {"signature": "", "findings": []})
    with BackendPool([Target.parse(O0)], tmp_path / "logs", 60.0) as pool:
        execution = execute(pool, case, tmp_path / "work", [O0], pairs=[(REFERENCE, O0)],
                            reference={"y": np.zeros((2, 3), np.float32)})
    assert execution.signatures == [f"mismatch|{REFERENCE}|{O0}|Relu|float32"]
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == ["ort_cpu_O0.npz"]  # the case is not written


def gelu_model() -> onnx.ModelProto:
    """A model onnx.reference cannot evaluate (an ONNX Runtime contrib op) but ORT runs."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="r"),
             helper.make_node("Gelu", ["a"], ["b"], name="g", domain="com.microsoft"),
             helper.make_node("Add", ["b", "x"], ["y"], name="add")]
    return helper.make_model(helper.make_graph(nodes, "g", [x], [y]), opset_imports=[
        helper.make_opsetid("", 14), helper.make_opsetid("com.microsoft", 1)])


def test_reduction_values_come_from_its_own_stand_in_worker_when_it_has_one(tmp_path):
    model = gelu_model()
    with BackendPool([Target.parse(O0), Target.parse(O3)], tmp_path / "logs", 60.0) as pool:
        shared, source = evaluate_all(model, {"x": X}, tmp_path / "shared", pool)
        assert source == STAND_IN and pool.workers[O0].served == 1 and pool.workers[O3].served == 0
    assert not (tmp_path / "shared" / "logs").exists()  # no second worker was started
    with BackendPool([Target.parse(O3)], tmp_path / "logs3", 60.0) as pool:  # the finding's targets lack O0
        own, source = evaluate_all(model, {"x": X}, tmp_path / "own", pool)
    assert source == STAND_IN and (tmp_path / "own" / "logs").is_dir()
    assert set(shared) == set(own) == {"x", "a", "y"}
    for name in shared:
        np.testing.assert_array_equal(shared[name], own[name])
    np.testing.assert_allclose(shared["a"], np.maximum(X, 0))
