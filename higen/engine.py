"""The engine: generator -> backend pool -> oracle -> bug store, for one test at a time.

It composes the parts and owns their processes; it knows nothing about strategies or RL. Callers
may ``submit`` the next config before calling ``finish`` on the current one, so NNSmith builds
test i+1 (one core) while the backends run test i (the other). What callers may ask of an engine
is ``higen.engine_api.FuzzEngine``; ``EngineDriver`` is the half every engine shares (coverage,
bug store, counters), ``Engine`` the one that runs tests on workers of its own (more pipelines:
``higen.scale``).
"""

from __future__ import annotations

import shutil
import time
from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Self

from rich.console import Console

from higen import __version__
from higen.backends.base import Outcome
from higen.backends.pool import BackendPool
from higen.bugs.locate import Analyst, Identifier
from higen.bugs.background import BackgroundReducer
from higen.bugs.store import BugStore, Recorded, cause_key
from higen.coverage.manager import CoverageManager, CoverageSettings
from higen.execute import Execution, execute
from higen.generation.client import GEN_TIMEOUT_S, Generator, GenResult
from higen.generation.config import GenConfig
from higen.modes import Plan
from higen.numerics.stats import NumericsRecorder
from higen.run_dir import LogHistory
from higen.oracle import Finding, Judgement, Tolerance, Verdict
from higen.support import learn_support
from higen.tensors import scratch_dir
from higen.testcase import TestCase
from higen.workers import DEFAULT_MEMORY_LIMIT_MB, DEFAULT_RECYCLE_AFTER, WorkerStartError


@dataclass
class EngineSettings:
    plan: Plan
    timeout_s: float = 60.0
    memory_limit_mb: int = DEFAULT_MEMORY_LIMIT_MB
    recycle_after: int = DEFAULT_RECYCLE_AFTER  # backend worker answers before a planned restart (0: never)
    gen_timeout_s: float = GEN_TIMEOUT_S
    #: target name -> seconds per test for that target instead of ``timeout_s`` (--tvm-timeout); every
    #: engine's backend pools (local or remote) take them from here
    timeouts_by_target: dict[str, float] = field(default_factory=dict)
    tolerances: dict[str, Tolerance] = field(default_factory=dict)
    nan_policy: str = "skip-unstable"
    examples_per_signature: int = 1
    learn_support: bool = True
    coverage: CoverageSettings | None = None  # None: structure coverage only (see higen.coverage)
    numerics: bool = False  # per-op NaN/Inf/overflow counts to numerics.jsonl (one more run per test)
    root_causes: bool = True  # localize every finding to its root cause (higen.bugs.locate); off: signatures only
    reduce: str = "auto"  # auto: reduce the first case of each new credible root cause in the background; off
    reduce_budget_s: float = 120.0  # seconds one background reduction may search


@dataclass
class TestResult:
    index: int
    config: GenConfig
    verdict: Verdict
    reason: str = ""  # why invalid
    findings: list[Finding] = field(default_factory=list)
    new_signatures: list[str] = field(default_factory=list)
    new_bugs: list[str] = field(default_factory=list)  # credible root causes new to the run root
    new_noise: list[str] = field(default_factory=list)  # root causes of noise new to the run root
    bugs: list[str] = field(default_factory=list)  # the test's credible root causes, new or not
    case: str | None = None
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    tokens: list[str] = field(default_factory=list)
    n_nodes: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    coverage_new: dict[str, int] = field(default_factory=dict)  # collector -> new features (docs/coverage.md)

    @property
    def valid(self) -> bool:
        return self.verdict not in (Verdict.INVALID, Verdict.UNSUPPORTED)

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "verdict": str(self.verdict), "reason": self.reason,
                "seed": self.config.seed, "method": self.config.method, "n_nodes": self.n_nodes,
                "findings": [f.signature for f in self.findings], "new": len(self.new_signatures),
                "root_causes": [(f.root_cause or {}).get("key", f.signature) for f in self.findings],
                "noise": [bool((f.root_cause or {}).get("noise")) for f in self.findings],
                "new_bugs": self.new_bugs, "new_noise": len(self.new_noise),
                "case": self.case, "timings": {k: round(v, 5) for k, v in self.timings.items()},
                "outcomes": {t: o.status for t, o in self.outcomes.items()}, "coverage_new": self.coverage_new}


