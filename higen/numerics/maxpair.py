"""The two builds ``higen maximize`` compares, and evaluating candidate inputs on both.

A :class:`PairPool` holds one worker per build (``ort:cpu:O0`` and ``O3``, ``tvm:llvm:O0`` and ``O3``;
OpenVINO's ``ov:CPU`` with and without its coarse accuracy switches); each compiles the model once
and runs a whole generation of candidates per request. :class:`PairEvaluator` turns a candidate into
the error between the builds' outputs (:func:`higen.numerics.maxsearch.outputs_error`).
"""

from __future__ import annotations

import math
import select
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from higen.backends.base import Outcome, Target
from higen.backends.pool import BackendPool
from higen.bugs.case import file_name
from higen.modes import NORMAL_TARGETS
from higen.numerics.maxsearch import Space, outputs_error
from higen.numerics.passes import OV_SWITCHES, options_for
from higen.tensors import Tensors, load_tensors, save_tensors
from higen.workers import DEFAULT_MEMORY_LIMIT_MB, POLL_INTERVAL_S, WorkerProcess, WorkerSpec

RUNTIMES = ("ort", "tvm", "ov")
#: Seconds each run of a batch request may add to the request's deadline (compilation has --timeout).
RUN_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Side:
    """One build: a label, the target its worker serves and the backend options it runs with."""

    label: str
    target: str
    options: dict[str, Any] = field(default_factory=dict, hash=False)


def sides_for(runtime: str) -> tuple[Side, Side]:
    """(unoptimized, optimized) builds of ``runtime`` (module doc)."""
    if runtime == "ov":
        return (Side("ov:CPU+accuracy", "ov:CPU", options_for("ov", list(OV_SWITCHES))), Side("ov:CPU", "ov:CPU"))
    unoptimized, optimized = NORMAL_TARGETS[runtime]
    return Side(unoptimized, unoptimized), Side(optimized, optimized)


class PairPool(BackendPool):
    """The two builds' workers (``higen.numerics.switch_serve``, which take backend options), keyed
    by side label; both run each batch of candidates at once."""

    def __init__(self, sides: tuple[Side, Side], log_dir: Path, timeout_s: float = 60.0,
                 memory_limit_mb: int = DEFAULT_MEMORY_LIMIT_MB):
        super().__init__([], log_dir, timeout_s, memory_limit_mb)
        self.sides = {side.label: side for side in sides}
        self.targets = [Target.parse(side.target) for side in sides]
        self.workers = {side.label: WorkerProcess(WorkerSpec(name=side.label, module="higen.numerics.switch_serve",
                                                             args=(side.target,), memory_limit_mb=memory_limit_mb,
                                                             start_timeout_s=180.0), log_dir)
                        for side in sides}


def run_batch(pool: BackendPool, options: dict[str, dict[str, Any]], model_path: Path, inputs: list[Path],
              out_dir: Path, cache: bool = True) -> dict[str, tuple[Outcome, list[Path]]]:
    """Run every inputs file on the workers named in ``options`` (worker -> backend options, which
    only ``switch_serve`` workers read), all workers at once, one request each (``"batch"``, see
    :mod:`higen.backends.serve`); per worker its outcome and the outputs files."""
    for name in [n for n in options if pool.workers[n].relaunch_if_dead()]:
        pool.workers[name].wait_ready()
    started = {}
    for name in options:
        outputs = [out_dir / f"{path.stem}-{file_name(name)}.npz" for path in inputs]
        pool.workers[name].submit({"model": str(model_path), "batch": [[str(i), str(o)] for i, o in zip(inputs, outputs)],
                                   "cache": cache, "options": options[name]},
                                  pool.timeouts_by_target.get(name, pool.timeout_s) + RUN_TIMEOUT_S * len(inputs))
        started[name] = (time.perf_counter(), outputs)
    results = {}
    for name, (began, outputs) in started.items():
        while (outcome := pool._poll(name, began, str(outputs[0]))) is None:
            select.select([pool.workers[name].fileno()], [], [], POLL_INTERVAL_S)
        results[name] = (outcome, outputs)
    return results


class ModelSkipped(Exception):
    """The model cannot be searched (both builds fail on it, dynamic shapes, ...): one line why."""


class PairEvaluator:
    """Errors of candidate points, each decoded (``fixed`` adds the inputs the space leaves out) and
    run on both builds: ``options`` maps the unoptimized then the optimized worker of ``pool`` to
    its backend options (default: a :class:`PairPool`'s sides)."""

    def __init__(self, pool: BackendPool, space: Space, model_path: Path, work: Path, cache: bool = True,
                 options: dict[str, dict[str, Any]] | None = None, fixed: Tensors | None = None):
        self.pool, self.space, self.model_path, self.work, self.cache = pool, space, model_path, work, cache
        self.options = options or {label: side.options for label, side in pool.sides.items()}
        self.fixed = fixed or {}
        self.unoptimized, self.optimized = list(self.options)
        self.failures: list[str] = []
        self.seconds = 0.0
        self.compile_s: dict[str, float] = {}
        self._count = 0

    def __call__(self, points: list[np.ndarray]) -> list[tuple[float, str]]:
        began = time.perf_counter()
        try:
            return self._evaluate(points)
        finally:
            self.seconds += time.perf_counter() - began

    def run(self, tensors: list[Tensors], model_path: Path | None = None) -> dict[str, tuple[Outcome, list[Path]]]:
        """Both builds' outcomes on these inputs (``model_path``: another model, e.g. instrumented)."""
        paths = []
        for values in tensors:
            self._count += 1
            paths.append(self.work / f"c{self._count}.npz")
            save_tensors(paths[-1], values)
        results = run_batch(self.pool, self.options, model_path or self.model_path, paths, self.work, self.cache)
        for label, (outcome, _) in results.items():
            if outcome.ok and outcome.compile_s > 0:
                self.compile_s.setdefault(label, outcome.compile_s)
        return results

    def _evaluate(self, points: list[np.ndarray]) -> list[tuple[float, str]]:
        results = self.run([{**self.fixed, **self.space.decode(p)} for p in points])
        (left, left_files), (right, right_files) = results[self.unoptimized], results[self.optimized]
        if left.ok and right.ok:
            scored = [outputs_error(load_tensors(a), load_tensors(b)) for a, b in zip(left_files, right_files)]
        elif len(points) > 1:  # which candidate failed? one at a time
            scored = [self._evaluate([point])[0] for point in points]
        elif left.ok != right.ok:  # one build fails where the other runs: the largest error there is
            failed = right if left.ok else left
            self.failures.append(f"{failed.target} {failed.status}: {failed.message[:200]}")
            scored = [(math.inf, f"({failed.target} {failed.status})")]
        else:
            self.failures.append(f"both builds {left.status}: {left.message[:200]}")
            scored = [(math.nan, "")]
        for path in self.work.glob("c*.npz"):
            path.unlink(missing_ok=True)
        return scored
