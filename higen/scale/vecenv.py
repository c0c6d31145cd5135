"""The low level over several pipelines: an SB3 vectorized env whose sub-envs are the tests in flight.

SAC sees ``num_envs`` sub-envs (one per pipeline). One vectorized step = up to ``num_envs`` tests:
``step_async`` decodes every sub-env's action into a config and submits them all (the pipelines
generate in parallel) and then runs SAC's gradient steps, one per submitted test, while they generate;
``step_wait`` collects the tests in order and books each (``CampaignState.account``: novelty, reward,
window, counters), so rewards and the run's memory do not depend on which pipeline finished first.

A big epoch still has exactly ``small_epochs`` tests, and ``--max-tests`` is never exceeded: when
fewer tests may run than there are sub-envs, the surplus sub-envs are *idle* for that step (info
``skipped``). Idle slots are not transitions: :class:`FlatReplayBuffer` drops them, and the trainer's
SAC callback takes them off SAC's step counter, so ``num_timesteps`` still counts tests.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.vec_env import VecEnv

from higen.campaign_state import CampaignState
from higen.envs.low import CompilerFuzzEnv, step_info
from higen.generation.decoder import ActionDecoder, PartialAction

SKIPPED = "skipped"  # info key of an idle sub-env


class ParallelFuzzEnv(VecEnv):
    """``num_envs`` copies of CompilerFuzzEnv's spaces over one CampaignState; episodes end together
    (a big epoch), after which the env resets itself as SB3's vectorized envs do."""

    def __init__(self, state: CampaignState, decoder: ActionDecoder | PartialAction, num_envs: int):
        self.state = state
        self.decoder = decoder
        self.template = CompilerFuzzEnv(state, decoder)  # spaces, spec and the seeded generator of test seeds
        #: work to do while the generators build the tests (the trainer's SAC updates, one per test)
        self.while_generating: Callable[[], None] | None = None
        self.render_mode = None
        self.steps = 0  # tests of the current big epoch
        self.runnable = 0  # tests of the pending step
        super().__init__(num_envs, self.template.observation_space, self.template.action_space)

    @property
    def np_random(self) -> np.random.Generator:
        return self.template.np_random

    def _observations(self) -> np.ndarray:
        return np.stack([self.state.low_observation()] * self.num_envs)

    def reset(self) -> np.ndarray:
        self.template.reset(seed=self._seeds[0])  # SB3's seed() applies at the first reset only
        self._reset_seeds()
        self._reset_options()
        self.steps = 0
        return self._observations()

    def step_async(self, actions: np.ndarray) -> None:
        state = self.state
        allowed = state.small_epochs - self.steps
        if state.budget.max_tests:
            allowed = min(allowed, state.budget.max_tests - state.tests)
        self.runnable = 0 if state.exhausted() else max(0, min(self.num_envs, allowed))
        for action in actions[: self.runnable]:
            seed = int(self.np_random.integers(0, 2**31 - 1))
            state.engine.submit(self.decoder.decode(np.asarray(action), state.free, seed))
        if self.while_generating is not None:
            for _ in range(self.runnable):
                self.while_generating()

    def step_wait(self):
        rewards = np.zeros(self.num_envs, dtype=np.float32)
        infos: list[dict[str, Any]] = [{SKIPPED: True} for _ in range(self.num_envs)]
        for slot in range(self.runnable):
            result = self.state.engine.finish()
            terms = self.state.account(result)
            rewards[slot], infos[slot] = terms.total, step_info(result, terms)
        self.steps += self.runnable
        observations = self._observations()
        truncated = self.steps >= self.state.small_epochs or self.state.exhausted() or self.runnable == 0
        if truncated:
            for info in infos:
                info["terminal_observation"] = observations[0].copy()
                info["TimeLimit.truncated"] = True
            observations = self.reset()
        return observations, rewards, np.full(self.num_envs, truncated), infos

    # -- the rest of SB3's VecEnv interface (one shared env: every index answers the same) --------
    def close(self) -> None:
        pass

    def get_attr(self, attr_name: str, indices=None) -> list[Any]:
        return [getattr(self, attr_name)] * len(self._indices(indices))

    def set_attr(self, attr_name: str, value: Any, indices=None) -> None:
        setattr(self, attr_name, value)

    def env_method(self, method_name: str, *method_args, indices=None, **method_kwargs) -> list[Any]:
        return [getattr(self.template, method_name)(*method_args, **method_kwargs) for _ in self._indices(indices)]

    def env_is_wrapped(self, wrapper_class, indices=None) -> list[bool]:
        return [False] * len(self._indices(indices))

    def _indices(self, indices) -> list[int]:
        if indices is None:
            return list(range(self.num_envs))
        return [indices] if isinstance(indices, int) else list(indices)


class FlatReplayBuffer(ReplayBuffer):
    """SAC's replay buffer for ParallelFuzzEnv: one row per test actually run, stored as if from a
    single env (idle sub-envs are dropped), so it samples, saves and resumes like the serial one."""

    def __init__(self, buffer_size, observation_space, action_space, device="auto", n_envs: int = 1, **kwargs):
        super().__init__(buffer_size, observation_space, action_space, device, n_envs=1, **kwargs)

    def add(self, obs, next_obs, action, reward, done, infos) -> None:
        for row, info in enumerate(infos):
            if not info.get(SKIPPED):
                keep = slice(row, row + 1)
                super().add(obs[keep], next_obs[keep], action[keep], reward[keep], done[keep], [info])
