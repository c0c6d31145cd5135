"""Scaling out: several *pipelines* (a generator worker and a set of backend workers each) on one
machine (``--workers N``) or as Ray actors across a cluster (``--ray-address``), with one learner, one
bug store, one coverage union and one ``training.log`` in the driver process.

- ``higen.scale.pipeline``: a pipeline (generate, run, judge one test) and its thread-backed handle.
- ``higen.scale.engine``: ``PipelineEngine``, the engine's driver half over several pipelines, and
  ``ParallelEngine``, its local pipelines.
- ``higen.scale.vecenv``: the low level as an SB3 vectorized env (one sub-env per pipeline).
- ``higen.scale.wire``: what travels between the driver and a remote pipeline (JSON and bytes).
- ``higen.scale.cluster``: Ray: connecting, placing pipelines on nodes, surviving lost ones.

docs/scaling.md is the user's guide; docs/architecture.md ("Several pipelines") the design.
"""

from __future__ import annotations

import os
from pathlib import Path

from rich.console import Console

from higen.engine import Engine, EngineSettings
from higen.engine_api import FuzzEngine
from higen.errors import UserError


def default_workers() -> int:
    """One pipeline per core but one (the learner and the bug store keep a core), at least one."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, cores - 1)


def unsupported_with_pipelines(settings: EngineSettings) -> str | None:
    """Why these settings cannot run on several pipelines (None: they can)."""
    if settings.numerics:
        return "--record-numerics reruns each test on the engine's own workers: use it with --workers 1"
    if settings.coverage is not None and settings.coverage.gcov:
        return ("gcov coverage reads per-worker counters of one instrumented build: use it with --workers 1 "
                "(the other collectors work with several pipelines)")
    return None


def resolve_workers(settings: EngineSettings, workers: int | None, ray_address: str | None) -> int | None:
    """The number of local pipelines (``workers`` None: the default, one where the settings need one;
    with ``ray_address`` a cap, None: one per CPU slot); UserError where the settings allow only one."""
    reason = unsupported_with_pipelines(settings)
    if reason and (ray_address is not None or (workers or 0) > 1):
        raise UserError(reason)
    if ray_address is not None or workers is not None:
        return workers
    return 1 if reason else default_workers()


def make_engine(settings: EngineSettings, run_dir: Path, console: Console, workers: int | None = None,
                ray_address: str | None = None) -> FuzzEngine:
    """The engine for a run: the plain Engine for one local pipeline (exactly the serial behaviour),
    a ParallelEngine for several, a RayEngine on a cluster (connect first: ``cluster.connect``)."""
    workers = resolve_workers(settings, workers, ray_address)
    if ray_address is not None:
        from higen.scale.cluster import RayEngine

        return RayEngine(settings, run_dir, console, limit=workers)
    if workers <= 1:
        return Engine(settings, run_dir, console)
    from higen.scale.engine import ParallelEngine

    return ParallelEngine(settings, run_dir, console, workers=workers)
