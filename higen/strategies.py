"""Strategies propose the next GenConfig. ``random`` is the uniform baseline the RL must beat;
``nnsmith-default`` is NNSmith's own default configuration, only the seed changing (the RL itself is
``higen.agents.trainer``: its configs depend on each result, so it drives the engine itself)."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from higen.generation.decoder import DIMENSIONS, ActionDecoder
from higen.generation.config import GenConfig


class Strategy(Protocol):
    """What ``higen.campaign.run_campaign`` (and its resume) asks of a strategy."""

    def propose(self) -> GenConfig: ...

    def state(self) -> dict[str, Any]: ...

    def restore(self, state: dict[str, Any]) -> None: ...

    def skip(self, proposals: int) -> None: ...


class RandomStrategy:
    """The baseline: the RL's own decoder driven by a uniform-random policy, so RL and random differ
    only in the policy. Each big epoch frees a random set of dimensions (each with probability 1/2,
    like an untrained PPO); each test decodes a uniform random action in [-1, 1]^k. Seeded."""

    def __init__(self, seed: int, ops: list[str], base: GenConfig | None = None, small_epochs: int = 20):
        self.rng = np.random.default_rng(seed)
        self.decoder = ActionDecoder(ops, base)
        self.small_epochs = small_epochs
        self.free = np.zeros(len(DIMENSIONS), dtype=np.int8)
        self.proposed = 0

    def propose(self) -> GenConfig:
        if self.proposed % self.small_epochs == 0:
            self.free = self.rng.integers(0, 2, len(DIMENSIONS)).astype(np.int8)
        self.proposed += 1
        action = self.rng.uniform(-1.0, 1.0, self.decoder.size)
        return self.decoder.decode(action, self.free, seed=int(self.rng.integers(0, 2**31 - 1)))

    def state(self) -> dict[str, Any]:
        """Everything the next proposals depend on, as JSON (checkpointed; see ``restore``)."""
        return {"proposed": self.proposed, "free": self.free.tolist(), "rng": self.rng.bit_generator.state}

    def restore(self, state: dict[str, Any]) -> None:
        self.proposed = int(state["proposed"])
        self.free = np.array(state["free"], dtype=np.int8)
        self.rng.bit_generator.state = state["rng"]

    def skip(self, proposals: int) -> None:
        """Draw ``proposals`` configs and drop them: the state after tests that ran after a checkpoint."""
        for _ in range(proposals):
            self.propose()


class DefaultStrategy(RandomStrategy):
    """NNSmith's default kind of test through HiGen's engine: no dimension is ever free, so every
    test is the base GenConfig (all supported operators, default dtypes, ranks and sizes,
    symbolic-cinit, input search on) with a fresh seed. The second baseline of the real-bug
    benchmark: what HiGen's engine adds without any steering."""

    def propose(self) -> GenConfig:
        self.proposed += 1
        action = np.zeros(self.decoder.size)
        return self.decoder.decode(action, self.free, seed=int(self.rng.integers(0, 2**31 - 1)))


#: --strategy values that ``higen.campaign.run_campaign`` drives (rl drives the engine itself)
STRATEGIES = {"random": RandomStrategy, "nnsmith-default": DefaultStrategy}
