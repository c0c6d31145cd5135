"""Action decoding: a vector in [-1, 1]^k -> GenConfig, smoothly and monotonically.

The low-level policy (SAC) emits one continuous vector per test; the high-level policy (PPO) decides
which *dimensions* of the GenConfig that vector may change ("free" dimensions); every other
dimension keeps its default (the campaign's base GenConfig). Decoding never seeds a random
generator from the action: numbers are affine maps, sets are per-item scores, so a small change of
the action gives a small (or no) change of the config, which is what makes it learnable. The random
baseline (``higen.strategies``) decodes uniform-random actions with it, so RL and random differ only
in the policy.

Layout of the action vector, in order (one block per dimension):

======================  =====================  ===============================================
dimension               block size             decoding
======================  =====================  ===============================================
``ops``                 one score per operator  items with score > 0; none -> the best one
``dtypes``              one score per dtype     same rule
``ranks``               one score per rank      same rule
``max_nodes``           1                       affine onto [lo, hi], equal-width integer bins
``max_elems``           1                       affine onto log2 in [lo, hi], equal-width bins
``method``              one score per method    argmax (first on ties)
``vulnerable_ops``      1                       score > 0
``input_search``        1                       score > 0
======================  =====================  ===============================================
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Iterable, Sequence

import numpy as np

from higen.generation.config import DTYPES, MAX_NODES_RANGE, METHODS, RANKS, GenConfig

#: The dimensions the high level may free, in the order of its MultiBinary action.
DIMENSIONS = ("ops", "dtypes", "ranks", "max_nodes", "max_elems", "method", "vulnerable_ops", "input_search")
SET_DIMENSIONS = ("ops", "dtypes", "ranks")
THRESHOLD = 0.0


def free_names(free: Iterable[str] | np.ndarray | Sequence[int]) -> tuple[str, ...]:
    """Free dimensions as names, from names or from a 0/1 mask over DIMENSIONS."""
    items = list(free)
    if items and not isinstance(items[0], str):
        if len(items) != len(DIMENSIONS):
            raise ValueError(f"a dimension mask has {len(DIMENSIONS)} entries, not {len(items)}")
        return tuple(name for name, bit in zip(DIMENSIONS, items) if int(bit))
    unknown = set(items) - set(DIMENSIONS)
    if unknown:
        raise ValueError(f"unknown dimensions {sorted(unknown)}: choose from {', '.join(DIMENSIONS)}")
    return tuple(name for name in DIMENSIONS if name in items)


def dimension_mask(free: Iterable[str] | np.ndarray | Sequence[int]) -> np.ndarray:
    names = set(free_names(free))
    return np.array([name in names for name in DIMENSIONS], dtype=np.int8)


def _bin(value: float, low: int, high: int) -> int:
    """[-1, 1] -> {low, ..., high}: an affine map cut into equal-width bins (non-decreasing)."""
    unit = (float(value) + 1.0) / 2.0
    return min(high, low + int(np.floor(unit * (high - low + 1))))


def _chosen(items: Sequence, scores: np.ndarray) -> tuple:
    picked = tuple(item for item, score in zip(items, scores) if score > THRESHOLD)
    return picked or (items[int(np.argmax(scores))],)


def default_nodes_range(max_nodes: int) -> tuple[int, int]:
    """Around the typical size: [min(2, n), max(n, 2n - 2)], inside GenConfig's limits."""
    low = min(2, max_nodes)
    return low, min(MAX_NODES_RANGE[1], max(max_nodes, 2 * max_nodes - 2))


