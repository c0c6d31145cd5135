"""Reduction of real failures buried in 20-node models: the result keeps the signature, has at most
three nodes, replays with ``higen repro`` and its own repro.py, and the original case is untouched."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from higen.bugs.case import load_case
from higen.main import main
from test_bugs_common import (RELU_CLIP_PAIRS, RELU_CLIP_TARGETS, relu_clip_chain, saturating_add_chain,
                              save_case)


def digests(case: Path) -> dict[str, str]:
    return {p.relative_to(case).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in case.rglob("*") if p.is_file() and "reduced" not in p.parts}


@pytest.mark.parametrize("kind", ["ort-error", "ov-mismatch"])
def test_reduce_20_nodes_to_at_most_3(kind, tmp_path, capsys):
    if kind == "ort-error":  # ORT O3 FuseReluClip fails on a float64 Relu -> Clip pair
        case = save_case(tmp_path, *relu_clip_chain(), RELU_CLIP_TARGETS, RELU_CLIP_PAIRS)
        core = {"Relu", "Clip"}
    else:  # OpenVINO saturates an overflowing uint8 Add; the ONNX reference stands in for PyTorch
        case = save_case(tmp_path, *saturating_add_chain(), ["ov:CPU"])
        core = {"Add"}  # the root cause's node: the Max that showed it at the output is not needed
    original = load_case(case)
    assert len(onnx.load(str(original.model_path)).graph.node) == 20
    before = digests(case)

    assert main(["reduce", str(case), "--json", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert "20 -> " in out and original.signature in out
    summary = json.loads((tmp_path / "r.json").read_text())
    assert summary["nodes_before"] == 20 and summary["nodes_after"] <= 3

    reduced = load_case(case / "reduced")
    model = onnx.load(str(reduced.model_path))
    onnx.checker.check_model(model, full_check=True)
    assert len(model.graph.node) == reduced.meta["nodes_after"] <= 3
    assert core <= {node.op_type for node in model.graph.node}
    assert reduced.meta["nodes_before"] == 20 and reduced.meta["original_signature"] == original.signature
    assert reduced.signature in {f["signature"] for f in reduced.meta["findings"]}
    assert reduced.meta["root_cause"] == original.finding()["root_cause"]
    if kind == "ov-mismatch":  # measured again on the small graph
        assert reduced.finding()["analysis"]["known"] == "ov-uint8-saturation"
    assert digests(case) == before  # the original case is intact

    assert main(["triage", str(case.parent), "--json", str(tmp_path / "t.json")]) == 0
    (entry,) = json.loads((tmp_path / "t.json").read_text())["root_causes"]
    assert entry["signatures"] == [original.signature] and entry["reduced"] == f"20->{summary['nodes_after']}"
    assert entry["key"] == original.finding()["root_cause"]["key"]

    assert main(["repro", str(case / "reduced")]) == 0
    assert "REPRODUCES" in capsys.readouterr().out
    done = subprocess.run([sys.executable, "repro.py"], cwd=case / "reduced", capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and "BUG SHOWS" in done.stdout, done.stdout + done.stderr


def test_case_that_does_not_reproduce_is_left_alone(tmp_path, capsys):
    case = save_case(tmp_path, *relu_clip_chain(), RELU_CLIP_TARGETS, RELU_CLIP_PAIRS)
    meta = json.loads((case / "meta.json").read_text())
    meta["signature"] = meta["findings"][0]["signature"] = meta["signature"].replace("'min'", "'max'")
    (case / "meta.json").write_text(json.dumps(meta))
    assert main(["reduce", str(case)]) == 1
    assert "does not reproduce" in capsys.readouterr().out
    assert not (case / "reduced").exists() and not list(case.glob(".tmp-*"))


def test_unknown_signature_is_one_line(tmp_path, capsys):
    case = save_case(tmp_path, *relu_clip_chain(), RELU_CLIP_TARGETS, RELU_CLIP_PAIRS)
    assert main(["reduce", str(case), "--signature", "crash|nowhere"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "no finding with signature" in err[0]
