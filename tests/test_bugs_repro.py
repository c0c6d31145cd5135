"""Replaying bug cases: ``higen repro`` (exit 0 reproduces, 1 no longer), the standalone ``repro.py``
each case carries (no HiGen import), and the refusal of pickled payloads. Real ONNX Runtime and
OpenVINO on real failures (see test_bugs_common)."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from higen.main import main
from higen.tensors import load_tensors, save_tensors
from test_bugs_common import (RELU_CLIP_PAIRS, RELU_CLIP_TARGETS, relu_clip_chain, saturating_add_chain,
                              save_case)

#: Runs a case's repro.py with every ``higen`` import made to fail.
NO_HIGEN = ("import runpy, sys; sys.modules['higen'] = None; sys.argv = ['repro.py']; "
            "runpy.run_path('repro.py', run_name='__main__')")


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> dict[str, Path]:
    run = tmp_path_factory.mktemp("run")
    return {"error": save_case(run, *relu_clip_chain(), RELU_CLIP_TARGETS, RELU_CLIP_PAIRS),
            "mismatch": save_case(run, *saturating_add_chain(), ["ov:CPU"])}


def copy_case(case: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(case, tmp_path / case.name))


def standalone(case: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", NO_HIGEN], cwd=case, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("kind", ["error", "mismatch"])
def test_repro_reproduces_then_not_after_an_edit(cases, kind, tmp_path, capsys):
    case = copy_case(cases[kind], tmp_path)
    meta = json.loads((case / "meta.json").read_text())
    assert main(["repro", str(case), "--json", str(tmp_path / "r.json")]) == 0
    assert "REPRODUCES" in capsys.readouterr().out
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["reproduces"] and meta["signature"] in result["findings"]

    if kind == "error":  # the recorded signature no longer matches what the runtime says
        meta["signature"] = meta["signature"].replace("FuseReluClip", "FuseReluClamp")
        meta["findings"][0]["signature"] = meta["signature"]
        (case / "meta.json").write_text(json.dumps(meta))
    else:  # the recorded reference now says what OpenVINO computes: nothing to find
        save_tensors(case / "outputs" / "torch_cpu.npz", load_tensors(case / "outputs" / "ov_CPU.npz"))
    assert main(["repro", str(case)]) == 1
    assert "NO LONGER REPRODUCES" in capsys.readouterr().out


@pytest.mark.parametrize("kind", ["error", "mismatch"])
def test_standalone_script_needs_no_higen(cases, kind, tmp_path):
    case = copy_case(cases[kind], tmp_path)
    source = (case / "repro.py").read_text()
    imported = {alias.name.split(".")[0] for node in ast.walk(ast.parse(source))
                if isinstance(node, (ast.Import, ast.ImportFrom))
                for alias in (node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")])}
    assert "higen" not in imported and imported <= {"__future__", "argparse", "json", "os", "signal", "subprocess",
                                                   "sys", "tempfile", "pathlib", "numpy", "onnx", "onnxruntime",
                                                   "openvino", "tvm"}
    done = standalone(case)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "BUG SHOWS" in done.stdout
    if kind == "mismatch":
        save_tensors(case / "outputs" / "torch_cpu.npz", load_tensors(case / "outputs" / "ov_CPU.npz"))
        done = standalone(case)
        assert done.returncode == 1 and "bug does not show" in done.stdout, done.stdout + done.stderr


@pytest.mark.parametrize("command", ["repro", "reduce"])
@pytest.mark.parametrize("where", ["inputs.npz", "outputs/torch_cpu.npz"])
def test_pickle_payload_is_refused(cases, command, where, tmp_path, capsys):
    case = copy_case(cases["error"], tmp_path)
    payload = {"x": np.array([{"__reduce__": "os.system"}, None], dtype=object)}
    np.savez(case / where, **payload)  # numpy pickles object arrays
    assert main([command, str(case)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "pickled object array" in err[0] and where in err[0]


def test_not_a_case_is_one_line(tmp_path, capsys):
    assert main(["repro", str(tmp_path)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "no meta.json" in err[0]
