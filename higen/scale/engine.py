"""Engines over several pipelines, with the engine interface (``higen.engine_api.FuzzEngine``), so
the campaign loop and the RL environments drive them as they drive the plain Engine.
``PipelineEngine`` is the engine's driver half (coverage union, bug store, counters) over pipeline
handles; ``ParallelEngine`` runs local pipelines (threads), ``higen.scale.cluster.RayEngine`` actors.

- ``submit`` queues a test; a free pipeline takes it at once, test ``i`` preferably pipeline
  ``(i - 1) mod N``. A test depends only on its config and seed (the generator worker seeds
  everything from it), so which generator builds which test does not matter.
- ``finish`` returns the oldest submitted test, in index order: coverage, the bug store, the
  counters and the rewards see the tests in the order of a serial run.
- A pipeline handle may report its pipeline *lost* (a Ray actor whose process or node died): the
  test is queued again, first in line, and re-run by another pipeline (at most ``MAX_ATTEMPTS`` runs;
  then it is an ``invalid`` test with reason ``lost: ...``). The lost pipeline comes back when its
  handle says so (a restarted actor), or is retired.
"""

from __future__ import annotations

import shutil
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, wait
from pathlib import Path
from typing import Any, Callable

from rich.console import Console

from higen.engine import (
    EngineDriver,
    EngineSettings,
    TestResult,
    launch_workers,
    local_workers,
    start_workers,
    wait_workers,
    worker_versions,
)
from higen.generation.client import GenResult
from higen.generation.config import GenConfig
from higen.run_dir import LogHistory
from higen.scale.pipeline import Job, LocalPipeline, Pipeline, Produced
from higen.workers import WorkerStartError

MAX_ATTEMPTS = 3  # runs of one test whose pipelines keep getting lost, before it counts as invalid
POLL_S = 1.0  # how often the driver looks at deadlines while it waits
IN_FLIGHT_PER_PIPELINE = 2  # tests a campaign keeps submitted per pipeline (one running, one waiting)


class PipelinesLost(WorkerStartError):
    """Every pipeline is gone (e.g. all nodes of a cluster died); reported in one line like a worker
    that cannot start."""


