"""``higen report`` and the known upstream issues.

Reports are written for real cases: the ONNX Runtime MatmulTransposeFusion wrong result kept in
docs/found-bugs (recorded through HiGen's store, localized), the same defect recorded afresh with
an unrelated branch and reduced, and ONNX Runtime's FuseReluClip error. Each report's onnx.helper
script runs in a subprocess with HiGen unimportable and must reproduce the finding on the installed
runtime. Known-issue matching is checked on synthetic findings against a small file of its own.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper

from conftest import make_model
from higen.bugs.known_issues import (KnownIssuesError, load_known, match_known, version_affected)
from higen.main import main
from test_bugs_common import RELU_CLIP_PAIRS, RELU_CLIP_TARGETS, relu_clip_chain, save_case
from test_bugs_repro import NO_HIGEN

FOUND = Path(__file__).resolve().parents[1] / "docs" / "found-bugs" / "ort-matmultransposefusion-1d"


def report(case: Path, tmp_path: Path, *flags: str) -> tuple[str, Path]:
    """Run ``higen report``; returns the Markdown and the folder holding the script as repro.py."""
    out, folder = tmp_path / "report.md", tmp_path / "script"
    folder.mkdir()
    assert main(["report", str(case), "--out", str(out), "--script", str(folder / "repro.py"), *flags]) == 0
    return out.read_text(), folder


def run_script(folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", NO_HIGEN], cwd=folder, capture_output=True, text=True, timeout=120)


def transpose_matmul(extra_branch: bool):
    """MatMul(Transpose(A), b) with a 1-D b, float64, then Neg; optionally an unrelated Sin output."""
    nodes = [helper.make_node("Transpose", ["A"], ["At"], perm=[1, 0]), helper.make_node("MatMul", ["At", "b"], ["m"]),
             helper.make_node("Neg", ["m"], ["y"])]
    inputs = [helper.make_tensor_value_info("A", TensorProto.DOUBLE, [2, 3]),
              helper.make_tensor_value_info("b", TensorProto.DOUBLE, [2])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.DOUBLE, [3])]
    if extra_branch:
        nodes.append(helper.make_node("Sin", ["c"], ["s"]))
        inputs.append(helper.make_tensor_value_info("c", TensorProto.DOUBLE, [4]))
        outputs.append(helper.make_tensor_value_info("s", TensorProto.DOUBLE, [4]))
    rng = np.random.default_rng(3)
    feeds = {"A": rng.standard_normal((2, 3)), "b": rng.standard_normal(2), "c": rng.standard_normal(4)}
    return make_model(nodes, inputs, outputs), {v.name: feeds[v.name] for v in inputs}


def test_report_of_the_found_bug_rebuilds_the_graph_and_reproduces(tmp_path):
    case = Path(shutil.copytree(FOUND, tmp_path / "case"))
    meta = json.loads((case / "meta.json").read_text())
    text, folder = report(case, tmp_path)
    script = (folder / "repro.py").read_text()
    assert "helper.make_node('Transpose', ['A'], ['At']" in script and "perm=[1, 0]" in script
    assert "onnx.load" not in script and ".onnx" not in script.replace("import onnx", "")
    for heading in ("Describe the issue", "Observed vs expected", "Pass ablation", "To reproduce",
                    "Similar known issues", "Platform and versions"):
        assert f"### {heading}" in text
    assert f"onnxruntime: {meta['versions']['targets']['ort:cpu:O3']['version']}" in text
    assert f"onnx: {meta['environment']['onnx']}" in text and "python:" in text
    assert "switching off MatmulTransposeFusion alone" in text  # from localization.json
    assert "higen-ort-matmultransposefusion-1d" in text
    assert "disabling MatmulTransposeFusion fixes it" in text.splitlines()[0]
    done = run_script(folder)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "BUG SHOWS" in done.stdout and "MatmulTransposeFusion off" in done.stdout
    assert "BUG SHOWS" in text  # the run inside `higen report` said the same


def test_report_prefers_the_reduced_graph_and_says_how_to_localize(tmp_path, capsys):
    case = save_case(tmp_path / "run", *transpose_matmul(extra_branch=True), ["ort:cpu:O0", "ort:cpu:O3"],
                     [("ort:cpu:O0", "ort:cpu:O3"), ("torch:cpu", "ort:cpu:O0")])
    assert main(["reduce", str(case)]) == 0
    text, folder = report(case, tmp_path, "--no-run")
    script = (folder / "repro.py").read_text()
    assert "the reduced graph of `higen reduce`" in text and "'Sin'" not in script
    assert f"higen localize {case}" in text and "Not run (`--no-run`)" in text
    done = run_script(folder)
    assert done.returncode == 0 and "BUG SHOWS" in done.stdout, done.stdout + done.stderr


def test_report_of_an_error_matches_the_upstream_issue(tmp_path):
    case = save_case(tmp_path / "run", *relu_clip_chain(), RELU_CLIP_TARGETS, RELU_CLIP_PAIRS)
    text, folder = report(case, tmp_path, "--no-run")
    assert "https://github.com/microsoft/onnxruntime/issues/11836" in text
    assert text.splitlines()[0].startswith("# ONNX Runtime") and "fails in compile" in text.splitlines()[0]
    done = run_script(folder)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "FuseReluClip" in done.stdout and "BUG SHOWS" in done.stdout


ISSUES = """
format_version = 1

