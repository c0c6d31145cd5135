"""A pipeline: one generator worker and one set of backend workers that generate, run and judge one
test at a time. The driver (``higen.scale.engine.ParallelEngine``) keeps several busy; each is used
through a *handle*: ``LocalPipeline`` here (a thread of the driver process), ``RayPipeline`` in
``higen.scale.cluster`` (a Ray actor on some node). Both answer ``run(job)`` with a
``concurrent.futures.Future`` and turn its result into a :class:`Produced` with ``receive``.
"""

from __future__ import annotations

import math
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from higen.backends.pool import BackendPool
from higen.bugs.locate import Analyst, Identifier
from higen.coverage.manager import CoverageManager
from higen.engine import EngineSettings, execute_test, launch_workers, local_workers, wait_workers
from higen.execute import Execution
from higen.generation.client import Generator, GenResult
from higen.generation.config import GenConfig
from higen.support import learn_support


@dataclass
class Produced:
    """What a pipeline hands back for one test: the generated test (files in ``directory``) and,
    when it is valid, its outcomes and judgement."""

    generated: GenResult
    executed: Execution | None = None


@dataclass
class Job:
    """One test on its way through the driver: its index in the run, its config, its scratch folder."""

    index: int
    config: GenConfig
    directory: Path
    attempts: int = 0  # pipelines lost while running it
    deadline: float = math.inf  # time.monotonic() after which its pipeline counts as hung


class Pipeline:
    """A generator and a backend pool (new ones, or the engine's own) with the settings that judge."""

    def __init__(self, settings: EngineSettings, log_dir: Path | None = None, generator: Generator | None = None,
                 pool: BackendPool | None = None):
        self.settings = settings
        self.generator, self.pool = (generator, pool) if generator and pool else local_workers(settings, log_dir)
        # its own analyst (started on the first finding): pipelines judge in parallel threads
        self.analyst = Analyst(log_dir, settings.timeout_s, settings.memory_limit_mb)
        self.identifier = Identifier(self.pool, self.analyst, settings.tolerances, settings.nan_policy,
                                     settings.root_causes)

    def start(self, run_dir: Path, console: Console) -> None:
        """Start alone (a remote pipeline): its own coverage switches, support learned into ``run_dir``
        (cached per machine in ``$HIGEN_CACHE_DIR``, so pipelines of one machine probe once)."""
        coverage = CoverageManager(self.settings.coverage, None, [t.name for t in self.settings.plan.targets])
        coverage.configure(self.pool)
        launch_workers(self.generator, self.pool)
        self.settings.plan = wait_workers(self.generator, self.pool, self.settings.plan, console)
        if self.settings.learn_support:
            learn_support(self.generator, self.pool, run_dir)
        coverage.enable(self.pool)

    def produce(self, config: GenConfig, directory: Path) -> Produced:
        generated = self.generator.generate(config, directory)
        if not generated.valid:
            return Produced(generated)
        return Produced(generated, execute_test(self.pool, self.settings, generated.test, self.identifier))

    def describe(self) -> dict[str, Any]:
        return {"generator": self.generator.info, "targets": self.pool.describe()}

    def close(self) -> None:
        self.generator.close()
        self.pool.close()
        self.analyst.close()


class LocalPipeline:
    """Handle of a pipeline in this process: its tests run in a thread of their own (the work itself
    is in the worker processes; the thread waits on their pipes and judges)."""

    context: dict[str, Any] | None = None  # case metadata: None, the driver's own (same machine)
    deadline_s = math.inf  # the workers' own time limits apply

    def __init__(self, name: str, pipeline: Pipeline):
        self.name = name
        self.pipeline = pipeline
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"higen-{name}")

    def run(self, job: Job) -> Future:
        return self.executor.submit(self.pipeline.produce, job.config, job.directory)

    def receive(self, produced: Produced, directory: Path) -> Produced:
        return produced

    def lost(self, error: BaseException) -> bool:
        """Whether an exception means the pipeline was lost (never here: it is a bug, and raised)."""
        return False

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.pipeline.close()
