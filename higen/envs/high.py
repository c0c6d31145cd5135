"""High-level environment: one step = one big epoch; the action picks the free dimensions."""

from __future__ import annotations

from typing import Callable

import numpy as np
from gymnasium import spaces
from gymnasium.envs.registration import EnvSpec

from higen.campaign_state import RATE_NAMES
from higen.envs.low import CompilerFuzzEnv, EpisodeEnv
from higen.generation.decoder import DIMENSIONS

HIGH_OBS_SIZE = 3 * len(DIMENSIONS) + len(RATE_NAMES) + 1
HIGH_SPEC = EnvSpec("HiGen/DimensionChoice-v0", nondeterministic=True)


class HighLevelEnv(EpisodeEnv):
    """Action ``MultiBinary(8)``: which of DIMENSIONS the low level may vary during the next big epoch.

    A step sets the free dimensions, runs one low-level episode (``run_epoch``; by default a
    uniform-random low-level policy, the trainer passes SAC's ``learn``) and returns the epoch's
    high-level reward. Observation: last mask, last epoch's rates, per-dimension validity and novelty
    when free, campaign progress. An episode is the campaign: truncated after ``horizon`` steps.
    """

    def __init__(self, low: CompilerFuzzEnv, horizon: int, run_epoch: Callable[[], None] | None = None):
        self.low = low
        self.state = low.state
        self.horizon = horizon
        self.run_epoch = run_epoch or self._random_epoch
        self.spec = HIGH_SPEC
        self.action_space = spaces.MultiBinary(len(DIMENSIONS))
        self.observation_space = spaces.Box(0.0, 1.0, (HIGH_OBS_SIZE,), dtype=np.float32)

    def observation(self) -> np.ndarray:
        return self.state.high_observation()

    def _random_epoch(self) -> None:
        """The low level as a uniform-random policy (the baseline's low level)."""
        self.low.reset()
        truncated = False
        while not truncated:
            action = self.np_random.uniform(-1.0, 1.0, self.low.action_space.shape).astype(np.float32)
            truncated = self.low.step(action)[3]

    def step(self, action):
        if self.state.exhausted():  # the run's test or time budget is spent: no epoch runs
            return self.observation(), 0.0, False, True, {"epoch": None}
        self.state.begin_epoch(np.asarray(action))
        self.run_epoch()
        terms, summary = self.state.end_epoch()
        self.steps += 1
        truncated = self.steps >= self.horizon or self.state.exhausted()
        return self.observation(), terms.total, False, truncated, {"epoch": summary}
