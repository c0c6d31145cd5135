"""Per-operator event counts on real runtimes, and the report built from them."""

from __future__ import annotations

import csv
import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from higen.backends.base import Target
from higen.backends.pool import BackendPool
from higen.cli.numerics import command_numerics
from higen.errors import UserError
from higen.numerics.report import markdown
from higen.numerics.stats import NumericsRecorder, attribute_error, node_events, record_from_values, record_test
from higen.numerics.summary import aggregate, read_jsonl
from higen.tensors import save_tensors

from conftest import make_model

TARGETS = ("ort:cpu:O3", "ov:CPU")
F = TensorProto.FLOAT


def log_div_model() -> onnx.ModelProto:
    """l = Log(x); q = Div(y, x); p = Mul(l, q); out = Exp(p) + y * 1e-30 * 1e-30 (an underflow)."""
    nodes = [helper.make_node("Log", ["x"], ["l"], name="log"), helper.make_node("Div", ["y", "x"], ["q"], name="div"),
             helper.make_node("Mul", ["l", "q"], ["p"], name="mul"), helper.make_node("Exp", ["p"], ["e"], name="exp"),
             helper.make_node("Mul", ["y", "tiny"], ["t1"], name="tiny1"),
             helper.make_node("Mul", ["t1", "tiny"], ["t2"], name="tiny2"),
             helper.make_node("Add", ["e", "t2"], ["out"], name="add")]
    return make_model(nodes, [helper.make_tensor_value_info(n, F, [4]) for n in ("x", "y")],
                      [helper.make_tensor_value_info("out", F, [4])],
                      [numpy_helper.from_array(np.array(1e-30, np.float32), "tiny")])


#: x holds zeros: Log(0) = -inf (a pole) twice; Div(y, 0) = inf (pole) and 0/0 = NaN.
INPUTS = {"x": np.array([0, 0, 2, 4], np.float32), "y": np.array([0, 3, 1, 1], np.float32)}


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    with BackendPool([Target.parse(t) for t in TARGETS], tmp_path_factory.mktemp("num-logs"), 60) as pool:
        yield pool


def run_dir_with_records(pool, path, tests: int = 2):
    """A run directory whose numerics.jsonl the hook wrote for ``tests`` runs of the Log/Div model."""
    path.mkdir()
    onnx.save(log_div_model(), path / "model.onnx")
    save_tensors(path / "inputs.npz", INPUTS)

    class Test:  # what the engine hands the hook: a TestCase's files and config
        model_path, inputs_path, directory = path / "model.onnx", path / "inputs.npz", path
        config = type("Config", (), {"seed": 5, "input_strategy": "edge"})

    recorder = NumericsRecorder(path)
    for index in range(tests):
        outcomes = pool.run(Test.model_path, Test.inputs_path, path)
        recorder.record(pool, index, Test, outcomes)
    recorder.close()
    return path


def test_counts_match_the_hand_built_model(pool, tmp_path):
    run = run_dir_with_records(pool, tmp_path / "run")
    records = read_jsonl(run / "numerics.jsonl")
    assert [r["test"] for r in records] == [0, 1] and records[0]["inputs"] == "edge"
    ops = records[0]["ops"]
    for target in TARGETS:
        assert ops["Log"][target] == {"runs": 1, "inf": 1, "any": 1}  # pole, not overflow
        assert ops["Div"][target] == {"runs": 1, "nan": 1, "inf": 1, "any": 1}
        assert ops["Mul"][target] == {"runs": 3, "underflow": 1, "any": 1}  # 3e-30 * 1e-30 -> 0; -inf*nan is not new
        assert ops["Exp"][target] == {"runs": 1}  # exp(-inf) = 0 from a non-finite operand: no event
        assert ops["Add"][target] == {"runs": 1}
    assert records[0]["disagreements"] == [] and records[0]["errors"] == {}

    assert command_numerics([str(run), "--out", str(tmp_path / "report")]) == 0
    rows = list(csv.DictReader(open(tmp_path / "report" / "numerics.csv")))
    by_key = {(r["op"], r["target"]): r for r in rows}
    assert {k for k in by_key} == {(op, t) for op in ("Log", "Div", "Mul", "Exp", "Add") for t in TARGETS}
    log, div = by_key[("Log", "ov:CPU")], by_key[("Div", "ort:cpu:O3")]
    assert (log["runs"], log["inf"], log["overflow"], log["nan"]) == ("2", "2", "0", "0")
    assert (div["runs"], div["nan"], div["inf"], div["inf_rate"]) == ("2", "2", "2", "1.0000")
    markdown = (tmp_path / "report" / "numerics.md").read_text()
    assert "| Div | 4 | 4 | 4 | 0 | 0 | 0 | 100.0% |" in markdown  # 2 tests x 2 targets
    assert "numerics.jsonl" in markdown and "![target x operator](heatmap.png)" in markdown
    for image in ("by_operator.png", "heatmap.png"):
        assert (tmp_path / "report" / image).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_targets_disagree_where_openvino_computes_float64_in_float32(pool, tmp_path):
    """1e-30 * 1e-30 is 1e-60 in float64 (ORT) but 0 in OpenVINO's float32 arithmetic: an underflow
    on one target only, reported as a disagreement with OpenVINO the odd one out."""
    double = TensorProto.DOUBLE
    model = make_model([helper.make_node("Mul", ["x", "x"], ["y"], name="square")],
                       [helper.make_tensor_value_info("x", double, [2])], [helper.make_tensor_value_info("y", double, [2])])
    onnx.save(model, tmp_path / "model.onnx")
    save_tensors(tmp_path / "inputs.npz", {"x": np.array([1e-30, 2.0])})
    outcomes = pool.run(tmp_path / "model.onnx", tmp_path / "inputs.npz", tmp_path)
    record = record_test(pool, tmp_path / "model.onnx", tmp_path / "inputs.npz", tmp_path / "n", outcomes)
    assert record["ops"]["Mul"] == {"ort:cpu:O3": {"runs": 1}, "ov:CPU": {"runs": 1, "underflow": 1, "any": 1}}
    assert record["disagreements"] == [{"node": "square", "op": "Mul", "dtype": "float64", "event": "underflow",
                                        "with": ["ov:CPU"], "without": ["ort:cpu:O3"]}]
    summary = aggregate([record], "test")
    assert summary.alone[("Mul", "underflow", "ov:CPU", "with")] == 1
    assert "| Mul | underflow | 1 | float64 1 | `ov:CPU` had it 1x |" in markdown(summary, [], {})


