"""Strategies propose the next GenConfig. ``random`` is the uniform baseline the RL must beat."""

from __future__ import annotations

import random
from typing import Protocol

from higen.generation.config import DTYPES, METHODS, RANKS, GenConfig


class Strategy(Protocol):
    def propose(self) -> GenConfig: ...


class RandomStrategy:
    """Every dimension drawn uniformly at random, each test; seeded, so a run is reproducible."""

    def __init__(self, seed: int, ops: list[str], base: GenConfig | None = None):
        self.rng = random.Random(seed)
        self.ops = sorted(ops)
        self.base = base or GenConfig()

    def _subset(self, items) -> tuple:
        chosen = tuple(item for item in items if self.rng.random() < 0.5)
        return chosen or (self.rng.choice(list(items)),)

    def propose(self) -> GenConfig:
        rng = self.rng
        return GenConfig(
            ops=() if rng.random() < 0.5 else self._subset(self.ops),
            dtypes=self._subset(DTYPES),
            ranks=self._subset(RANKS),
            max_nodes=rng.randint(2, max(2, 2 * self.base.max_nodes - 2)),
            max_elems=1 << rng.randint(8, 16),
            method=rng.choice(METHODS),
            vulnerable_ops=rng.random() < 0.5,
            input_search=rng.random() < 0.5,
            z3_timeout_ms=self.base.z3_timeout_ms,
            seed=rng.getrandbits(31),
        )
