"""``higen triage``: ranking from meta.json across the sessions of a run root, known semantic
differences and noise marked, JSON and Markdown output, filters, and folders that are not readable
cases skipped with one warning line each. The cases come from real runs (ONNX Runtime, OpenVINO;
``fault:garbage`` only injects wrong numbers)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper

from conftest import make_model
from higen.bugs.analysis import analyze_mismatch
from higen.bugs.triage import score
from higen.main import main
from higen.oracle import Tolerance
from higen.run_dir import create_run_dir
from test_bugs_common import (RELU_CLIP_PAIRS, RELU_CLIP_TARGETS, relu_clip_chain, saturating_add_chain,
                              save_case)


def int64_add():
    """int64 Add beyond int32's range: OpenVINO CPU computes it in int32."""
    value = helper.make_tensor_value_info
    model = make_model([helper.make_node("Add", ["a", "b"], ["y"])],
                       [value("a", TensorProto.INT64, [4]), value("b", TensorProto.INT64, [4])],
                       [value("y", TensorProto.INT64, [4])])
    return model, {"a": np.array([1, 2, 2**40, 3], np.int64), "b": np.array([1, 2**33, 5, 7], np.int64)}


def float_relu():
    value = helper.make_tensor_value_info
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], [value("x", TensorProto.FLOAT, [2, 3])],
                       [value("y", TensorProto.FLOAT, [2, 3])])
    return model, {"x": np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3)}


@pytest.fixture(scope="module")
def run_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    first, second = create_run_dir(root), create_run_dir(root)
    save_case(first, *relu_clip_chain(), RELU_CLIP_TARGETS, RELU_CLIP_PAIRS)
    save_case(first, *saturating_add_chain(), ["ov:CPU"])
    save_case(second, *int64_add(), ["ov:CPU"])
    save_case(second, *float_relu(), ["fault:garbage"])
    staging = first / "bug_cases" / ".tmp-crash-0123456789-4242"  # a store killed while saving
    staging.mkdir()
    (staging / "model.onnx").write_bytes(b"")
    (second / "bug_cases" / "broken").mkdir()
    (second / "bug_cases" / "broken" / "meta.json").write_text('{"format_version": 2, "verdict": ')
    (second / "bug_cases" / "empty").mkdir()
    return root


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")  # rich tables neither wrapped nor truncated


def triage(capsys, *args) -> tuple[int, str, list[str]]:
    status = main(["triage", *map(str, args)])
    captured = capsys.readouterr()
    return status, captured.out, [line for line in captured.err.splitlines() if line.strip()]


def test_ranking_marks_and_outputs(run_root, tmp_path, capsys):
    status, out, warnings = triage(capsys, run_root, "--json", tmp_path / "t.json", "--markdown", tmp_path / "t.md")
    assert status == 0
    assert len(warnings) == 3 and all(line.startswith("warning: skipping") for line in warnings)
    assert {"/.tmp-crash-0123456789-4242", "/broken/meta.json", "/empty"} == {
        next(part for part in ("/.tmp-crash-0123456789-4242", "/broken/meta.json", "/empty") if part in line)
        for line in warnings}
    ranked = json.loads((tmp_path / "t.json").read_text())["root_causes"]
    verdicts = [(e["verdict"], e["targets"][-1]) for e in ranked]
    assert verdicts == [("error", "ort:cpu:O3"), ("mismatch", "fault:garbage"), ("mismatch", "ov:CPU"),
                        ("mismatch", "ov:CPU")]
    assert "FuseReluClip" in ranked[0]["signatures"][0] and ranked[0]["score"] == 90
    assert [e["noise"] for e in ranked] == [False, False, True, True]  # known differences: noise, last
    garbage = ranked[1]
    assert garbage["analysis"]["error_eps"] > 1e6 and garbage["tags"] == [] and garbage["score"] > 60
    assert {tuple(t for t in e["tags"] if not t.startswith("upstream:")) for e in ranked[2:]} == {
        ("known:ov-uint8-saturation", "noise:ub:integer-overflow"), ("known:narrowed-int64",)}
    assert all(any(t.startswith("upstream:ov-") for t in e["tags"]) for e in ranked[2:])  # reported already
    assert all(e["score"] <= 5 for e in ranked[2:])
    assert all(e["count"] == 1 and len(e["cases"]) == 1 for e in ranked)
    assert "compile Fail: onnxruntime::FuseReluClip::Apply Unexpected data type for Clip 'min' input of N" in out
    markdown = (tmp_path / "t.md").read_text().splitlines()
    assert markdown[2].startswith("2 bugs (credible root causes), 2 root causes of noise")
    assert markdown[4].startswith("| # | score | root cause") and len(markdown) == 6 + len(ranked)


