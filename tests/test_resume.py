"""Lossless resume after ``kill -9``, for both strategies, through the command line on ONNX Runtime:
the driver is frozen (SIGSTOP) in the middle of a big epoch and killed (SIGKILL), then ``--resume``
finishes the run. No log line, CSV row or saved case is lost or duplicated; test indices, the coverage
curve and campaign time continue; a random campaign then gives exactly the tests of an uninterrupted
run with the same seed."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SMALL = 4
TOTAL = 28
FLAGS = ["--compiler", "ort", "--small-epochs", str(SMALL), "--max-nodes", "4", "--max-tests", str(TOTAL),
         "--no-progress", "--no-support-probe", "--net-arch", "8", "--ppo-steps", "2", "--learning-starts", "2",
         "--reward", "high.tests_per_s=0"]
ENV = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}


def lines(run_dir: Path) -> list[dict]:
    path = run_dir / "training.log"
    text = path.read_text() if path.exists() else ""
    return [json.loads(line) for line in text.splitlines() if line.endswith("}")]


def logged_tests(run_dir: Path) -> list[dict]:
    return [e for e in lines(run_dir) if e["event"] == "test"]


def run(*args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "higen.main", *args], capture_output=True, text=True, timeout=300,
                          env=ENV)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def kill_mid_epoch(command: list[str], run_dir: Path, after: int) -> int:
    """Start ``command``; once it has logged at least ``after`` tests and is inside a big epoch
    (frozen with SIGSTOP to look), SIGKILL it. Returns the tests it had logged."""
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and child.poll() is None:
            if len(logged_tests(run_dir)) >= after:
                child.send_signal(signal.SIGSTOP)
                logged = len(logged_tests(run_dir))
                if logged % SMALL:
                    child.send_signal(signal.SIGKILL)
                    child.wait(timeout=60)
                    return logged
                child.send_signal(signal.SIGCONT)
            time.sleep(0.02)
        raise AssertionError(f"the run ended or stalled before {after} tests: {lines(run_dir)[-1:]}")
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


@pytest.mark.parametrize("strategy", ["random", "rl"])
def test_kill_9_and_resume_lose_and_repeat_nothing(tmp_path, strategy):
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "higen.main", "--strategy", strategy, *FLAGS, "--run-root", str(run_dir),
               "--no-session-subdir"]
    killed_at = kill_mid_epoch(command, run_dir, after=SMALL * 2 + 1)
    assert killed_at % SMALL and not any(e["event"] == "end" for e in lines(run_dir))
    before = logged_tests(run_dir)
    cases_before = {p.name for p in (run_dir / "bug_cases").iterdir() if p.is_dir()}

    done = run("--resume", str(run_dir))
    assert "resumed" in done.stderr
    events = lines(run_dir)
    kinds = [e["event"] for e in events]
    assert kinds.count("start") == kinds.count("resume") == kinds.count("end") == 1
    resume = events[kinds.index("resume")]
    assert resume["continues_after"] == killed_at

    # every test once, indices continuous, the killed session's lines kept as they were
    after = logged_tests(run_dir)
    assert [t["index"] for t in after] == list(range(1, TOTAL + 1))
    assert after[:killed_at] == before
    assert events[-1]["tests"] == TOTAL and sum(events[-1]["verdicts"].values()) == TOTAL
    # one big-epoch line per epoch; the killed epoch's line is written by the resumed run
    assert [e["epoch"] for e in events if e["event"] == "big_epoch"] == list(range(TOTAL // SMALL))
    # one CSV row per logged test, in order; the coverage curve and the clock never go back
    rows = list(csv.DictReader((run_dir / "coverage_by_steps.csv").open()))
    assert [int(r["step"]) for r in rows] == list(range(1, TOTAL + 1))
    covered = [int(r["structure_covered"]) for r in rows]
    assert covered == sorted(covered) and covered[killed_at] >= covered[killed_at - 1] > 0
    times = [float(r["time"]) for r in rows]
    assert times == sorted(times)
    # every saved case survives; every case a test line names exists
    cases = {p.name for p in (run_dir / "bug_cases").iterdir() if p.is_dir()}
    assert cases_before <= cases and {t["case"] for t in after if t["case"]} <= cases
    # campaign time continues: the killed session's time (its start line to its last line) plus at least
    # the resumed session's tests (its start-up, from the resume line on, is not campaign time)
    killed_session = events[0]["time"], events[kinds.index("resume") - 1]["time"]
    resumed_tests = after[killed_at]["time"], after[-1]["time"]
    assert events[-1]["wall_s"] >= killed_session[1] - killed_session[0] + resumed_tests[1] - resumed_tests[0] - 1e-3

    if strategy == "random":  # the same tests as a run that was never killed
        whole = tmp_path / "whole"
        run("--strategy", "random", *FLAGS, "--run-root", str(whole), "--no-session-subdir")
        assert [(t["seed"], t["config"], t["verdict"]) for t in after] == \
               [(t["seed"], t["config"], t["verdict"]) for t in logged_tests(whole)]
