"""Low-level environment: one step = one test, the action = a vector decoded into a GenConfig."""

from __future__ import annotations

from typing import Any, Callable

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.envs.registration import EnvSpec

from higen.campaign_state import RATE_NAMES, CampaignState
from higen.engine import TestResult
from higen.generation.config import GenConfig
from higen.generation.decoder import DIMENSIONS, ActionDecoder, PartialAction, describe_config
from higen.rewards import Terms

LOW_OBS_SIZE = len(DIMENSIONS) + len(RATE_NAMES) + 2

#: Fuzzing is not deterministic in Gymnasium's sense: the run remembers the tokens and signatures
#: it has seen (a repeated test earns less), and timeouts depend on the machine's load.
LOW_SPEC = EnvSpec("HiGen/CompilerFuzz-v0", nondeterministic=True)


class EpisodeEnv(gym.Env):
    """What both levels share: a step counter per episode and an observation of the run's state."""

    metadata = {"render_modes": []}
    steps = 0

    def observation(self) -> np.ndarray:
        raise NotImplementedError

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self.steps = 0
        return self.observation(), {}


class CompilerFuzzEnv(EpisodeEnv):
    """Action ``Box(-1, 1, (k,))``: decoded by ``decoder`` into a config, free dimensions only (a
    PartialAction: the learned dimensions' blocks only, the others drawn uniformly).

    Observation (all in [0, 1]): the free-dimension mask, moving-window rates of validity, findings,
    new signatures, token novelty and coverage growth, progress within the big epoch, campaign
    progress. An episode is one big epoch: it is truncated after ``state.small_epochs`` tests (or when
    the run's budget is spent). The test seed comes from this env's seeded ``np_random``.
    """

    def __init__(self, state: CampaignState, decoder: ActionDecoder | PartialAction):
        self.state = state
        self.decoder = decoder
        #: work to do while the generator builds the test (the trainer's SAC update)
        self.while_generating: Callable[[], None] | None = None
        #: the policy's action for the next test, from the observation this step will return (the
        #: trainer's SAC): with it the next test is generated while this one runs, as the random
        #: baseline's are, and the policy sees each test's result one test later
        self.choose_next: Callable[[np.ndarray], np.ndarray] | None = None
        self._submitted_ahead = False  # the next step's test is already generating
        self.spec = LOW_SPEC
        self.action_space = spaces.Box(-1.0, 1.0, (decoder.size,), dtype=np.float32)
        self.observation_space = spaces.Box(0.0, 1.0, (LOW_OBS_SIZE,), dtype=np.float32)

    def observation(self) -> np.ndarray:
        return self.state.low_observation()

    def _config(self, action) -> GenConfig:
        seed = int(self.np_random.integers(0, 2**31 - 1))
        return self.decoder.decode(np.asarray(action), self.state.free, seed)

    def step(self, action):
        engine = self.state.engine
        if not self._submitted_ahead:  # (with choose_next, only the first test of a big epoch)
            engine.submit(self._config(action))  # generated in its worker ...
        if self.while_generating is not None:
            self.while_generating()  # ... while this process does something useful
        ahead = self._observation_ahead()
        following = None if ahead is None else self._config(self.choose_next(ahead))
        result = engine.finish(prefetch=following)
        self._submitted_ahead = following is not None
        terms = self.state.account(result)
        self.steps += 1
        truncated = self.steps >= self.state.small_epochs or self.state.exhausted()
        # the observation the next action is chosen from: before this test's result if chosen already
        observation = self.observation() if ahead is None else ahead
        return observation, terms.total, False, truncated, step_info(result, terms)

    def _observation_ahead(self) -> np.ndarray | None:
        """The observation to choose the next test's action from now, while this test runs; None
        without ``choose_next`` or at a big epoch's last test (the next epoch's mask is PPO's)."""
        last = self.steps + 1 >= self.state.small_epochs or self.state.last_test()
        return None if self.choose_next is None or last else self.observation()


def step_info(result: TestResult, terms: Terms) -> dict[str, Any]:
    """The info of one low-level step (one test)."""
    return {"verdict": str(result.verdict), "new_signatures": list(result.new_signatures),
            "reward_terms": terms.as_dict(), "config": describe_config(result.config)}
