"""The hierarchical trainer: PPO (high level, one step per big epoch) over SAC (low level, one step
per test), both driven by Stable-Baselines3's own ``learn``.

Nested design (docs/rewards.md, "Training loop"): ``PPO.learn`` steps the HighLevelEnv; each of its
steps frees the chosen dimensions and calls ``SAC.learn(small_epochs, reset_num_timesteps=False)``
on the CompilerFuzzEnv, whose episode is that big epoch (one test per SAC step, one gradient step per
``sac_train_every`` tests after ``learning_starts``; SAC's action covers the ``sac_learned``
dimensions, the others are drawn uniformly as the random baseline draws them; with one pipeline SAC
chooses each test's action one step ahead, so the next test is generated while one runs:
``PipelinedSAC``). A PPO callback logs
the big epoch, writes TensorBoard scalars and, every ``checkpoint_every`` big epochs, a checkpoint,
and stops PPO at the budget; a SAC callback stops a big epoch early when the test or time budget is
spent. The end and Ctrl-C write a checkpoint too; ``resume`` continues from the newest one.
"""

from __future__ import annotations

import signal
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from stable_baselines3 import PPO, SAC
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import configure

from higen.agents import checkpoint as ckpt
from higen.campaign_state import Budget, CampaignState
from higen.engine import TestResult
from higen.engine_api import FuzzEngine
from higen.envs.high import HighLevelEnv
from higen.envs.low import CompilerFuzzEnv
from higen.generation.config import GenConfig
from higen.generation.decoder import DIMENSIONS, LEARNED, ActionDecoder, PartialAction
from higen.rewards import RewardConfig, Terms
from higen.run_dir import LogHistory, RunLog


@dataclass
class AgentSettings:
    """Everything that shapes the two learners; recorded in each checkpoint, reused on resume."""

    seed: int = 0
    small_epochs: int = 20
    net_arch: tuple[int, ...] = (64, 64)
    device: str = "cpu"
    ppo_n_steps: int = 4  # big epochs per PPO update
    ppo_epochs: int = 4
    ppo_gamma: float = 0.9
    ppo_ent_coef: float = 0.01
    sac_learning_starts: int = 10  # tests with uniform-random actions before SAC's first update
    sac_batch_size: int = 64
    sac_buffer_size: int = 10_000
    sac_gamma: float = 0.5  # a test's reward is mostly its own; only novelty links tests
    sac_train_every: int = 4  # tests per SAC gradient step (a step cost ~16 ms of a ~150 ms test)
    sac_ent_coef: str = "auto_0.05"  # SB3's entropy tuning from 0.05: at 1.0 the bonus drowned the reward
    sac_learned: tuple[str, ...] = LEARNED  # dimensions SAC sets; the others are drawn uniformly
    checkpoint_every: int = 10  # big epochs between checkpoints (and one at the start, end and Ctrl-C)
    window: int = 32  # tests in the low level's moving-window rates

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "net_arch": list(self.net_arch), "sac_learned": list(self.sac_learned)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "AgentSettings":
        data = {**LEGACY_SETTINGS, **data}
        return cls(**{**data, "net_arch": tuple(data["net_arch"]), "sac_learned": tuple(data["sac_learned"])})


#: What a checkpoint written before these settings existed ran with: it resumes as it ran.
LEGACY_SETTINGS = {"sac_train_every": 1, "sac_ent_coef": "auto", "sac_learned": DIMENSIONS, "checkpoint_every": 1}


@dataclass
class TrainSummary:
    tests: int = 0  # of the whole run, resumed sessions included
    big_epochs: int = 0
    unique_tokens: int = 0
    interrupted: bool = False
    checkpoint: Path | None = None


class _StopTests(BaseCallback):
    """SAC: end the big epoch early when the run's test or time budget is spent."""

    def __init__(self, state: CampaignState):
        super().__init__()
        self.state = state

    def _on_step(self) -> bool:
        # a vectorized low level (several pipelines, higen.scale) may leave sub-envs idle in a step:
        # those are no tests, so SAC's step counter keeps counting tests only
        self.model.num_timesteps -= sum(bool(info.get("skipped")) for info in self.locals["infos"])
        return not self.state.exhausted()


class _EpochDone(BaseCallback):
    """PPO: after each big epoch, log and checkpoint; stop at the budget, never mid-rollout unless
    the budget ends there (a partial rollout is then not trained on)."""

    def __init__(self, trainer: "HierarchicalTrainer"):
        super().__init__()
        self.trainer = trainer
        self.in_rollout = 0

    def _on_rollout_start(self) -> None:
        self.in_rollout = 0

    def _on_step(self) -> bool:
        self.in_rollout += 1
        info = self.locals["infos"][0]
        if info.get("epoch") is None:  # the budget was already spent: nothing ran
            return False
        self.trainer.after_epoch(info["epoch"])
        return not (self.trainer.finished() and self.in_rollout < self.model.n_steps)


