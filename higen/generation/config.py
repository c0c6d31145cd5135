"""GenConfig: every knob of one generated test, as plain data (JSON in, JSON out)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from higen.errors import UserError

METHODS = ("symbolic", "symbolic-cinit", "concolic", "single-io")
DTYPES = ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool")
RANKS = (0, 1, 2, 3, 4, 5)
MAX_NODES_RANGE = (1, 64)
MAX_ELEMS_RANGE = (1, 1 << 20)
#: How inputs are chosen: NNSmith's gradient search, plain random values, or boundary values (see
#: higen.numerics.edge), or gradient inputs then a short error-maximizing search in the backend workers
#: (higen.numerics.maxfuzz). ``input_search=False`` turns "gradient" into "random".
INPUT_STRATEGIES = ("gradient", "random", "edge", "maximize")


class ConfigError(UserError, ValueError):
    """A GenConfig value is out of range; the message names the field and what is allowed."""


@dataclass(frozen=True)
class GenConfig:
    """What NNSmith is asked to build.

    ``ops`` empty means every operator the targets support. ``method`` ``single-io`` builds a
    symbolic-cinit graph and keeps one input (the others become weights) and one output.
    """

    ops: tuple[str, ...] = ()
    dtypes: tuple[str, ...] = ("float32", "float64", "int32", "int64", "bool")
    ranks: tuple[int, ...] = RANKS
    max_nodes: int = 10
    max_elems: int = 1 << 16
    method: str = "symbolic-cinit"
    vulnerable_ops: bool = False
    input_search: bool = True
    inputs: str = "gradient"
    z3_timeout_ms: int = 10_000
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"method {self.method!r} unknown: choose from {', '.join(METHODS)}")
        bad = [d for d in self.dtypes if d not in DTYPES]
        if bad or not self.dtypes:
            raise ConfigError(f"dtypes {bad or '(empty)'} invalid: choose from {', '.join(DTYPES)}")
        if not self.ranks or any(r not in RANKS for r in self.ranks):
            raise ConfigError(f"ranks {self.ranks} invalid: choose from {RANKS}")
        if not MAX_NODES_RANGE[0] <= self.max_nodes <= MAX_NODES_RANGE[1]:
            raise ConfigError(f"max_nodes {self.max_nodes} outside {MAX_NODES_RANGE}")
        if not MAX_ELEMS_RANGE[0] <= self.max_elems <= MAX_ELEMS_RANGE[1]:
            raise ConfigError(f"max_elems {self.max_elems} outside {MAX_ELEMS_RANGE}")
        if self.z3_timeout_ms <= 0:
            raise ConfigError("z3_timeout_ms must be positive")
        if self.inputs not in INPUT_STRATEGIES:
            raise ConfigError(f"inputs {self.inputs!r} unknown: choose from {', '.join(INPUT_STRATEGIES)}")

    @property
    def input_strategy(self) -> str:
        """The inputs actually used: ``inputs``, except that gradient without input search is random."""
        return "random" if self.inputs == "gradient" and not self.input_search else self.inputs

    def with_seed(self, seed: int) -> "GenConfig":
        return replace(self, seed=seed)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["ops"], data["dtypes"], data["ranks"] = list(self.ops), list(self.dtypes), list(self.ranks)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "GenConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown GenConfig fields {sorted(unknown)}")
        values = dict(data)
        for key in ("ops", "dtypes", "ranks"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)
