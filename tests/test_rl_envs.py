"""Both Gymnasium environments on the real engine (ONNX Runtime, small graphs): Gymnasium's own
check_env, observations in their spaces, and tests that only vary the free dimensions."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from higen.campaign_state import Budget, CampaignState
from higen.engine import Engine, EngineSettings
from higen.envs.high import HighLevelEnv
from higen.envs.low import CompilerFuzzEnv
from higen.generation.config import GenConfig
from higen.generation.decoder import DIMENSIONS, ActionDecoder, dimension_mask
from higen.modes import normal_plan
from higen.rewards import HighWeights, LowWeights, RewardConfig

BASE = GenConfig(max_nodes=3)
#: the novelty and diversity terms on (off by default), so that every test and epoch earns something
REWARDS = RewardConfig(low=LowWeights(novelty=0.5), high=HighWeights(diversity=0.5))


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    with Engine(EngineSettings(plan=normal_plan("ort", with_gpu=False)), tmp_path_factory.mktemp("run")) as engine:
        engine.start()
        yield engine


def make_envs(engine, small_epochs: int = 3) -> tuple[CompilerFuzzEnv, HighLevelEnv]:
    decoder = ActionDecoder(engine.ops(), BASE)
    state = CampaignState(engine, REWARDS, small_epochs, Budget(big_epochs=10))
    low = CompilerFuzzEnv(state, decoder)
    return low, HighLevelEnv(low, horizon=10)


def checked(env) -> list[str]:
    """Gymnasium's check_env; returns its warnings (the step-determinism check is skipped: the
    env's spec declares it nondeterministic, and the close check needs a registered id)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env, skip_close_check=True)
    env.close()
    env.close()  # closing twice is allowed
    return [str(w.message) for w in caught]


def test_low_level_env_passes_check_env(engine):
    low, _ = make_envs(engine)
    low.state.begin_epoch(np.ones(len(DIMENSIONS)))
    before = engine.tests_done
    messages = checked(low)
    assert engine.tests_done > before  # the real engine ran the steps
    assert not [m for m in messages if "observation" in m.lower() or "action" in m.lower()], messages
    assert low.spec.nondeterministic


def test_high_level_env_passes_check_env(engine):
    low, high = make_envs(engine, small_epochs=2)
    before = low.state.big_epochs
    checked(high)
    assert low.state.big_epochs > before and low.state.tests == 2 * low.state.big_epochs


def test_low_steps_vary_only_the_free_dimensions(engine):
    low, _ = make_envs(engine)
    free = ["dtypes", "max_nodes", "method"]  # in DIMENSIONS order
    low.state.begin_epoch(dimension_mask(free))
    obs, info = low.reset(seed=5)
    low.action_space.seed(5)  # deterministic actions: an unseeded draw could make all three tests invalid
    assert obs in low.observation_space and list(obs[:len(DIMENSIONS)]) == list(dimension_mask(free))
    rewards, truncated = [], False
    while not truncated:
        obs, reward, terminated, truncated, info = low.step(low.action_space.sample())
        assert obs in low.observation_space and not terminated
        assert set(info["config"]) == {"seed", "free", *free}
        rewards.append(reward)
    assert len(rewards) == 3  # one episode = one big epoch of small_epochs tests
    for result in low.state.epoch_results:
        for name in set(DIMENSIONS) - set(free):
            assert getattr(result.config, name) == getattr(BASE, name)
    assert low.state.tests == 3 and len(low.state.tokens) > 0
    first = low.state.epoch_results[0]
    assert rewards[0] > 0 if first.valid else rewards[0] == pytest.approx(-0.2)  # new structure, or the invalid cost
    terms, summary = low.state.end_epoch()
    assert summary["free"] == free and summary["tests"] == 3 and len(summary["configs"]) == 3
    assert terms.as_dict()["diversity"] == 0.5  # a first try of this set: full diversity bonus


def test_test_seeds_come_from_the_env_seed(engine):
    seeds = []
    for _ in range(2):
        low, _ = make_envs(engine)
        low.reset(seed=11)
        low.step(np.zeros(low.action_space.shape, dtype=np.float32))
        seeds.append(low.state.epoch_results[-1].config.seed)
    assert seeds[0] == seeds[1]