class PipelinedSAC(SAC):
    """SAC whose next action can be chosen one step ahead, so that the low-level env generates the
    next test while the current one runs (``CompilerFuzzEnv.choose_next``). ``choose_ahead`` samples
    it exactly as SB3's next ``_sample_action`` would (uniform before ``learning_starts``, the actor
    after), from the observation the env is about to return; that call then hands out the same
    action, so the replay buffer pairs each action with its own test's reward."""

    _ahead: tuple[np.ndarray, np.ndarray] | None = None

    def choose_ahead(self, observation: np.ndarray) -> np.ndarray:
        current = self._last_obs  # the observation of the transition SB3 is about to store
        self._last_obs = observation[None]
        try:  # SB3 counts this step only after the env returns: one more test is behind the threshold
            self._ahead = super()._sample_action(self.learning_starts - 1, self.action_noise, 1)
        finally:
            self._last_obs = current
        return self._ahead[0][0]

    def _sample_action(self, learning_starts: int, action_noise=None, n_envs: int = 1):
        if self._ahead is not None:
            chosen, self._ahead = self._ahead, None
            return chosen
        return super()._sample_action(learning_starts, action_noise, n_envs)


@contextmanager
def _interrupts_held() -> Iterator[list[int]]:
    """Hold Ctrl-C back (main thread only); yields the list of the signals that came meanwhile."""
    caught: list[int] = []
    try:
        previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    except ValueError:  # not the main thread
        yield caught
        return
    try:
        yield caught
    finally:
        signal.signal(signal.SIGINT, previous)