def test_node_events_tell_poles_from_overflow_and_underflow_from_arithmetic():
    f32 = np.float32
    assert node_events("Exp", [np.array([100], f32)], np.array([np.inf], f32)) == {"inf", "overflow"}
    assert node_events("Div", [np.array([1, 0], f32), np.array([0, 0], f32)],
                       np.array([np.inf, np.nan], f32)) == {"inf", "nan"}
    assert node_events("Mul", [np.array([1e30], f32), np.array([1e30], f32)], np.array([np.inf], f32)) == {"inf", "overflow"}
    assert node_events("Sub", [np.array([3], f32), np.array([3], f32)], np.array([0], f32)) == set()
    assert node_events("Mul", [np.array([1e-30], f32), np.array([1e-30], f32)], np.array([0], f32)) == {"underflow"}
    assert node_events("Relu", [np.array([np.nan], f32)], np.array([np.nan], f32)) == set()  # passed through
    # broadcasting: the zero operand sits in another element than the overflow
    assert node_events("Div", [np.array([[1e30], [1]], f32), np.array([1e-30, 0], f32)],
                       np.array([[np.inf, np.inf], [1e30, np.inf]], f32)) == {"inf", "overflow"}
    # not elementwise: operands count as a whole (a matmul cannot hit a pole)
    assert node_events("MatMul", [np.ones((2, 2), f32) * 1e30, np.ones((2, 2), f32)],
                       np.full((2, 2), np.inf, f32)) == {"inf", "overflow"}


def test_errors_are_attributed_to_the_operator_the_message_names():
    model = log_div_model()
    assert attribute_error(model, "Non-zero status code returned while running Div node. Name:'div'") == "Div"
    assert attribute_error(model, "bad thing in node mul") == "Mul"
    assert attribute_error(model, "out of memory") == "(unattributed)"
    record = record_from_values(model, INPUTS, {}, {"tvm:llvm:O3": "TVMError: cannot lower Exp"})
    assert record["errors"] == {"tvm:llvm:O3": "Exp"}
    assert record["ops"]["Exp"]["tvm:llvm:O3"] == {"error": 1}


def test_report_from_saved_bug_cases_when_the_run_recorded_nothing(pool, tmp_path):
    """No numerics.jsonl: the saved bug cases are re-run with their intermediates exposed."""
    case = tmp_path / "run" / "bug_cases" / "mismatch-1"
    (case / "outputs").mkdir(parents=True)
    onnx.save(log_div_model(), case / "model.onnx")
    save_tensors(case / "inputs.npz", INPUTS)
    save_tensors(case / "outputs" / "torch_cpu.npz", {"out": np.zeros(4, np.float32)})
    meta = {"format_version": 2, "verdict": "error", "signature": "s", "findings": [], "targets": list(TARGETS),
            "outcomes": {"ort:cpu:O3": {"status": "ok"},
                         "ov:CPU": {"status": "error", "error_type": "RuntimeError", "message": "Exp failed"}}}
    (case / "meta.json").write_text(json.dumps(meta))
    assert command_numerics([str(tmp_path / "run"), "--out", str(tmp_path / "out")]) == 0
    rows = {(r["op"], r["target"]): r for r in csv.DictReader(open(tmp_path / "out" / "numerics.csv"))}
    assert rows[("Div", "ort:cpu:O3")]["nan"] == "1" and ("Div", "ov:CPU") not in rows
    assert rows[("Exp", "ov:CPU")]["error"] == "1"
    assert "re-run of 1 saved bug cases" in (tmp_path / "out" / "numerics.md").read_text()


def test_user_mistakes_are_one_line(tmp_path):
    with pytest.raises(UserError, match="not a folder"):
        command_numerics([str(tmp_path / "nope")])
    with pytest.raises(UserError, match="no numerics.jsonl and no bug case"):
        command_numerics([str(tmp_path)])