class EngineDriver(ABC):
    """The half of a test every engine does in this process, whatever ran it (``higen.engine_api``):
    the coverage union, the bug store (with the analyst that writes a saved case's extras), background
    reduction, the counters and the test indices. ``_conclude`` books a test that a pipeline generated,
    ran and judged; where tests run is each engine's own (``Engine``: its own workers; several
    pipelines: ``higen.scale``)."""

    def __init__(self, settings: EngineSettings, run_dir: Path, console: Console | None = None):
        self.settings = settings
        self.run_dir = Path(run_dir)
        self.console = console or Console(stderr=True)
        logs = self.run_dir / "workers"
        self.coverage = CoverageManager(settings.coverage, self.run_dir, [t.name for t in settings.plan.targets])
        self.analyst = Analyst(logs, settings.timeout_s, settings.memory_limit_mb)
        self.store = BugStore(self.run_dir / "bug_cases", settings.examples_per_signature,
                              write_extras=self.analyst.write_extras)
        self.reducer = BackgroundReducer(logs, settings.reduce_budget_s, settings.timeout_s, settings.memory_limit_mb) \
            if settings.reduce == "auto" else None
        self.work = scratch_dir("higen-tests-")
        self.verdicts: Counter[str] = Counter()
        self.signatures: set[str] = set()
        self.bugs: set[str] = set()  # credible root causes seen by this engine
        self.noise: set[str] = set()  # root causes of noise seen by this engine
        self.aliases: set[str] = set()  # root causes whose reduction showed them to be an earlier one
        self.tests_done = 0
        self._submitted = 0

    @abstractmethod
    def versions(self) -> dict[str, Any]:
        """HiGen's, NNSmith's, PyTorch's and every target's version, as the started workers report them."""

    @abstractmethod
    def submit(self, config: GenConfig) -> None:
        """Start a test; it is run, judged and recorded by :meth:`finish`."""

    @abstractmethod
    def finish(self, prefetch: GenConfig | None = None) -> TestResult:
        """The oldest submitted test, done and recorded; ``prefetch``: submit the next one meanwhile."""

    def close(self) -> None:
        self.analyst.close()
        if self.reducer:
            self.reducer.close()
        self.coverage.close()
        shutil.rmtree(self.work, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def run_one(self, config: GenConfig) -> TestResult:
        self.submit(config)
        return self.finish()

    def restore_counters(self, history: LogHistory) -> None:
        """Continue a resumed run's counters and test indices (from its training.log), and the root
        causes that background reductions showed to be aliases (from root_causes.json)."""
        self.tests_done, self._submitted = history.tests, history.last_index
        self.verdicts, self.signatures = Counter(history.verdicts), set(history.signatures)
        self.aliases = {key for key, entry in self.store.causes.load().items() if entry.get("alias_of")}
        self.bugs, self.noise = set(history.bugs) - self.aliases, set(history.noise)

    def _count(self, result: TestResult) -> None:
        self.tests_done += 1
        self.verdicts[str(result.verdict)] += 1
        self.signatures.update(f.signature for f in result.findings)
        self.bugs.update(key for key in result.bugs if key not in self.aliases)
        self.noise.update((f.root_cause or {}).get("key", f.signature) for f in result.findings
                          if (f.root_cause or {}).get("noise"))

    def _reduce_in_background(self, judgement: Judgement, stored: Recorded) -> None:
        """Queue the new credible root causes' first case; book the reductions that finished."""
        if self.reducer is None:
            return
        for job, summary in self.reducer.poll():
            if self.store.note_reduction(job.key, summary):
                self.aliases.add(job.key)  # an alias of an earlier root cause: one defect
                self.bugs.discard(job.key)
        for key in stored.new_bugs if stored.case else ():
            finding = next(f for f in judgement.findings if cause_key(f) == key)
            self.reducer.submit(self.store.root / stored.case, finding.signature, key)

    def case_context(self, versions: dict[str, Any] | None = None, plan: Plan | None = None) -> dict[str, Any]:
        """What a saved case records about the run (versions of the workers that ran it, the oracle)."""
        plan = plan or self.settings.plan
        return {"versions": versions or self.versions(), "mode": plan.mode,
                "oracle": {"pairs": plan.pairs, "nan_policy": self.settings.nan_policy,
                           "tolerances": {k: vars(v) for k, v in self.settings.tolerances.items()}}}

    def _conclude(self, index: int, generated: GenResult, executed: Execution | None,
                  context: dict[str, Any] | None = None) -> TestResult:
        """This process's part of a test (a pipeline did the rest): coverage, numerics, the bug store."""
        if executed is None:
            return TestResult(index, generated.config, Verdict.INVALID, reason=generated.reason,
                              coverage_new=self.coverage.observe(index, []))
        test, judgement, outcomes = generated.test, executed.judgement, executed.outcomes
        began = time.perf_counter()
        coverage_new = self.coverage.observe(index, test.tokens, outcomes)
        covered = time.perf_counter()
        self._record_numerics(index, test, outcomes)
        recorded = time.perf_counter()
        stored = self.store.record(test, judgement, outcomes, context or self.case_context()) \
            if judgement.findings else Recorded()
        self._reduce_in_background(judgement, stored)
        timings = {**executed.timings, "coverage_s": covered - began, "numerics_s": recorded - covered,
                   "store_s": time.perf_counter() - recorded}
        timings.update({f"{name}_s": o.compile_s + o.run_s for name, o in outcomes.items()})
        return TestResult(index, test.config, judgement.verdict, findings=judgement.findings,
                          new_signatures=stored.new_signatures, new_bugs=stored.new_bugs, new_noise=stored.new_noise,
                          bugs=stored.bugs, case=stored.case, outcomes=outcomes, tokens=test.tokens,
                          n_nodes=test.n_nodes, timings=timings, coverage_new=coverage_new)

    def _record_numerics(self, index: int, test: TestCase, outcomes: dict[str, Outcome]) -> None:
        """Per-op numerics of a judged test (``--record-numerics``): only an engine with workers of
        its own runs a test again for them (``Engine``); several pipelines refuse the flag."""


class Engine(EngineDriver):
    """One pipeline of its own in this process: a generator worker and a backend pool (one worker per
    target). ``finish`` collects test i, submits test i+1 to the generator (``prefetch``) and only then
    runs test i on the backends, so generation and execution overlap."""

    #: generator + backend worker sets, and tests a campaign keeps in flight (more in higen.scale)
    workers = 1
    depth = 1

    def __init__(self, settings: EngineSettings, run_dir: Path, console: Console | None = None):
        super().__init__(settings, run_dir, console)
        self.generator, self.pool = local_workers(settings, self.run_dir / "workers")
        self.coverage.configure(self.pool)
        self.identifier = Identifier(self.pool, self.analyst, settings.tolerances, settings.nan_policy,
                                     settings.root_causes)
        self.numerics = NumericsRecorder(self.run_dir) if settings.numerics else None
        self._pending: tuple[int, Path] | None = None

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self, support_progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
        """Start every worker in parallel, drop absent optional (GPU) targets with a plain warning,
        then learn what the targets support. Raises WorkerStartError for a required target."""
        start_workers(self, self.generator, self.pool, support_progress)
        return self.versions()

    def ops(self) -> list[str]:
        """The operator universe of the generator (NNSmith's catalogue)."""
        return list(self.generator.info["ops"])

    def versions(self) -> dict[str, Any]:
        return worker_versions(self.generator, self.pool)

    def close(self) -> None:
        self.generator.close()
        self.coverage.flush(self.pool)
        self.pool.close()
        if self.numerics:
            self.numerics.close()
        super().close()

    # -- tests ---------------------------------------------------------------------------------
    def submit(self, config: GenConfig) -> None:
        """Start generating a test; its execution happens in :meth:`finish`."""
        self._submitted += 1
        index = self._submitted
        directory = self.work / f"t{index}"
        self.generator.submit(config, directory)
        self._pending = (index, directory)

    def finish(self, prefetch: GenConfig | None = None) -> TestResult:
        """Complete the submitted test; with ``prefetch``, start generating the next one meanwhile."""
        index, directory = self._pending
        began = time.perf_counter()
        generated = self.generator.collect()
        waited = time.perf_counter() - began
        self._pending = None
        if prefetch is not None:
            self.submit(prefetch)
        try:
            executed = execute_test(self.pool, self.settings, generated.test, self.identifier) if generated.valid else None
            result = self._conclude(index, generated, executed)
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        result.timings["gen_s"] = generated.gen_s
        result.timings["gen_wait_s"] = waited
        self._count(result)
        return result

    def _record_numerics(self, index: int, test: TestCase, outcomes: dict[str, Outcome]) -> None:
        if self.numerics:
            self.numerics.record(self.pool, index, test, outcomes)


def execute_test(pool: BackendPool, settings: EngineSettings, test: TestCase,
                 identifier: Identifier | None = None) -> Execution:
    """The part of a test that a pipeline does (here the engine's own workers; several pipelines in
    ``higen.scale``): ``test`` on every target of ``pool``, with error-maximizing inputs when its
    config asks (docs/numerics.md), judged with the settings' oracle, and every finding given its
    root cause (with an ``identifier``; its workers bound the time it takes)."""
    maximize = None
    if test.config.inputs == "maximize":
        from higen.numerics.maxfuzz import maximize_test

        maximize = partial(maximize_test, pool, settings.plan, test)
    return execute(pool, test, test.directory, pairs=settings.plan.pairs, tolerances=settings.tolerances,
                   nan_policy=settings.nan_policy, reference=test.reference_path, identifier=identifier,
                   revise=maximize)


def worker_versions(generator: Generator, pool: BackendPool) -> dict[str, Any]:
    """HiGen's, NNSmith's, PyTorch's and every target's version, as the started workers report them."""
    info = generator.info
    return {"higen": __version__, "nnsmith": info.get("nnsmith_version"), "torch": info.get("torch_version"),
            "targets": {name: {k: v for k, v in i.items() if k != "ready"} for name, i in pool.describe().items()}}


def local_workers(settings: EngineSettings, log_dir: Path) -> tuple[Generator, BackendPool]:
    """A generator and a backend pool (one worker per target of the plan) under the settings' limits,
    per-target timeouts included; not started yet."""
    return (Generator(log_dir, settings.gen_timeout_s, settings.memory_limit_mb),
            BackendPool(settings.plan.targets, log_dir, settings.timeout_s, settings.memory_limit_mb,
                        recycle_after=settings.recycle_after, timeouts_by_target=settings.timeouts_by_target))


def start_workers(engine: EngineDriver, generator: Generator, pool: BackendPool,
                  support_progress: Callable[[int, int], None] | None = None) -> None:
    """Start ``engine``'s own generator and backend workers and its analyst in parallel; an absent
    optional (GPU) target is dropped from the engine's plan with a plain warning. Then learn what the
    targets support and switch the coverage collectors on. A required target that cannot start closes
    the engine and raises WorkerStartError."""
    launch_workers(generator, pool)
    engine.analyst.launch()
    try:
        engine.settings.plan = wait_workers(generator, pool, engine.settings.plan, engine.console)
        engine.analyst.wait_ready()
    except WorkerStartError:
        engine.close()
        raise
    if engine.settings.learn_support:
        learn_support(generator, pool, engine.run_dir, support_progress)
    engine.coverage.enable(pool)


def launch_workers(generator: Generator, pool: BackendPool) -> None:
    """Start a generator and its backend workers without waiting (their imports overlap)."""
    generator.launch()
    for worker in pool.workers.values():
        worker.launch()


def wait_workers(generator: Generator, pool: BackendPool, plan: Plan, console: Console) -> Plan:
    """Wait for launched workers. An absent optional (GPU) target is dropped from ``pool`` with a plain
    warning, one no longer in ``plan`` silently. Returns the plan without the dropped targets; raises
    WorkerStartError for a required target."""
    for name, worker in list(pool.workers.items()):
        if any(t.name == name for t in plan.targets):
            try:
                worker.wait_ready()
                continue
            except WorkerStartError as error:
                if name not in plan.optional:
                    raise
                console.print(f"[yellow]skipping {name}: {error}[/yellow]")
                plan = plan.without(name)
        pool.workers.pop(name).stop()
        pool.targets = [t for t in pool.targets if t.name != name]
    generator.wait_ready()
    return plan