def test_filters_and_single_session(run_root, tmp_path, capsys):
    triage(capsys, run_root, "--only-crashes", "--json", tmp_path / "c.json")
    assert [e["verdict"] for e in json.loads((tmp_path / "c.json").read_text())["root_causes"]] == ["error"]
    triage(capsys, run_root, "--exclude-ops", "Clip,Cast", "--json", tmp_path / "x.json")
    kept = json.loads((tmp_path / "x.json").read_text())["root_causes"]
    assert [e["targets"][-1] for e in kept] == ["fault:garbage", "ov:CPU"]  # int64 Add is left
    triage(capsys, run_root, "--top", "1", "--json", tmp_path / "1.json")
    assert len(json.loads((tmp_path / "1.json").read_text())["root_causes"]) == 1
    status, _, warnings = triage(capsys, run_root / "2" / "bug_cases", "--json", tmp_path / "s.json")
    assert status == 0 and len(warnings) == 2
    assert len(json.loads((tmp_path / "s.json").read_text())["root_causes"]) == 2


def test_bad_arguments_are_one_line(tmp_path, capsys):
    for args in ([tmp_path / "absent"], [tmp_path, "--top", "0"]):
        status, _, err = triage(capsys, *args)
        assert status == 2 and len(err) == 1 and err[0].startswith("higen: error:")


def test_float16_rounding_flip_is_noise():
    """Integer-valued float16 outputs off by exactly 1 after Floor: a rounding-boundary flip."""
    value = helper.make_tensor_value_info
    model = make_model([helper.make_node("Exp", ["x"], ["e"]), helper.make_node("Floor", ["e"], ["y"])],
                       [value("x", TensorProto.FLOAT16, [4])], [value("y", TensorProto.FLOAT16, [4])])
    expected = np.array([1, 2, 7, 20], np.float16)
    flipped = np.array([1, 2, 8, 20], np.float16)
    finding = {"verdict": "mismatch", "targets": ["torch:cpu", "ort:cpu:O3"], "output": "y",
               "signature": "mismatch|torch:cpu|ort:cpu:O3|Floor|float16"}
    analysis = analyze_mismatch(finding, {"torch:cpu": {"y": expected}, "ort:cpu:O3": {"y": flipped}}, model,
                                {"float16": Tolerance(0.05, 0.05)}, {})
    assert analysis["noise"] == "rounding-boundary" and analysis["producer"] == {"op": "Floor", "inputs": ["Exp"]}
    finding["analysis"] = analysis
    value_score, tags = score(finding, {})
    assert value_score <= 15 and tags == ["noise:rounding-boundary"]
    far = np.array([1, 2, 70, 20], np.float16)  # a real error in the same place is not noise
    analysis = analyze_mismatch(finding, {"torch:cpu": {"y": expected}, "ort:cpu:O3": {"y": far}}, model, {}, {})
    assert "noise" not in analysis and analysis["both_finite"]


@pytest.mark.parametrize("dtype, op", [(TensorProto.UINT8, "Add"), (TensorProto.INT8, "Mul")])
def test_saturation_behind_later_ops_is_recognised(dtype, op, tmp_path):
    """OpenVINO CPU saturates 8-bit arithmetic; a ReduceMin after it hides the bounds 0/255 (or
    -128/127) from the output, so the store re-evaluates the model with saturating arithmetic."""
    value = helper.make_tensor_value_info
    model = make_model([helper.make_node(op, ["a", "b"], ["s"]),
                        helper.make_node("ReduceMin", ["s"], ["y"], axes=[1], keepdims=0)],
                       [value("a", dtype, [3, 4]), value("b", dtype, [3, 4])], [value("y", dtype, [3])])
    numpy_type = helper.tensor_dtype_to_np_dtype(dtype)
    low, high, safe = (200, 250, 100) if op == "Add" else (60, 100, 10)  # every element overflows ...
    rng = np.random.default_rng(2)
    inputs = {name: rng.integers(low, high, (3, 4)).astype(numpy_type) for name in ("a", "b")}
    inputs["a"][:, 0] = inputs["b"][:, 0] = safe  # ... but one per row, OpenVINO's minimum (200 or 100)
    case = save_case(tmp_path, model, inputs, ["ov:CPU"])
    (finding,) = json.loads((case / "meta.json").read_text())["findings"]
    ov = np.load(case / "outputs" / "ov_CPU.npz", allow_pickle=False)["y"]
    bounds = np.iinfo(numpy_type)
    assert not np.isin(ov, (bounds.min, bounds.max)).all()  # the direct check cannot see it
    assert finding["analysis"]["known"] == f"ov-{np.dtype(numpy_type).name}-saturation"
