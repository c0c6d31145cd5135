"""The experiment scripts (experiments/throughput.py, campaign.py, memory.py), end to end with tiny
budgets: each runs in a subprocess as a user would run it, and the shape of what it writes is
checked (columns, one row per setting / seed / process, finite positive numbers), never its speed."""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def run_script(name: str, *args, timeout: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}  # read now: the session's op-support cache
    done = subprocess.run([sys.executable, str(REPO / "experiments" / name), *map(str, args)], cwd=REPO, check=False,
                          capture_output=True, text=True, timeout=timeout, env=env)
    assert done.returncode == 0, f"{name} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def number(text: str) -> float:
    value = float(text)
    assert math.isfinite(value), text
    return value


def assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000, path


def test_throughput(tmp_path):
    done = run_script("throughput.py", "--tests", 3, "--nodes", 5, "--nnsmith-fuzz-s", 2, "--out-dir", tmp_path,
                      timeout=400)
    columns, rows = read_csv(tmp_path / "throughput.csv")
    for column in ("setting", "nodes", "tests", "wall_s", "tests_per_s", "x_nnsmith_gen", "gen_ms_per_test",
                   "gen_x_nnsmith", "gen_pct", "backends_pct", "loop_own_pct", "verdicts", "note",
                   "ort:cpu:O0_pct", "ort:cpu:O3_pct", "tvm:llvm:O3_pct", "ov:CPU_pct"):
        assert column in columns
    by_setting = {row["setting"]: row for row in rows}
    assert sorted(by_setting) == ["higen diff-ort-tvm-ov", "higen normal-ort", "nnsmith fuzz", "nnsmith gen only"]
    assert all(row["nodes"] == "5" for row in rows)
    backends = {"higen normal-ort": ("ort:cpu:O0_pct", "ort:cpu:O3_pct"),
                "higen diff-ort-tvm-ov": ("ort:cpu:O3_pct", "tvm:llvm:O3_pct", "ov:CPU_pct")}
    for setting, targets in backends.items():
        row = by_setting[setting]
        assert number(row["tests"]) == 3
        for column in ("wall_s", "tests_per_s", "x_nnsmith_gen", "gen_ms_per_test", "gen_x_nnsmith", *targets):
            assert number(row[column]) > 0, (setting, column)
        for column in ("gen_pct", "backends_pct", "loop_own_pct"):
            assert 0 <= number(row[column]) <= 200, (setting, column)
    reference = by_setting["nnsmith gen only"]
    assert number(reference["tests_per_s"]) > 0 and number(reference["gen_ms_per_test"]) > 0
    assert "model_gen" in reference["note"]
    fuzz = by_setting["nnsmith fuzz"]
    if number(fuzz["tests"]) == 0:  # NNSmith 0.1.0's own loop cannot run here: the reason is given
        assert "make_testcase" in fuzz["note"] and "ORT backend" in fuzz["note"]
        assert "nnsmith fuzz, 5 nodes: 0 tests" in done.stdout
    else:
        assert number(fuzz["tests_per_s"]) > 0
    assert_png(tmp_path / "throughput.png")


@pytest.mark.parametrize("side_by_side", [False, True], ids=["one-after-the-other", "side-by-side"])
def test_campaign(tmp_path, side_by_side):
    done = run_script("campaign.py", "--budget-min", 0.05, "--seeds", 2, "--strategies", "rl,random",
                      "--runs", tmp_path / "runs", "--out-dir", tmp_path,
                      *(["--side-by-side"] if side_by_side else []), timeout=400)
    assert ("side by side on cores" in done.stdout) == side_by_side
    columns, rows = read_csv(tmp_path / "campaign.csv")
    for column in ("strategy", "seed", "bugs", "bugs_crash", "bugs_error", "bugs_value", "noise_causes", "tests",
                   "tests_per_s", "unique_signatures", "validity", "structure_covered", "ort_transformers_covered",
                   "tvm_py_covered"):
        assert column in columns
    assert sorted((row["strategy"], row["seed"]) for row in rows) == [("random", "0"), ("random", "1"),
                                                                     ("rl", "0"), ("rl", "1")]
    for row in rows:
        assert number(row["tests"]) > 0 and number(row["tests_per_s"]) > 0
        assert 0 <= number(row["validity"]) <= 1
        assert number(row["structure_covered"]) > 0 and number(row["ort_transformers_covered"]) >= 0
        assert row["tvm_py_covered"] == ""  # ORT only: no TVM, so no Python coverage was measured
        kinds = sum(number(row[c]) for c in columns if c.startswith("bugs_"))
        assert kinds == number(row["bugs"]) >= 0 and number(row["noise_causes"]) >= 0
        assert (tmp_path / "runs" / f"{row['strategy']}-{row['seed']}" / "training.log").exists()
    _, summary = read_csv(tmp_path / "campaign_summary.csv")
    for strategy in ("rl", "random"):
        stats = {s["metric"]: s for s in summary if s["strategy"] == strategy}
        assert stats["tests"]["n"] == "2" and number(stats["tests"]["mean"]) > 0 and number(stats["tests"]["std"]) >= 0
        assert stats["tvm_py_covered"]["n"] == "0"
    assert_png(tmp_path / "campaign.png")
    assert_png(tmp_path / "campaign_curves.png")
    if side_by_side:  # the same figures again, read back from the run folders alone
        run_script("campaign.py", "--budget-min", 0.05, "--seeds", 2, "--from-runs", tmp_path / "runs",
                   "--out-dir", tmp_path / "again", timeout=120)
        assert read_csv(tmp_path / "again" / "campaign.csv") == (columns, rows)


