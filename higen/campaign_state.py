"""The campaign state every strategy books its tests in: the engine, the budget, the token memory,
the reward terms of each test and of each big epoch, the big-epoch record that is logged, moving-window
rates and counters.

One state for all strategies, so the random baselines (``higen.campaign.run_campaign``) and the RL
(``higen.agents.trainer``, through the environments of ``higen.envs``) log the same fields and the
RL's objective (docs/rewards.md) is measured for the baselines too, with the same RewardConfig. It
outlives episodes (a low-level episode is one big epoch; a high-level one is the campaign) and is
saved as JSON in every checkpoint (``to_json`` / ``restore``), so a resumed run keeps its novelty
memory and counters. The bug-signature index is the engine's BugStore, already on disk. No gym here:
the observations are plain arrays.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np

from higen.coverage.manager import STRUCTURE
from higen.engine import TestResult
from higen.engine_api import FuzzEngine
from higen.generation.decoder import DIMENSIONS, describe_config, free_names
from higen.rewards import (
    RewardConfig,
    Terms,
    coverage_gain,
    high_level_terms,
    low_level_terms,
    repeats_value,
    unseen_tokens,
)
from higen.run_dir import LogHistory

#: validity, credible-bug rate, new-bug rate, token novelty, coverage growth (bugs: root causes, noise excluded)
RATE_NAMES = ("validity", "bugs", "new_bugs", "novelty", "coverage")
EMA = 0.3  # weight of the newest epoch in the per-dimension statistics


@dataclass
class TestRecord:
    valid: bool
    bugs: int  # credible root causes of the test
    new: int  # of which new to the run root
    unseen: int
    n_tokens: int
    coverage: float
    reward: float
    repeats: float = 0.0  # repeats_value of the known root causes it hit


def rates(records: list[TestRecord]) -> np.ndarray:
    """The five rates over ``records``, each in [0, 1] (zeros when there is none)."""
    if not records:
        return np.zeros(len(RATE_NAMES), dtype=np.float32)
    n = len(records)
    return np.array([
        sum(r.valid for r in records) / n,
        sum(r.bugs > 0 for r in records) / n,
        sum(r.new > 0 for r in records) / n,
        sum(r.unseen / max(1, r.n_tokens) for r in records) / n,
        sum(r.coverage / (1.0 + r.coverage) for r in records) / n,
    ], dtype=np.float32)


def engine_coverage_gain(result: TestResult) -> float:
    return coverage_gain(getattr(result, "coverage_new", None) or {})


@dataclass
class Budget:
    """Totals for the run, resumed sessions included (docs/rewards.md, "Budgets")."""

    big_epochs: int
    max_tests: int | None = None
    max_seconds: float | None = None


class CampaignState:
    def __init__(self, engine: FuzzEngine, rewards: RewardConfig, small_epochs: int, budget: Budget,
                 window: int = 32, gain_of: Callable[[TestResult], float] | None = None):
        self.engine = engine
        self.rewards = rewards
        self.small_epochs = small_epochs
        self.budget = budget
        #: a test's coverage gain: by default from the engine's coverage collectors (0 when none is on)
        self.gain_of = gain_of or engine_coverage_gain
        self.on_test: Callable[[TestResult, Terms], None] | None = None
        self.free = np.zeros(len(DIMENSIONS), dtype=np.int8)
        self.tokens: Counter[str] = Counter()
        self.window: deque[TestRecord] = deque(maxlen=window)
        self.epoch: list[TestRecord] = []
        self.epoch_results: list[TestResult] = []
        self.epoch_started = time.perf_counter()
        self.tests = 0
        self.big_epochs = 0
        self.cause_hits: Counter[str] = Counter()  # credible root cause -> tests of the run that hit it
        self.test_seconds = [0.0, 0]  # generation + execution seconds of the run's tests, and their number
        self.mask_counts: Counter[str] = Counter()
        self.dim_validity = np.full(len(DIMENSIONS), 0.5, dtype=np.float32)
        self.dim_novelty = np.zeros(len(DIMENSIONS), dtype=np.float32)
        self.last_mask = np.zeros(len(DIMENSIONS), dtype=np.int8)
        self.last_rates = np.zeros(len(RATE_NAMES), dtype=np.float32)
        self.began = time.perf_counter()  # campaign time: callers restart it when start-up is over

    # -- budget --------------------------------------------------------------------------------
    def elapsed(self) -> float:
        """Campaign seconds, earlier sessions of a resumed run included."""
        return time.perf_counter() - self.began

    def progress(self) -> float:
        """Share of the budget used, in [0, 1] (the largest of tests, big epochs and seconds)."""
        shares = [self.big_epochs / max(1, self.budget.big_epochs)]
        if self.budget.max_tests:
            shares.append(self.tests / self.budget.max_tests)
        if self.budget.max_seconds:
            shares.append(self.elapsed() / self.budget.max_seconds)
        return float(min(1.0, max(shares)))

    def time_spent(self) -> bool:
        return bool(self.budget.max_seconds and self.elapsed() >= self.budget.max_seconds)

    def last_test(self) -> bool:
        """The next test is the test budget's last (the time budget cannot say so ahead)."""
        return bool(self.budget.max_tests and self.tests + 1 >= self.budget.max_tests)

    def exhausted(self) -> bool:
        """No test may start: the test or time budget is spent (big epochs are counted by callers)."""
        return bool(self.budget.max_tests and self.tests >= self.budget.max_tests) or self.time_spent()

    # -- one test ------------------------------------------------------------------------------
    def typical_seconds(self) -> float:
        """Mean generation + execution seconds of the run's tests so far (0 before the first)."""
        total, count = self.test_seconds
        return total / count if count else 0.0

    def account(self, result: TestResult) -> Terms:
        """Book a finished test: novelty memory, root-cause hits, reward terms, moving window, counters."""
        tokens = set(result.tokens)
        unseen = unseen_tokens(tokens, self.tokens)
        self.tokens.update(tokens)
        causes = set(result.bugs)  # new ones included
        self.cause_hits.update(causes)
        repeat_hits = [self.cause_hits[key] for key in sorted(causes - set(result.new_bugs))]
        gain = float(self.gain_of(result) or 0.0)
        seconds = result.timings.get("gen_s", 0.0) + result.timings.get("exec_s", 0.0)
        terms = low_level_terms(new_bugs=len(result.new_bugs), repeat_hits=repeat_hits, valid=result.valid,
                                unseen=unseen, coverage_gain=gain, seconds=seconds,
                                typical_seconds=self.typical_seconds(), weights=self.rewards.low)
        self.test_seconds = [self.test_seconds[0] + seconds, self.test_seconds[1] + 1]
        record = TestRecord(result.valid, len(result.bugs), len(result.new_bugs), unseen, len(tokens),
                            gain, terms.total, repeats_value(repeat_hits))
        self.window.append(record)
        self.epoch.append(record)
        self.epoch_results.append(result)
        self.tests += 1
        if self.on_test is not None:
            self.on_test(result, terms)
        return terms

    def low_observation(self) -> np.ndarray:
        """Free-dimension mask, window rates, progress within the big epoch, campaign progress."""
        return np.concatenate([self.free.astype(np.float32), rates(list(self.window)),
                               np.array([min(1.0, len(self.epoch) / self.small_epochs), self.progress()],
                                        dtype=np.float32)]).astype(np.float32)

    # -- one big epoch -------------------------------------------------------------------------
    def begin_epoch(self, mask: np.ndarray | None = None) -> None:
        """Open a big epoch that frees ``mask`` (None: the caller sets ``free`` from its first test,
        as a strategy that proposes tests ahead does)."""
        if mask is not None:
            self.free = np.asarray(mask, dtype=np.int8).reshape(len(DIMENSIONS)).clip(0, 1)
        self.epoch, self.epoch_results = [], []
        self.epoch_started = time.perf_counter()

    def end_epoch(self) -> tuple[Terms, dict[str, Any]]:
        """Close the big epoch: its high-level reward terms and the record that is logged (the
        ``big_epoch`` line, the same for every strategy)."""
        records, results = self.epoch, self.epoch_results
        n = len(records)
        wall = max(time.perf_counter() - self.epoch_started, 1e-9)
        key = "".join(str(int(b)) for b in self.free)
        validity = sum(r.valid for r in records) / n if n else 0.0
        terms = high_level_terms(new_bugs=sum(r.new for r in records), repeats=sum(r.repeats for r in records),
                                 validity_ratio=validity,
                                 coverage_growth=sum(r.coverage for r in records),
                                 new_tokens=sum(r.unseen for r in records),
                                 times_tried_before=self.mask_counts[key], tests_per_s=n / wall,
                                 weights=self.rewards.high)
        self.mask_counts[key] += 1
        epoch_rates = rates(records)
        for index in np.flatnonzero(self.free):
            self.dim_validity[index] = (1 - EMA) * self.dim_validity[index] + EMA * epoch_rates[0]
            self.dim_novelty[index] = (1 - EMA) * self.dim_novelty[index] + EMA * epoch_rates[3]
        self.last_mask, self.last_rates = self.free.copy(), epoch_rates
        summary = {
            "epoch": self.big_epochs, "free": list(free_names(self.free)), "tests": n,
            "verdicts": dict(Counter(str(r.verdict) for r in results)), "validity": validity,
            "findings": sum(len(r.findings) for r in results), "bugs": sum(r.bugs for r in records),
            "new_bugs": sum(r.new for r in records), "new_signatures": sum(len(r.new_signatures) for r in results),
            "new_tokens": sum(r.unseen for r in records), "unique_tokens": len(self.tokens),
            "tests_per_s": n / wall, "high_reward": terms.as_dict(),
            "low_reward_mean": sum(r.reward for r in records) / n if n else 0.0,
            "configs": [describe_config(r.config) for r in results],
        }
        self.big_epochs += 1
        return terms, summary

    def high_observation(self) -> np.ndarray:
        """Last free mask, last epoch's rates, per-dimension validity and novelty (EMA over the epochs
        in which each dimension was free), campaign progress."""
        return np.concatenate([self.last_mask.astype(np.float32), self.last_rates, self.dim_validity,
                               self.dim_novelty, np.array([self.progress()], dtype=np.float32)]).astype(np.float32)

    # -- checkpoints ---------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {"tests": self.tests, "big_epochs": self.big_epochs, "tokens": dict(self.tokens),
                "window": [asdict(r) for r in self.window], "mask_counts": dict(self.mask_counts),
                "dim_validity": self.dim_validity.tolist(), "dim_novelty": self.dim_novelty.tolist(),
                "last_mask": self.last_mask.tolist(), "last_rates": self.last_rates.tolist(),
                "cause_hits": dict(self.cause_hits), "test_seconds": list(self.test_seconds),
                "elapsed_s": self.elapsed()}

    def checkpoint_data(self) -> dict[str, Any]:
        """What every strategy's checkpoint records of the campaign: the reward weights in force (a
        resumed run uses them), the budget and this state."""
        return {"rewards": self.rewards.to_json(), "budget": asdict(self.budget), "state": self.to_json()}

    def restore(self, data: dict[str, Any], history: LogHistory | None = None) -> None:
        """Continue from a checkpoint's state (``data``; keys it lacks keep their fresh values). With
        ``history`` (the run's log), also past the tests and big epochs logged after it: they stay
        counted, their time and root-cause hits too, and their tokens known (from the engine's coverage
        union, which the caller has resumed); the rest (window, per-dimension statistics, mean test
        time) is the checkpoint's."""
        data = {**self.to_json(), **data}
        self.tests, self.big_epochs = int(data["tests"]), int(data["big_epochs"])
        self.tokens = Counter(data["tokens"])
        self.window = deque((TestRecord(**r) for r in data["window"]), maxlen=self.window.maxlen)
        self.mask_counts = Counter(data["mask_counts"])
        self.dim_validity = np.array(data["dim_validity"], dtype=np.float32)
        self.dim_novelty = np.array(data["dim_novelty"], dtype=np.float32)
        self.last_mask = np.array(data["last_mask"], dtype=np.int8)
        self.last_rates = np.array(data["last_rates"], dtype=np.float32)
        self.cause_hits = Counter(data["cause_hits"])
        self.test_seconds = [float(data["test_seconds"][0]), int(data["test_seconds"][1])]
        elapsed = float(data["elapsed_s"])
        if history is not None:
            self.tests, elapsed = history.tests, history.elapsed_s
            self.big_epochs = max(self.big_epochs, history.big_epochs)  # epochs logged after the checkpoint
            self.cause_hits = Counter(history.bug_hits)
            self.tokens.update(set(self.engine.coverage.union.get(STRUCTURE, set())) - set(self.tokens))
        self.began = time.perf_counter() - elapsed
