"""Per-test determinism: a test's model and inputs depend only on its config and seed, whatever the
generator worker built before; ``higen regenerate`` rebuilds a logged test exactly; serial and
``--workers 2`` campaigns give the same tests and verdicts. And the adaptive generation timeout: the
rule as a pure function, and a real generation killed at its limit, logged as ``generator-timeout``."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from rich.console import Console

import higen.main
from higen.backends.base import Target
from higen.campaign import make_progress, run_campaign
from higen.campaign_state import Budget, CampaignState
from higen.engine import Engine, EngineSettings
from higen.generation.client import GENERATOR_TIMEOUT
from higen.generation.config import GenConfig
from higen.generation.timeout import GenTimeout
from higen.modes import Plan
from higen.oracle import Verdict
from higen.regenerate import case_digest
from higen.rewards import HighWeights, RewardConfig
from higen.run_dir import RunLog
from higen.strategies import RandomStrategy

CONFIGS = [GenConfig(seed=11, max_nodes=6), GenConfig(seed=12, max_nodes=8, method="symbolic"),
           GenConfig(seed=13, max_nodes=5, inputs="random"), GenConfig(seed=14, max_nodes=6, method="concolic"),
           GenConfig(seed=15, max_nodes=6, inputs="edge"), GenConfig(seed=16, max_nodes=7, dtypes=("float32",)),
           GenConfig(seed=17, max_nodes=6, method="single-io"), GenConfig(seed=18, max_nodes=4, vulnerable_ops=True)]


def test_a_test_depends_only_on_its_config_and_seed(generator, tmp_path):
    def build(order: list[int], tag: str) -> dict[int, dict[str, str] | str]:
        built = {}
        for i in order:
            result = generator.generate(CONFIGS[i], tmp_path / f"{tag}{i}")
            built[i] = case_digest(tmp_path / f"{tag}{i}") if result.valid else result.reason
        return built

    forward = build(list(range(len(CONFIGS))), "a")
    generator.generate(GenConfig(seed=99, max_nodes=9), tmp_path / "between")  # yet another generator state
    backward = build(list(reversed(range(len(CONFIGS)))), "b")
    assert backward == forward
    assert sum(isinstance(v, dict) for v in forward.values()) >= len(CONFIGS) // 2  # most are real tests


def test_regenerate_rebuilds_logged_tests_and_a_hang_is_a_finding(tmp_path):
    """Every test of this campaign saves a case (``fault:garbage`` disagrees with everything), so the
    regenerated model and inputs are compared with the files the campaign ran."""
    plan = Plan("diff", [Target.parse("ort:cpu:O3"), Target.parse("fault:garbage")],
                [("torch:cpu", "ort:cpu:O3"), ("torch:cpu", "fault:garbage")])
    settings = EngineSettings(plan=plan, timeout_s=30, learn_support=False, examples_per_signature=1000)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    log = RunLog(run_dir / "training.log")
    with Engine(settings, run_dir) as engine, make_progress(Console(stderr=True), enabled=False) as progress:
        engine.start()
        strategy = RandomStrategy(5, engine.ops(), GenConfig(max_nodes=5), small_epochs=3)
        rewards = RewardConfig(high=HighWeights(validity=1.0, diversity=0.5))  # off by default
        summary = run_campaign(CampaignState(engine, rewards, 3, Budget(2)), strategy, 6, log, progress)
        # a generation that overruns its limit: an invalid test with its own reason, counted
        engine.generator.timeout = GenTimeout(ceiling_s=0.0, min_samples=0)  # expired before any answer
        hung = engine.run_one(GenConfig(seed=7, max_nodes=5))
        assert (hung.verdict, hung.reason.split(":")[0]) == (Verdict.INVALID, GENERATOR_TIMEOUT)
        assert engine.generator.timeouts == 1
        engine.generator.timeout = GenTimeout()
        assert engine.run_one(GenConfig(seed=7, max_nodes=5)).valid  # the worker came back
    log.close()
    assert summary.tests == 6 and summary.generator_timeouts == 0
    lines = [json.loads(line) for line in (run_dir / "training.log").read_text().splitlines()]
    logged = {e["index"]: e for e in lines if e["event"] == "test"}
    # the baseline books its tests in the RL's campaign state: per test its reward terms, per big epoch
    # the RL's record (free dimensions, high-level reward terms, mean low-level reward)
    epochs = [e for e in lines if e["event"] == "big_epoch"]
    assert [(e["epoch"], e["tests"]) for e in epochs] == [(0, 3), (1, 3)]
    for epoch in epochs:
        tests = [logged[3 * epoch["epoch"] + k] for k in (1, 2, 3)]
        assert epoch["free"] == tests[0]["free"] and epoch["configs"][0]["seed"] == tests[0]["seed"]
        assert epoch["low_reward_mean"] == pytest.approx(sum(t["reward"]["total"] for t in tests) / 3, abs=1e-5)
        assert epoch["high_reward"]["validity"] == pytest.approx(epoch["validity"])
    tried_again = epochs[1]["free"] == epochs[0]["free"]
    assert [e["high_reward"]["diversity"] for e in epochs] == pytest.approx([0.5, 0.5 / (1 + tried_again) ** 0.5])
    with_cases = [i for i, e in logged.items() if e["case"]]
    assert len(with_cases) >= 2, logged
    for index in with_cases[:2]:
        out = tmp_path / f"again{index}"
        assert higen.main.main(["regenerate", str(run_dir), str(index), "--out", str(out)]) == 0
        assert case_digest(out) == case_digest(run_dir / "bug_cases" / logged[index]["case"])
        assert GenConfig.from_json(json.loads((out / "config.json").read_text())).seed == logged[index]["seed"]
    assert higen.main.main(["regenerate", str(run_dir), "99"]) == 2  # not logged: one line


def test_generation_timeout_follows_the_median():
    rule = GenTimeout(multiple=10, floor_s=2, ceiling_s=30, window=5, min_samples=3)
    assert rule.limit([]) == rule.limit([0.1, 0.1]) == 30  # too few samples yet: the ceiling
    assert rule.limit([0.1, 0.1, 0.1]) == 2  # 10 x 0.1 s is below the floor
    assert rule.limit([0.5, 0.3, 0.4]) == 4
    assert rule.limit([9.0, 9.0, 9.0, 0.2, 0.3, 0.3, 0.4, 0.5]) == 3  # the window: only the last five count
    assert rule.limit([0.3, 5.0, 6.0]) == 30  # never above the ceiling


def test_serial_and_two_pipelines_give_the_same_tests(tmp_path):
    def campaign(workers: int) -> list[tuple]:
        run_dir = tmp_path / f"w{workers}"
        done = subprocess.run([sys.executable, "-m", "higen.main", "--strategy", "random", "--compiler", "ort",
                               "--max-nodes", "5", "--max-tests", "24", "--small-epochs", "6", "--seed", "3",
                               "--workers", str(workers), "--no-progress", "--no-support-probe",
                               "--run-root", str(run_dir), "--no-session-subdir"],
                              capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "200"})
        assert done.returncode == 0, done.stderr[-2000:]
        events = map(json.loads, (run_dir / "training.log").read_text().splitlines())
        return [(e["index"], e["seed"], e["n_nodes"], e["verdict"], e["findings"]) for e in events
                if e["event"] == "test"]

    serial = campaign(1)
    assert len(serial) == 24
    assert campaign(2) == serial