class HierarchicalTrainer:
    def __init__(self, engine: FuzzEngine, run_dir: Path, settings: AgentSettings, rewards: RewardConfig,
                 budget: Budget, base: GenConfig, log: RunLog | None = None,
                 context: dict[str, Any] | None = None):
        torch.set_num_threads(1)
        self.engine, self.run_dir, self.settings, self.log = engine, Path(run_dir), settings, log
        self.context = context or {}  # recorded in checkpoints (e.g. the command line), for resume
        self.decoder = ActionDecoder(engine.ops(), base)
        self.actions = PartialAction(self.decoder, settings.sac_learned, settings.seed)
        self.state = CampaignState(engine, rewards, settings.small_epochs, budget, settings.window)
        #: called after every test with its result and reward terms (logging, progress display)
        self.on_test: Callable[[TestResult, Terms], None] | None = None
        self.state.on_test = self._test_done
        if engine.workers > 1:  # one sub-env per pipeline (higen.scale.vecenv)
            from higen.scale.vecenv import FlatReplayBuffer, ParallelFuzzEnv

            self.low = ParallelFuzzEnv(self.state, self.actions, engine.workers)
            buffer = {"replay_buffer_class": FlatReplayBuffer}
        else:
            self.low, buffer = CompilerFuzzEnv(self.state, self.actions), {}
        self.high = HighLevelEnv(self.low, horizon=budget.big_epochs, run_epoch=self._low_epoch)
        policy = {"net_arch": list(settings.net_arch)}
        self.ppo = PPO("MlpPolicy", self.high, n_steps=settings.ppo_n_steps, batch_size=settings.ppo_n_steps,
                       n_epochs=settings.ppo_epochs, gamma=settings.ppo_gamma, ent_coef=settings.ppo_ent_coef,
                       policy_kwargs=policy, seed=settings.seed, device=settings.device, verbose=0)
        self.sac = PipelinedSAC("MlpPolicy", self.low, buffer_size=settings.sac_buffer_size,
                       learning_starts=settings.sac_learning_starts, batch_size=settings.sac_batch_size,
                       gamma=settings.sac_gamma, train_freq=1, gradient_steps=0, ent_coef=settings.sac_ent_coef,
                       policy_kwargs=policy, seed=settings.seed + 1, device=settings.device, verbose=0, **buffer)
        tb = self.run_dir / "tb"
        self.ppo.set_logger(configure(str(tb / "ppo_high"), ["tensorboard"]))
        self.sac.set_logger(configure(str(tb / "sac_low"), ["tensorboard"]))
        self.tb = configure(str(tb / "higen"), ["tensorboard"])
        self.low.while_generating = self._sac_update
        if isinstance(self.low, CompilerFuzzEnv):  # several pipelines overlap their tests already
            self.low.choose_next = self.sac.choose_ahead
        self._stop_tests = _StopTests(self.state)
        self.summary = TrainSummary()

    # -- the two levels -----------------------------------------------------------------------
    def _low_epoch(self) -> None:
        """One big epoch of SAC on the low-level env, starting from a fresh observation (the free
        dimensions just changed)."""
        if self.state.exhausted():
            return
        self.sac._last_obs = None  # SB3 then resets the env at the start of learn
        self.sac.learn(total_timesteps=self.settings.small_epochs, callback=self._stop_tests, log_interval=1,
                       reset_num_timesteps=False, progress_bar=False)

    def _sac_update(self) -> None:
        """SAC's gradient step, one per ``sac_train_every`` tests, done while the generator builds a
        test (SAC itself is built with ``gradient_steps=0``). With ``sac_train_every=1``: the same
        updates on the same replay data as SB3's ``gradient_steps=1``, but the action of test i+1 is
        chosen just before the update that test i's transition allows instead of just after (one
        update of lag). Called once per test (a vectorized low level calls it once per test in
        flight): it steps while SAC's update counter is behind the updates due, one per call."""
        sac, every = self.sac, self.settings.sac_train_every
        due = max(0, (sac.num_timesteps - sac.learning_starts + every - 1) // every)
        if sac._n_updates < due and sac.replay_buffer.size() > 0:
            sac.train(gradient_steps=1, batch_size=sac.batch_size)

    def _test_done(self, result: TestResult, terms: Terms) -> None:
        if self.on_test is not None:
            self.on_test(result, terms)

    def finished(self) -> bool:
        return self.state.big_epochs >= self.state.budget.big_epochs or self.state.exhausted()

    def after_epoch(self, summary: dict[str, Any]) -> None:
        summary = {**summary, "ppo_steps": self.ppo.num_timesteps, "sac_steps": self.sac.num_timesteps}
        if self.log is not None:
            self.log.write("big_epoch", **summary)
        step = self.state.big_epochs
        for key in ("validity", "bugs", "new_bugs", "new_signatures", "findings", "new_tokens", "unique_tokens", "tests_per_s",
                    "low_reward_mean"):
            self.tb.record(f"higen/{key}", summary[key])
        for key, value in summary["high_reward"].items():
            self.tb.record(f"higen/high_reward/{key}", value)
        self.tb.dump(step)
        if step % self.settings.checkpoint_every == 0:
            self.save("epoch")

    # -- running ------------------------------------------------------------------------------
    def train(self) -> TrainSummary:
        """Run until the budget is spent or Ctrl-C; a checkpoint is written at the end either way."""
        remaining = self.state.budget.big_epochs - self.state.big_epochs
        if self.state.tests == 0:  # resumable from the first test on
            self.save("start")
            self.state.began = time.perf_counter()  # campaign time: building the policies is start-up
        try:
            if remaining > 0 and not self.state.exhausted():
                self.ppo.learn(total_timesteps=remaining, callback=_EpochDone(self), log_interval=1,
                               reset_num_timesteps=False, progress_bar=False)
        except KeyboardInterrupt:
            self.summary.interrupted = True
        self.summary.checkpoint = self.save("interrupt" if self.summary.interrupted else "end")
        self.summary.tests, self.summary.big_epochs = self.state.tests, self.state.big_epochs
        self.summary.unique_tokens = len(self.state.tokens)
        return self.summary

    def save(self, reason: str) -> Path:
        tag = f"ckpt-{self.state.big_epochs:06d}-{self.state.tests:09d}"
        data = {"reason": reason, "context": self.context, "settings": self.settings.to_json(),
                **self.state.checkpoint_data(),
                "models": {"ppo_high": ckpt.model_counters(self.ppo), "sac_low": ckpt.model_counters(self.sac)},
                "rng": {"global": ckpt.global_rng_states(),
                        "low_env": ckpt.generator_state(self.low.np_random),
                        "high_env": ckpt.generator_state(self.high.np_random),
                        "low_actions": ckpt.generator_state(self.sac.action_space.np_random),
                        "uniform_blocks": ckpt.generator_state(self.actions.rng),
                        "high_actions": ckpt.generator_state(self.ppo.action_space.np_random)}}
        with _interrupts_held() as caught:
            path = ckpt.write_checkpoint(self.run_dir / "checkpoints", tag, {"ppo_high": self.ppo, "sac_low": self.sac},
                                         self.sac.replay_buffer, data)
        if caught:  # Ctrl-C while writing: the checkpoint is complete, now stop
            if reason == "epoch":
                raise KeyboardInterrupt
            self.summary.interrupted = True
        return path

    def resume(self, folder: Path, data: dict[str, Any], history: LogHistory | None = None) -> None:
        """Continue from checkpoint ``folder`` (its run_state.json already read into ``data``); with
        ``history``, also past the tests the run logged after it (their count and time; their tokens
        from the engine's coverage union, which the caller has resumed)."""
        self.state.restore(data["state"], history)
        for name, model in (("ppo_high", self.ppo), ("sac_low", self.sac)):
            ckpt.load_model_weights(model, folder / f"{name}.zip", data["models"][name])
        buffer = folder / "replay_buffer.npz"
        if buffer.is_file():
            ckpt.load_replay_buffer(self.sac.replay_buffer, buffer)
        # The models' construction queued their seeds for the envs' next reset: use them up, then
        # put every generator back where the checkpoint left it.
        for model in (self.ppo, self.sac):
            model.get_env().reset()
            model._last_obs = None
        rng = data["rng"]
        ckpt.set_global_rng_states(rng["global"])
        ckpt.set_generator_state(self.low.np_random, rng["low_env"])
        ckpt.set_generator_state(self.high.np_random, rng["high_env"])
        ckpt.set_generator_state(self.sac.action_space.np_random, rng["low_actions"])
        if "uniform_blocks" in rng:  # a checkpoint of a run whose SAC learned every dimension lacks it
            ckpt.set_generator_state(self.actions.rng, rng["uniform_blocks"])
        ckpt.set_generator_state(self.ppo.action_space.np_random, rng["high_actions"])
