"""Rewards: pure functions of what a test (low level) or a big epoch (high level) produced.

Formulas, default weights and the reasons behind them are in docs/rewards.md. Weights come from
the dataclasses below, a TOML file (``--reward-config``, tables ``[low]`` and ``[high]``) and
``--reward low.KEY=VALUE`` / ``--reward high.KEY=VALUE`` flags, in that order of precedence
(flags last). Nothing here touches the engine, files or a random generator.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Iterable, Mapping

from higen.errors import UserError

TIME_FACTOR_CAP = 10.0  # the time factor of a hit stays in [1/10, 10]


@dataclass(frozen=True)
class LowWeights:
    """Per test (one SAC step)."""

    new_bug: float = 10.0  # per credible root cause the run root had never seen
    repeated_bug: float = 10.0  # per known credible root cause of the test, times 1/(its hits in the run)
    invalid: float = 0.2  # cost of a test that could not be generated or run (invalid / unsupported)
    novelty: float = 0.0  # times log(1 + tokens never seen before in the run); 0: it predicts no bug
    coverage: float = 1.0  # times the test's coverage gain (0 until coverage is collected)
    time: float = 0.0  # cost per second of generation + execution (0: decisions ignore the machine's speed)
    time_norm: float = 1.0  # bug terms times (typical test seconds / this test's) ** time_norm: hits per time


@dataclass(frozen=True)
class HighWeights:
    """Per big epoch (one PPO step)."""

    new_bug: float = 10.0  # per credible root cause first found during the epoch
    repeated_bug: float = 10.0  # per known credible root cause a test hit, times 1/(its hits in the run)
    validity: float = 0.0  # times the epoch's share of valid tests (0: a near-constant that hid the bugs)
    coverage: float = 1.0  # times the epoch's coverage growth
    new_tokens: float = 0.5  # times log(1 + structure tokens first seen during the epoch)
    diversity: float = 0.0  # times 1/sqrt(1 + earlier epochs with the same free dimensions)
    tests_per_s: float = 0.1  # times min(tests_per_s / speed_ref, 2)
    speed_ref: float = 10.0  # tests/s that count as 1 in the speed term


@dataclass(frozen=True)
class RewardConfig:
    low: LowWeights = LowWeights()
    high: HighWeights = HighWeights()

    def to_json(self) -> dict[str, dict[str, float]]:
        return {"low": asdict(self.low), "high": asdict(self.high)}

    @classmethod
    def from_json(cls, data: Mapping[str, Mapping[str, float]]) -> "RewardConfig":
        return cls(LowWeights(**data.get("low", {})), HighWeights(**data.get("high", {})))


@dataclass(frozen=True)
class Terms:
    """A reward split into named terms (logged as is); ``total`` is their sum."""

    parts: tuple[tuple[str, float], ...]

    @property
    def total(self) -> float:
        return float(sum(value for _, value in self.parts))

    def as_dict(self) -> dict[str, float]:
        return {name: round(value, 6) for name, value in self.parts} | {"total": round(self.total, 6)}


# -- low level ------------------------------------------------------------------------------------
def unseen_tokens(tokens: Iterable[str], seen: Mapping[str, int] | set[str]) -> int:
    """How many distinct tokens of a test the run had never seen."""
    return sum(1 for token in set(tokens) if token not in seen)


def novelty(unseen: int) -> float:
    """Diminishing value of new structure: log(1 + unseen)."""
    return math.log1p(max(0, unseen))


def coverage_gain(new_features: Mapping[str, int], exclude: Iterable[str] = ("structure",)) -> float:
    """A test's coverage gain from ``TestResult.coverage_new`` (collector -> features seen for the
    first time): log(1 + their sum). The structure collector is left out (the novelty term already
    counts those tokens); with no backend collector enabled the gain is 0."""
    skipped = set(exclude)
    return math.log1p(sum(max(0, n) for name, n in new_features.items() if name not in skipped))


def repeats_value(hits: Iterable[int]) -> float:
    """Known root causes hit again, each worth 1/(times the run has hit it, this hit included): the
    second hit of a cause still says "bugs live here" (1/2), the hundredth says little (1/100)."""
    return sum(1.0 / max(1, n) for n in hits)


def time_factor(seconds: float, typical_seconds: float, power: float) -> float:
    """(typical_seconds / seconds) ** power, kept in [1/TIME_FACTOR_CAP, TIME_FACTOR_CAP]: a hit of a
    test twice as fast as the run's typical one counts twice, so the bug terms approach hits per unit
    of time. 1 when ``power`` is 0 or a time is unknown."""
    if not power or seconds <= 0 or typical_seconds <= 0:
        return 1.0
    return min(TIME_FACTOR_CAP, max(1.0 / TIME_FACTOR_CAP, (typical_seconds / seconds) ** power))


def low_level_terms(*, new_bugs: int, repeat_hits: Iterable[int] = (), valid: bool, unseen: int,
                    coverage_gain: float = 0.0, seconds: float = 0.0, typical_seconds: float = 0.0,
                    weights: LowWeights = LowWeights()) -> Terms:
    """Reward of one test.

    ``new_bugs`` counts the test's credible root causes the run root had never seen; ``repeat_hits``
    holds, per known credible root cause of the test, how often the run has hit it (this test
    included). Noise is never counted: it earns nothing. Both bug terms are scaled by
    :func:`time_factor` of the test's ``seconds`` (generation and execution) against
    ``typical_seconds`` (the run's mean so far). Only an invalid test costs anything, and time if its
    weight is set.
    """
    factor = time_factor(seconds, typical_seconds, weights.time_norm)
    return Terms((
        ("new_bug", weights.new_bug * new_bugs * factor),
        ("repeated_bug", weights.repeated_bug * repeats_value(repeat_hits) * factor),
        ("invalid", 0.0 if valid else -weights.invalid),
        ("novelty", weights.novelty * novelty(unseen)),
        ("coverage", weights.coverage * max(0.0, coverage_gain)),
        ("time", -weights.time * max(0.0, seconds) if weights.time else 0.0),
    ))


# -- high level -----------------------------------------------------------------------------------
def diversity(times_tried_before: int) -> float:
    """1 for a set of free dimensions never tried, then 1/sqrt(1 + n)."""
    return 1.0 / math.sqrt(1 + max(0, times_tried_before))


def speed(tests_per_s: float, reference: float) -> float:
    return min(max(0.0, tests_per_s) / reference, 2.0) if reference > 0 else 0.0


def high_level_terms(*, new_bugs: int, repeats: float = 0.0, validity_ratio: float, coverage_growth: float,
                     new_tokens: int, times_tried_before: int, tests_per_s: float,
                     weights: HighWeights = HighWeights()) -> Terms:
    """Reward of one big epoch (its tests, the dimension set it freed, its speed); ``repeats``: the
    :func:`repeats_value` of the known root causes its tests hit, summed."""
    return Terms((
        ("new_bug", weights.new_bug * new_bugs),
        ("repeated_bug", weights.repeated_bug * repeats),
        ("validity", weights.validity * validity_ratio),
        ("coverage", weights.coverage * max(0.0, coverage_growth)),
        ("new_tokens", weights.new_tokens * novelty(new_tokens)),
        ("diversity", weights.diversity * diversity(times_tried_before)),
        ("tests_per_s", weights.tests_per_s * speed(tests_per_s, weights.speed_ref)),
    ))


# -- configuration --------------------------------------------------------------------------------
class RewardConfigError(UserError, ValueError):
    """A reward weight is unknown or not a number; the message says which and what is allowed."""


def _apply(config: RewardConfig, level: str, key: str, value: Any, where: str) -> RewardConfig:
    if level not in ("low", "high"):
        raise RewardConfigError(f"{where}: reward level {level!r} unknown: use low or high")
    weights = getattr(config, level)
    known = [f.name for f in fields(weights)]
    if key not in known:
        raise RewardConfigError(f"{where}: unknown {level}-level weight {key!r}: choose from {', '.join(known)}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise RewardConfigError(f"{where}: {level}.{key} must be a number, not {value!r}") from None
    if not math.isfinite(number):
        raise RewardConfigError(f"{where}: {level}.{key} must be finite")
    return replace(config, **{level: replace(weights, **{key: number})})


def load_reward_config(path: Path | None = None, overrides: Iterable[str] = ()) -> RewardConfig:
    """Defaults, then the TOML file's ``[low]``/``[high]`` tables, then ``LEVEL.KEY=VALUE`` overrides."""
    config = RewardConfig()
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text())
        except OSError as error:
            raise RewardConfigError(f"--reward-config {path}: cannot read it ({error.strerror})") from None
        except tomllib.TOMLDecodeError as error:
            raise RewardConfigError(f"--reward-config {path}: not valid TOML ({error})") from None
        for level, table in data.items():
            if not isinstance(table, dict):
                raise RewardConfigError(f"--reward-config {path}: {level!r} must be a table [low] or [high]")
            for key, value in table.items():
                config = _apply(config, level, key, value, f"--reward-config {path}")
    for text in overrides:
        name, sep, value = text.partition("=")
        level, dot, key = name.strip().partition(".")
        if not sep or not dot:
            raise RewardConfigError(f"--reward {text!r}: write LEVEL.KEY=VALUE, e.g. low.new_bug=20")
        config = _apply(config, level, key.strip(), value.strip(), f"--reward {text}")
    return config