[[issue]]
id = "mtf"
runtime = "onnxruntime"
versions = ">=1.20.1,<=1.32.0"
kinds = ["mismatch"]
ops = ["MatMul", "Transpose"]
dtypes = ["float32", "float64"]
title = "fusion"
url = "https://example.org/1"
status = "open"

[[issue]]
id = "sat"
runtime = "openvino"
versions = ["2026.1.0", "2026.4.1"]
kinds = ["mismatch"]
ops = ["Add"]
dtypes = ["uint8"]
title = "saturation"
url = "https://example.org/2"
status = "open"

[[issue]]
id = "clip"
runtime = "onnxruntime"
kinds = ["error"]
message = "Unexpected data type for Clip 'min'"
title = "clip"
url = "https://example.org/3"
status = "closed"

[[issue]]
id = "fp16"
runtime = "onnxruntime"
kinds = ["mismatch"]
tags = ["noise:fp16-rounding-upstream"]
title = "fp16"
status = "unreported"
"""


@pytest.fixture
def issues(tmp_path):
    path = tmp_path / "issues.toml"
    path.write_text(ISSUES)
    return load_known(path)


def ids(finding, cause, versions, issues) -> list[str]:
    return [issue.id for issue in match_known(finding, cause, versions, issues)]


def test_matching_uses_the_root_cause_not_the_output_op(issues):
    finding = {"verdict": "mismatch", "targets": ["ort:cpu:O0", "ort:cpu:O3"],
               "signature": "mismatch|ort:cpu:O0|ort:cpu:O3|Concat|float64"}
    cause = {"kind": "value", "blamed": "ort:cpu:O0~ort:cpu:O3", "op": "MatMul", "dtype": "float64",
             "ops": ["MatMul", "Transpose"]}
    assert ids(finding, cause, {"onnxruntime": "1.32.0"}, issues) == ["mtf"]
    assert ids(finding, None, {"onnxruntime": "1.32.0"}, issues) == []  # the signature names Concat
    assert ids(finding, {**cause, "ops": ["MatMul"]}, {"onnxruntime": "1.32.0"}, issues) == []
    assert ids(finding, {**cause, "dtype": "float16"}, {}, issues) == []
    # the producer recorded by the analysis counts as a feeding op when it is about the same op
    analysed = {**finding, "signature": "mismatch|ort:cpu:O0|ort:cpu:O3|MatMul|float32",
                "analysis": {"producer": {"op": "MatMul", "inputs": ["Transpose", "input"]}}}
    assert ids(analysed, None, {}, issues) == ["mtf"]


def test_matching_respects_version_ranges_and_lists(issues):
    finding = {"verdict": "mismatch", "targets": ["ort:cpu:O0", "ort:cpu:O3"],
               "signature": "mismatch|ort:cpu:O0|ort:cpu:O3|MatMul|float32",
               "analysis": {"producer": {"op": "MatMul", "inputs": ["Transpose"]}}}
    meta_versions = {"higen": "0.1.0", "targets": {"ort:cpu:O3": {"runtime": "onnxruntime", "version": "1.20.1"}}}
    assert ids(finding, None, meta_versions, issues) == ["mtf"]
    assert ids(finding, None, {"onnxruntime": "1.20.0"}, issues) == []
    assert ids(finding, None, {"onnxruntime": "1.33.0"}, issues) == []
    saturating = {"verdict": "mismatch", "targets": ["torch:cpu", "ov:CPU"],
                  "signature": "mismatch|torch:cpu|ov:CPU|Add|uint8"}
    assert ids(saturating, None, {"openvino": "2026.4.1-22982-e213a147257-releases/2026/4"}, issues) == ["sat"]
    assert ids(saturating, None, {"openvino": "2026.3.0"}, issues) == []
    assert ids({**saturating, "targets": ["torch:cpu", "ort:cpu:O3"]}, None, {}, issues) == []
    assert version_affected("0.27.dev0", ">=0.27,<0.28") and not version_affected("1.9.0", ">=1.10")


def test_matching_messages_and_tags(issues):
    error = {"verdict": "error", "targets": ["ort:cpu:O3"],
             "signature": "error|ort:cpu:O3|compile|Fail|Exception during initialization: SRC "
                          "onnxruntime::FuseReluClip::Apply Unexpected data type for Clip 'min' input of N"}
    assert ids(error, {"kind": "error", "blamed": "ort:cpu:O3", "op": "compile"}, {}, issues) == ["clip"]
    other = {**error, "signature": "error|ort:cpu:O3|compile|Fail|Type Error: Type mismatch"}
    assert ids(other, None, {}, issues) == []
    noisy = {"verdict": "mismatch", "targets": ["torch:cpu", "ort:cpu:O3"],
             "signature": "mismatch|torch:cpu|ort:cpu:O3|Floor|float16"}
    tagged = {"kind": "value", "op": "Floor", "tags": ["noise:fp16-rounding-upstream"]}
    assert ids(noisy, tagged, {}, issues) == ["fp16"]
    assert ids(noisy, {"kind": "value", "op": "Floor", "tags": []}, {}, issues) == []


def test_the_shipped_list_loads_and_knows_the_found_bugs():
    shipped = load_known()
    assert len({issue.id for issue in shipped}) == len(shipped) >= 20
    assert all(issue.url.startswith("https://github.com/") for issue in shipped if issue.status != "unreported")
    assert {"onnxruntime", "openvino", "tvm"} <= {issue.runtime for issue in shipped}
    meta = json.loads((FOUND / "meta.json").read_text())
    assert [i.id for i in match_known(meta["findings"][0], None, meta["versions"])] == \
        ["higen-ort-matmultransposefusion-1d"]


@pytest.mark.parametrize("content, says", [
    ("format_version = 1\n[[issue]\nid = 'x'\n", "is not valid TOML"),
    ("format_version = 2\n", "format_version is 2"),
    ("format_version = 1\n[[issue]]\nid = 'x'\nruntime = 'onnxruntime'\ntitle = 't'\nstatus = 'open'\n",
     "needs its url"),
    ("format_version = 1\n[[issue]]\nid = 'x'\nruntime = 'onnxruntime'\ntitle = 't'\nstatus = 'open'\n"
     "url = 'u'\nversions = 'after 1.2'\n", "versions 'after 1.2'"),
    ("format_version = 1\n[[issue]]\nid = 'x'\nruntime = 'onnxruntime'\ntitle = 't'\nstatus = 'open'\n"
     "url = 'u'\nop = ['MatMul']\n", "unknown field(s) op"),
])
def test_a_bad_known_issues_file_is_one_line(content, says, tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text(content)
    with pytest.raises(KnownIssuesError) as raised:
        load_known(path)
    assert says in str(raised.value) and "\n" not in str(raised.value)
    assert main(["report", str(FOUND), "--known", str(path), "--no-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("higen: error:") and says in err and "\n" not in err