def test_memory(tmp_path):
    run_script("memory.py", "--tests", 60, "--from-test", 10, "--interval", 0.1, "--runs", tmp_path / "run",
               "--out-dir", tmp_path, "--", "--recycle-after", 25, timeout=300)
    columns, rows = read_csv(tmp_path / "memory.csv")
    for column in ("process", "pids", "restarts", "rss_test1_mb", "rss_at_from_mb", "rss_at_end_mb", "growth_pct",
                   "max_mb", "within_target"):
        assert column in columns
    assert sorted(row["process"] for row in rows) == ["analyst", "driver", "generator", "ort:cpu:O0", "ort:cpu:O3"]
    for row in rows:
        for column in ("rss_at_from_mb", "rss_at_end_mb", "max_mb"):
            assert number(row[column]) > 0, (row["process"], column)
        assert number(row["growth_pct"]) > -100 and row["within_target"] in ("yes", "NO")
    pids = {row["process"]: int(row["pids"]) for row in rows}
    assert pids["ort:cpu:O0"] >= 3 and pids["ort:cpu:O3"] >= 3, pids  # recycled after every 25 answers
    assert pids["driver"] == 1
    _, samples = read_csv(tmp_path / "memory_samples.csv")
    tests = [int(s["tests"]) for s in samples]
    assert tests == sorted(tests) and tests[-1] >= 50
    assert all(number(s["rss_mb"]) > 0 for s in samples)
    assert_png(tmp_path / "memory.png")


def test_nnsmith_fuzz_log_parsing(tmp_path, monkeypatch):
    """The branch for an NNSmith release whose own loop runs: its log's counts and timings are read."""
    monkeypatch.syspath_prepend(str(REPO / "experiments"))
    from throughput import parse_fuzz_log

    log = tmp_path / "fuzz.log"
    log.write_text("\n".join([
        "[2026-01-01 00:00:00,000][dtest][INFO] - =====> [Success] at core.ReLU((float32,)) => (float32,)",
        "[2026-01-01 00:00:00,000][dtest][WARNING] - =====> [Failure] at core.Sin((float16,)) => (float16,)",
        "[2026-01-01 00:00:01,000][fuzz][INFO] - Timing: gen: 12.5ms, eval: 30.0ms, ",
        "[2026-01-01 00:00:01,100][fuzz][INFO] - Timing: gen: 7.5ms, eval: 10.0ms, save: 1.0ms, ",
        "ValueError: something went wrong",
        "[2026-01-01 00:00:02,000][fuzz][INFO] - Total 2 testcases generated.",
        "[2026-01-01 00:00:02,000][fuzz][INFO] - Total 1 bugs found.",
        "[2026-01-01 00:00:02,000][fuzz][INFO] - Total 3 failed to make testcases.",
    ]) + "\n")
    found = parse_fuzz_log(log)
    assert (found["tests"], found["bugs"], found["failed"]) == (2, 1, 3)
    assert (found["probe_ok"], found["probe_failed"]) == (1, 1)
    assert math.isclose(found["gen_s"], 0.020) and math.isclose(found["eval_s"], 0.040)
    assert found["error"] == "ValueError: something went wrong"
