"""The generation timeout follows the measured generation time: a multiple of the median of the
recent generation times, between a floor and a ceiling. A test normally generates in 10-150 ms, but
NNSmith occasionally hangs (z3 or the input search) for minutes; a fixed 30 s limit let one hang
cost 30 s (at 5 nodes, 80% of a run's time). A test that overruns the limit is killed and logged as
an invalid test with reason ``generator-timeout`` (an NNSmith finding of its own, replayable with
``higen regenerate``)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class GenTimeout:
    """``multiple`` x the median of the last ``window`` generation times (answered requests, valid or
    not), clamped to [``floor_s``, ``ceiling_s``]; the ceiling until ``min_samples`` times are known.
    The floor leaves z3 room on a legitimately hard config; the ceiling is ``EngineSettings.gen_timeout_s``."""

    multiple: float = 20.0
    floor_s: float = 5.0
    ceiling_s: float = 30.0
    window: int = 50
    min_samples: int = 10

    def limit(self, recent: Sequence[float]) -> float:
        """The time limit for the next test, given the latest generation times (oldest first)."""
        recent = list(recent)[-self.window:] if self.window > 0 else []
        if len(recent) < self.min_samples or not recent:
            return self.ceiling_s
        return min(self.ceiling_s, max(self.floor_s, self.multiple * statistics.median(recent)))
