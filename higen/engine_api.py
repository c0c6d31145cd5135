"""The engine interface: what the campaign loop, the RL trainer and the command line may ask of an
engine, whichever runs the tests: ``higen.engine.Engine`` (workers of its own),
``higen.scale.engine.ParallelEngine`` (several local pipelines) or ``higen.scale.cluster.RayEngine``
(pipelines as Ray actors on a cluster).

A test goes in with ``submit`` and comes back, run, judged and recorded, from ``finish``, in
submission order. Callers never reach into an engine's generator or backend pools (a Ray engine has
none in this process): the operator universe is ``ops()``, the limits (per-target timeouts included)
are ``settings``. The three share the driver half, ``higen.engine.EngineDriver`` (coverage union, bug
store, counters), and nothing else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Protocol, runtime_checkable

if TYPE_CHECKING:
    from collections import Counter

    from higen.coverage.manager import CoverageManager
    from higen.engine import EngineSettings, TestResult
    from higen.generation.config import GenConfig
    from higen.modes import Plan
    from higen.run_dir import LogHistory


@runtime_checkable
class FuzzEngine(Protocol):
    """An engine as its callers see it (``isinstance`` checks the names only)."""

    settings: EngineSettings  # plan (targets that could not start dropped), limits, per-target timeouts, oracle
    coverage: CoverageManager  # the run's coverage union, structure tokens included
    tests_done: int
    verdicts: Counter[str]
    signatures: set[str]
    bugs: set[str]  # credible root causes seen
    noise: set[str]  # root causes of noise seen

    @property
    def workers(self) -> int:
        """Pipelines running tests at once (1: the plain Engine)."""

    @property
    def depth(self) -> int:
        """Tests a campaign keeps submitted (in flight) at once."""

    def start(self, support_progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
        """Start every worker and learn op support; returns ``versions()``. Raises WorkerStartError."""

    def close(self) -> None:
        """Stop every worker; the bug store and the coverage files stay."""

    def __enter__(self) -> FuzzEngine: ...

    def __exit__(self, *exc: object) -> None: ...

    def ops(self) -> list[str]:
        """The operator universe the generators draw from (the decoder's ``ops``); after ``start``."""

    def versions(self) -> dict[str, Any]:
        """HiGen's, NNSmith's, PyTorch's and every target's version (per pipeline on a cluster)."""

    def case_context(self, versions: dict[str, Any] | None = None, plan: Plan | None = None) -> dict[str, Any]:
        """What a saved case records about the run (versions of the workers that ran it, the oracle)."""

    def submit(self, config: GenConfig) -> None:
        """Start a test; ``finish`` returns it."""

    def finish(self, prefetch: GenConfig | None = None) -> TestResult:
        """The oldest submitted test, run, judged and recorded; ``prefetch``: submit it meanwhile."""

    def run_one(self, config: GenConfig) -> TestResult:
        """``submit`` then ``finish``."""

    def restore_counters(self, history: LogHistory) -> None:
        """Continue a resumed run's counters and test indices from its ``training.log``."""