class ActionDecoder:
    """Maps an action vector and the free dimensions to a GenConfig (see the module doc)."""

    def __init__(self, ops: Sequence[str], base: GenConfig | None = None,
                 nodes_range: tuple[int, int] | None = None, elems_log2_range: tuple[int, int] = (8, 16)):
        if not ops:
            raise ValueError("the decoder needs the operator universe (engine.ops())")
        self.ops = tuple(sorted(ops))
        self.base = base or GenConfig()
        self.nodes_range = nodes_range or default_nodes_range(self.base.max_nodes)
        self.elems_log2_range = elems_log2_range
        sizes = {"ops": len(self.ops), "dtypes": len(DTYPES), "ranks": len(RANKS), "max_nodes": 1,
                 "max_elems": 1, "method": len(METHODS), "vulnerable_ops": 1, "input_search": 1}
        self.blocks: dict[str, slice] = {}
        start = 0
        for name in DIMENSIONS:
            self.blocks[name] = slice(start, start + sizes[name])
            start += sizes[name]
        self.size = start

    def decode(self, action: Sequence[float], free: Iterable[str] | np.ndarray, seed: int) -> GenConfig:
        """The GenConfig for ``action``; only ``free`` dimensions are read from it."""
        vector = np.clip(np.nan_to_num(np.asarray(action, dtype=np.float64).reshape(-1)), -1.0, 1.0)
        if vector.size != self.size:
            raise ValueError(f"action has {vector.size} entries, the decoder expects {self.size}")
        names = free_names(free)
        block = {name: vector[self.blocks[name]] for name in names}
        changes: dict[str, Any] = {}
        for name, items in (("ops", self.ops), ("dtypes", DTYPES), ("ranks", RANKS)):
            if name in block:
                changes[name] = _chosen(items, block[name])
        if "max_nodes" in block:
            changes["max_nodes"] = _bin(block["max_nodes"][0], *self.nodes_range)
        if "max_elems" in block:
            changes["max_elems"] = 1 << _bin(block["max_elems"][0], *self.elems_log2_range)
        if "method" in block:
            changes["method"] = METHODS[int(np.argmax(block["method"]))]
        for name in ("vulnerable_ops", "input_search"):
            if name in block:
                changes[name] = bool(block[name][0] > THRESHOLD)
        return replace(self.base, seed=int(seed), extra={"free": list(names)}, **changes)


#: The dimensions the low-level policy learns by default: those whose values changed the rate of
#: credible bugs in the analysis of the 10-minute campaigns (docs/rewards.md, "What SAC learns").
LEARNED = ("max_nodes", "method", "vulnerable_ops", "input_search")


class PartialAction:
    """A policy's action over the blocks of some dimensions (``learned``), completed into the
    decoder's full action vector: every other block is drawn uniformly in [-1, 1], exactly as the
    random baseline draws its whole vector, from this object's own generator (seeded). So the
    policy's action is small, and what it leaves to chance has the baseline's distribution. Same
    interface as the decoder (``size``, ``decode``): an environment takes either."""

    def __init__(self, decoder: ActionDecoder, learned: Iterable[str], seed: int):
        self.decoder = decoder
        self.learned = free_names(list(learned))
        if not self.learned:
            raise ValueError(f"the policy must learn at least one dimension of {', '.join(DIMENSIONS)}")
        self.positions = np.concatenate([np.arange(decoder.size)[decoder.blocks[name]] for name in self.learned])
        self.size = len(self.positions)
        self.rng = np.random.default_rng(seed)

    def full(self, action: Sequence[float]) -> np.ndarray:
        """The decoder's action vector: ``action`` in the learned blocks, uniform draws elsewhere (no
        draw at all when every dimension is learned)."""
        values = np.asarray(action, dtype=np.float64).reshape(-1)
        if values.size != self.size:
            raise ValueError(f"action has {values.size} entries, the policy learns {self.size}")
        if self.size == self.decoder.size:
            return values
        vector = self.rng.uniform(-1.0, 1.0, self.decoder.size)
        vector[self.positions] = values
        return vector

    def decode(self, action: Sequence[float], free: Iterable[str] | np.ndarray, seed: int) -> GenConfig:
        return self.decoder.decode(self.full(action), free, seed)


def describe_config(config: GenConfig) -> dict[str, Any]:
    """The decision a config carries: its seed and the values of its free dimensions (for logs)."""
    data = config.to_json()
    free = config.extra.get("free", [])
    return {"seed": config.seed, "free": list(free), **{name: data[name] for name in free}}
