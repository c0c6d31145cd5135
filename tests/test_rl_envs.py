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


def test_with_choose_next_each_test_is_generated_ahead_from_its_own_action(engine):
    """The pipelined low level (the trainer's SAC chooses the next action from the observation the
    step returns): test k+1 is submitted before test k runs, and each step's test is the one its
    action chose, so the reward SB3 stores beside an action is that action's own test's."""
    low, _ = make_envs(engine, small_epochs=4)
    low.state.begin_epoch(dimension_mask(["max_nodes"]))
    low.reset(seed=3)
    rng = np.random.default_rng(3)
    chosen, seen = [], []

    def choose_next(observation):
        seen.append(observation.copy())
        chosen.append(rng.uniform(-1, 1, low.action_space.shape).astype(np.float32))
        return chosen[-1]

    low.choose_next = choose_next
    action, truncated, step = rng.uniform(-1, 1, low.action_space.shape).astype(np.float32), False, 0
    while not truncated:
        submitted = engine._submitted
        observation, _, _, truncated, info = low.step(action)
        expected = low.decoder.decode(action, ["max_nodes"], seed=0).max_nodes
        assert info["config"]["max_nodes"] == expected  # the test that ran is this action's
        if truncated:  # a big epoch's last test: nothing is generated ahead into the next epoch
            assert len(chosen) == step and engine._submitted == submitted
        else:  # the next test was submitted while this one ran, from the observation returned
            assert engine._submitted == submitted + (2 if step == 0 else 1)
            assert np.array_equal(seen[-1], observation)
            action = chosen[-1]
        step += 1
    assert step == 4


def test_pipelined_sac_stores_each_action_beside_its_own_test(engine):
    """PipelinedSAC on the real low level: every replay-buffer row's action decodes to the config
    of the test whose reward the row holds, uniform warm-up actions and actor samples alike."""
    from stable_baselines3.common.callbacks import BaseCallback

    from higen.agents.trainer import PipelinedSAC

    low, _ = make_envs(engine, small_epochs=6)
    low.state.begin_epoch(dimension_mask(["max_nodes"]))
    sac = PipelinedSAC("MlpPolicy", low, learning_starts=3, train_freq=1, gradient_steps=0,
                       policy_kwargs={"net_arch": [8]}, seed=4, device="cpu")
    low.choose_next = sac.choose_ahead
    configs = []

    class Record(BaseCallback):
        def _on_step(self) -> bool:
            configs.append(self.locals["infos"][0]["config"]["max_nodes"])
            return True

    sac.learn(total_timesteps=6, callback=Record())
    actions = sac.replay_buffer.actions[: sac.replay_buffer.size(), 0]
    assert len(configs) == len(actions) == 6
    assert [low.decoder.decode(a, ["max_nodes"], seed=0).max_nodes for a in actions] == configs
    assert len(set(configs)) > 1  # the check can tell actions apart
