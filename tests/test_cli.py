"""The command line, end to end: real campaigns in subprocesses, one-line errors, ``higen exec`` and
``higen doctor``. Nothing is mocked except, in one test, the package name that marks a runtime
as installed."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import higen.backends.registry as registry
import higen.main
from higen.tensors import load_tensors, save_tensors

#: Wide, plain output: rich tables are then neither wrapped nor truncated.
CLI_ENV = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
#: What the ``higen`` console script runs (``[project.scripts] higen = "higen.main:main"``).
CONSOLE_SCRIPT = [sys.executable, "-c", "import sys; from higen.main import main; sys.exit(main())"]
MODULE = [sys.executable, "-m", "higen.main"]


def run_cli(*args, prefix=MODULE, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env=CLI_ENV)


def campaign(run_root: Path, *extra) -> subprocess.CompletedProcess:
    done = run_cli("--strategy", "random", "--compiler", "ort", "--max-tests", "15", "--run-root", run_root,
                   "--no-progress", *extra)
    assert done.returncode == 0, done.stderr
    return done


def read_log(run_dir: Path) -> list[dict]:
    lines = (run_dir / "training.log").read_text().splitlines()
    assert lines
    return [json.loads(line) for line in lines]  # every line is one JSON object


def log_sequence(events: list[dict]) -> list[tuple]:
    return [(e["seed"], e["method"], e["verdict"]) for e in events if e["event"] == "test"]




def check_campaign_log(run_dir: Path, seed: int) -> list[dict]:
    events = read_log(run_dir)
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "end"
    assert kinds.count("start") == 1 and kinds.count("end") == 1 and kinds.count("test") == 15
    start, end = events[0], events[-1]
    assert start["seed"] == seed and start["plan"] == ["ort:cpu:O0", "ort:cpu:O3"]
    assert start["versions"]["targets"]["ort:cpu:O3"]["runtime"] == "onnxruntime"
    tests = [e for e in events if e["event"] == "test"]
    assert [t["index"] for t in tests] == list(range(1, 16))
    assert all(t["verdict"] in {"ok", "mismatch", "nan_inf_mismatch", "shape_mismatch", "dtype_mismatch", "crash",
                                "error", "timeout", "unsupported", "invalid"} for t in tests)
    assert end["tests"] == 15 and end["interrupted"] is False
    assert sum(end["verdicts"].values()) == 15
    assert end["verdicts"] == {v: sum(t["verdict"] == v for t in tests) for v in end["verdicts"]}
    assert (run_dir / "support.json").is_file() and (run_dir / "bug_cases").is_dir()
    return events


# -- campaigns ----------------------------------------------------------------------------------
def test_campaign_run_dirs_log_and_reproducibility(tmp_path):
    root = tmp_path / "runs"
    first = campaign(root)
    assert sorted(p.name for p in root.iterdir() if p.name not in ("signatures.json", "root_causes.json")
                  and not p.name.startswith(".")) == ["1", "LATEST"]
    assert (root / "LATEST").read_text().strip() == "1"
    assert str(root / "1") in first.stderr.replace("\n", "")
    events_1 = check_campaign_log(root / "1", seed=0)

    campaign(root)  # same (default) seed
    assert sorted(p.name for p in root.iterdir() if p.name not in ("signatures.json", "root_causes.json")
                  and not p.name.startswith(".")) == ["1", "2", "LATEST"]
    assert (root / "LATEST").read_text().strip() == "2"
    events_2 = check_campaign_log(root / "2", seed=0)
    assert log_sequence(events_1) == log_sequence(events_2)  # reproducible, verdicts included
    assert len({seed for seed, _, _ in log_sequence(events_1)}) == 15

    flat = tmp_path / "flat"
    campaign(flat, "--no-session-subdir", "--seed", "1")
    assert sorted(p.name for p in flat.iterdir()
                  if not p.name.startswith(".") and p.name not in ("signatures.json", "root_causes.json")) == [
        "allowed_ops.json", "bug_cases", "checkpoints", "coverage_by_steps.csv", "coverage_union.jsonl", "support.json",
        "training.log", "workers"]
    events_3 = check_campaign_log(flat, seed=1)
    # Another seed, another campaign: the comparison above can fail.
    assert [s for s, _, _ in log_sequence(events_3)] != [s for s, _, _ in log_sequence(events_1)]


# -- one-line errors ----------------------------------------------------------------------------
def assert_one_line_error(done: subprocess.CompletedProcess, *hints: str) -> str:
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("higen") and "error" in lines[0]
    for hint in hints:
        assert hint in lines[0], lines[0]
    assert "Traceback" not in done.stderr + done.stdout
    return lines[0]


@pytest.mark.parametrize("args, hints", [
    (["--bogus"], ["unrecognized arguments: --bogus", "--help"]),
    (["--max-tests", "0"], ["--max-tests must be positive", "not 0"]),
    (["--diff-backends", "ort,foo"], ["unknown backend 'foo'", "choose from ort, tvm, ov"]),
])
def test_bad_run_flags_end_in_one_line(tmp_path, args, hints):
    assert_one_line_error(run_cli(*args, "--run-root", tmp_path / "runs"), *hints)
    assert not (tmp_path / "runs").exists()  # refused before anything is written


@pytest.mark.skipif(os.path.exists("/dev/nvidia0"), reason="this machine has a GPU")
def test_diff_device_gpu_without_gpu(tmp_path):
    done = run_cli("--diff-backends", "ort", "--diff-device", "gpu", "--run-root", tmp_path / "runs")
    assert_one_line_error(done, "no GPU", "--diff-device cpu")
    assert not (tmp_path / "runs").exists()


@pytest.mark.skipif(os.path.exists("/dev/nvidia0"), reason="this machine has a GPU")
def test_diff_device_gpu_alone_is_not_ignored(tmp_path):
    done = run_cli("--diff-device", "gpu", "--max-tests", "1", "--no-progress", "--run-root", tmp_path / "runs")
    assert_one_line_error(done, "--diff-device")


def test_missing_backend_says_what_to_install(monkeypatch, capsys, tmp_path):
    missing = dataclasses.replace(registry.RUNTIMES["ov"], package="higen_test_no_such_package")
    monkeypatch.setitem(registry.RUNTIMES, "ov", missing)
    code = higen.main.main(["--compiler", "ov", "--max-tests", "1", "--no-progress",
                            "--run-root", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2
    assert lines == ["higen: error: OpenVINO is not installed: run `pip install openvino` or leave it out"]
    assert not (tmp_path / "runs").exists()


@pytest.fixture
def corrupt_model(tmp_path) -> Path:
    path = tmp_path / "corrupt.onnx"
    path.write_bytes(np.random.default_rng(0).bytes(512))
    return path


@pytest.mark.parametrize("which", ["corrupt", "missing"])
def test_exec_bad_model_is_one_line(corrupt_model, tmp_path, which):
    path = corrupt_model if which == "corrupt" else tmp_path / "absent.onnx"
    line = assert_one_line_error(run_cli("exec", path, prefix=CONSOLE_SCRIPT))
    assert str(path) in line
    assert ("is not a valid ONNX model" in line and "pass a .onnx file" in line if which == "corrupt"
            else "does not exist" in line)


@pytest.mark.parametrize("which", ["corrupt", "missing"])
def test_exec_bad_model_is_one_line_via_python_m(corrupt_model, tmp_path, which):
    path = corrupt_model if which == "corrupt" else tmp_path / "absent.onnx"
    assert_one_line_error(run_cli("exec", path, prefix=MODULE))


# -- higen exec ---------------------------------------------------------------------------------
def table_rows(stdout: str) -> dict[str, list[str]]:
    """target -> cells, from the rich table ``higen exec`` prints."""
    rows = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃|]", line) if c.strip()]
        if cells and re.fullmatch(r"\w+:\w+(:\w+)?", cells[0]):
            rows[cells[0]] = cells
    return rows


@pytest.mark.parametrize("backends, expected", [
    ("ort,ov", {"ort:cpu:O3", "ov:CPU"}),
    ("ort:cpu:O0,ort:cpu:O3", {"ort:cpu:O0", "ort:cpu:O3"}),
])
def test_exec_with_inputs(relu_add_case, backends, expected):
    model, inputs = relu_add_case
    done = run_cli("exec", model, "--backends", backends, "--inputs", inputs)
    assert done.returncode == 0, done.stderr
    rows = table_rows(done.stdout)
    assert set(rows) == expected
    assert all(cells[1] == "ok" and cells[2] == "run" for cells in rows.values()), rows
    assert "verdict: ok" in done.stdout


def test_exec_with_random_inputs(relu_add_case):
    model, _ = relu_add_case
    done = run_cli("exec", model, "--backends", "ort,ov", "--seed", "3")
    assert done.returncode == 0, done.stderr
    assert set(table_rows(done.stdout)) == {"ort:cpu:O3", "ov:CPU"}
    assert "verdict: ok" in done.stdout




def test_exec_compares_with_a_reference(relu_add_case, tmp_path):
    """With --reference the verdict depends on the numbers: right ones pass, wrong ones are a mismatch."""
    model, inputs_path = relu_add_case
    inputs = load_tensors(inputs_path)
    right = tmp_path / "right.npz"
    save_tensors(right, {"y": np.maximum(inputs["a"] + inputs["b"], 0)})
    done = run_cli("exec", model, "--backends", "ort", "--inputs", inputs_path, "--reference", right)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "verdict: ok" in done.stdout

    wrong = tmp_path / "wrong.npz"
    save_tensors(wrong, {"y": np.maximum(inputs["a"] + inputs["b"], 0) + 1})
    done = run_cli("exec", model, "--backends", "ort", "--inputs", inputs_path, "--reference", wrong)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "verdict: mismatch" in done.stdout
    assert "torch:cpu, ort:cpu:O3" in done.stdout


# -- higen doctor -------------------------------------------------------------------------------
def test_doctor_lists_runtimes_with_versions():
    done = run_cli("doctor")
    assert done.returncode == 0, done.stdout + done.stderr
    rows = {}
    for line in done.stdout.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃|]", line) if c.strip()]
        if len(cells) >= 2:
            rows[cells[0]] = cells[1]
    for component, distribution in (("onnxruntime", "onnxruntime"), ("tvm", "apache-tvm"),
                                     ("openvino", "openvino")):
        assert component in rows, done.stdout
        assert rows[component].startswith(importlib.metadata.version(distribution)), (component, rows[component])
