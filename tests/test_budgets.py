"""How the three budgets combine (README, docs/rewards.md): the first one spent ends the run. Given
alone, ``--max-seconds`` is the budget: the run goes on past the default big-epochs x small-epochs
tests until the time is spent (the RL plans big epochs until then), and then ends by itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from higen.cli.run import DEFAULT_BIG_EPOCHS

FLAGS = ["--compiler", "ort", "--small-epochs", "1", "--max-nodes", "3", "--no-progress", "--no-support-probe",
         "--net-arch", "8", "--ppo-steps", "2", "--learning-starts", "2"]
DEFAULT_CAP = DEFAULT_BIG_EPOCHS * 1  # what big-epochs x small-epochs would stop at


def campaign(tmp_path: Path, *args: str) -> list[dict]:
    done = subprocess.run([sys.executable, "-m", "higen.main", *FLAGS, *args, "--run-root", str(tmp_path),
                           "--no-session-subdir"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 0, done.stderr[-2000:]
    return [json.loads(line) for line in (tmp_path / "training.log").read_text().splitlines()]


@pytest.mark.parametrize("strategy", ["random", "rl"])
def test_max_seconds_alone_is_the_budget(tmp_path, strategy):
    events = campaign(tmp_path, "--strategy", strategy, "--max-seconds", "12")
    kinds = [e["event"] for e in events]
    assert kinds[-1] == "end" and not events[-1]["interrupted"]
    assert kinds.count("test") > DEFAULT_CAP and kinds.count("big_epoch") > DEFAULT_BIG_EPOCHS
    assert events[-1]["tests"] == kinds.count("test")


def test_the_first_budget_spent_ends_the_run(tmp_path):
    events = campaign(tmp_path, "--strategy", "random", "--max-seconds", "3600", "--max-tests", "7")
    assert [e["event"] for e in events].count("test") == 7 and events[-1]["event"] == "end"