class PipelineEngine(EngineDriver):
    """The driver half over pipeline handles (``use``): ``submit`` queues a test for the next free
    pipeline, ``finish`` returns the tests in index order, a lost pipeline's test runs again. Where
    the pipelines are, and how they start, is the subclass's."""

    def __init__(self, settings: EngineSettings, run_dir: Path, console: Console | None = None, requested: int = 1):
        super().__init__(settings, run_dir, console)
        self.requested = requested  # pipelines asked for, until they are started
        self.pipelines: list[Any] = []  # handles (LocalPipeline, RayPipeline)
        self.lost_tests = 0  # test runs interrupted by a lost pipeline (each was queued again)
        self._idle: list[Any] = []
        self._queue: deque[Job] = deque()
        self._running: dict[Future, tuple[Job, Any]] = {}
        self._recovering: dict[Future, Any] = {}
        self._ready: dict[int, tuple[Job, Any, Produced]] = {}
        self._delivered = 0  # index of the last test ``finish`` returned

    @property
    def workers(self) -> int:
        return max(1, len(self.pipelines) or self.requested)

    @property
    def depth(self) -> int:
        return IN_FLIGHT_PER_PIPELINE * self.workers

    def use(self, handles: list[Any]) -> None:
        """Run tests on these pipeline handles (started); ``close`` closes them."""
        self.pipelines = list(handles)
        self._idle = list(self.pipelines)

    def close(self) -> None:
        for handle in self.pipelines:
            handle.close()
        super().close()

    def restore_counters(self, history: LogHistory) -> None:
        super().restore_counters(history)
        self._delivered = history.last_index  # the next test finish returns follows the logged ones

    # -- tests ---------------------------------------------------------------------------------
    def submit(self, config: GenConfig) -> None:
        """Queue a test; a free pipeline starts it at once."""
        self._submitted += 1
        self._queue.append(Job(self._submitted, config, self.work / f"t{self._submitted}"))
        self._dispatch()

    def finish(self, prefetch: GenConfig | None = None) -> TestResult:
        """The oldest submitted test, once done (``prefetch`` is queued first)."""
        if prefetch is not None:
            self.submit(prefetch)
        index = self._delivered + 1
        began = time.perf_counter()
        while index not in self._ready:
            self._wait()
        waited = time.perf_counter() - began
        job, handle, produced = self._ready.pop(index)
        try:
            result = self._conclude(index, produced.generated, produced.executed, handle.context)
        finally:
            shutil.rmtree(job.directory, ignore_errors=True)
        result.timings["gen_s"] = produced.generated.gen_s
        result.timings["gen_wait_s"] = waited
        self._delivered += 1
        self._count(result)
        return result

    def _dispatch(self) -> None:
        while self._queue and self._idle:
            job = self._queue.popleft()
            own = self.pipelines[(job.index - 1) % len(self.pipelines)]
            handle = own if own in self._idle else min(self._idle, key=self.pipelines.index)
            self._idle.remove(handle)
            shutil.rmtree(job.directory, ignore_errors=True)  # a re-run starts clean
            job.deadline = time.monotonic() + handle.deadline_s
            self._running[handle.run(job)] = (job, handle)

    def _wait(self) -> None:
        if not self._running and not self._recovering:
            raise PipelinesLost(f"every pipeline is lost ({len(self.pipelines)} started); "
                                f"{len(self._queue)} tests could not run")
        done, _ = wait([*self._running, *self._recovering], timeout=POLL_S, return_when=FIRST_COMPLETED)
        for future in done:
            if future in self._recovering:
                self._recovered(future)
            else:
                self._completed(future)
        now = time.monotonic()
        for job, handle in list(self._running.values()):
            if now > job.deadline:  # hung (e.g. its node is unreachable): make it fail, then re-run
                job.deadline = float("inf")
                self.console.print(f"[yellow]pipeline {handle.name}: test {job.index} is overdue; "
                                   "restarting the pipeline[/yellow]")
                handle.abandon()
        self._dispatch()

    def _completed(self, future: Future) -> None:
        job, handle = self._running.pop(future)
        try:
            raw = future.result()
        except Exception as error:
            if not handle.lost(error):
                raise
            self._lose(job, handle, error)
            return
        self._ready[job.index] = (job, handle, handle.receive(raw, job.directory))
        self._idle.append(handle)

    def _lose(self, job: Job, handle: Any, error: BaseException) -> None:
        self.lost_tests += 1
        job.attempts += 1
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if job.attempts >= MAX_ATTEMPTS:
            generated = GenResult(job.config, None, f"lost: {job.attempts} pipelines died running it ({reason})")
            self._ready[job.index] = (job, handle, Produced(generated))
        else:
            self._queue.appendleft(job)
        self.console.print(f"[yellow]pipeline {handle.name} lost ({reason}); test {job.index} "
                           f"{'given up' if job.attempts >= MAX_ATTEMPTS else 'queued again'}[/yellow]")
        self._recovering[handle.recover()] = handle

    def _recovered(self, future: Future) -> None:
        handle = self._recovering.pop(future)
        if future.exception() is None and future.result():
            self.console.print(f"[green]pipeline {handle.name} is back[/green]")
            self._idle.append(handle)
        else:
            self.console.print(f"[yellow]pipeline {handle.name} retired: it did not come back[/yellow]")


class ParallelEngine(PipelineEngine):
    """``workers`` local pipelines, each a generator and a set of backend workers driven by a thread
    of this process. Pipeline 0's workers log to ``workers/`` (as the plain Engine's) and learn op
    support; pipeline k's log to ``workers/p<k>/`` and take the same plan and allowed operators."""

    def __init__(self, settings: EngineSettings, run_dir: Path, console: Console | None = None, workers: int = 2):
        super().__init__(settings, run_dir, console, requested=workers)
        logs = self.run_dir / "workers"
        own = Pipeline(settings, logs / "p0", *local_workers(settings, logs))
        self.local = [own, *(Pipeline(settings, logs / f"p{k}") for k in range(1, workers))]
        for pipeline in self.local:
            self.coverage.configure(pipeline.pool)

    def start(self, support_progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
        """Launch every pipeline's workers at once, start pipeline 0's (and learn support with them),
        then wait for the others."""
        own, *others = self.local
        for pipeline in others:
            launch_workers(pipeline.generator, pipeline.pool)
        start_workers(self, own.generator, own.pool, support_progress)
        try:
            for pipeline in others:
                wait_workers(pipeline.generator, pipeline.pool, self.settings.plan, self.console)
                pipeline.generator.allowed_path = own.generator.allowed_path
                self.coverage.enable(pipeline.pool)
        except WorkerStartError:
            self.close()
            raise
        self.use([LocalPipeline(f"p{k}", p) for k, p in enumerate(self.local)])
        return self.versions()

    def ops(self) -> list[str]:
        return list(self.local[0].generator.info["ops"])

    def versions(self) -> dict[str, Any]:
        return worker_versions(self.local[0].generator, self.local[0].pool)

    def close(self) -> None:
        for pipeline in self.local:  # also those a failed start left without a handle
            self.coverage.flush(pipeline.pool)
            pipeline.close()
        super().close()
