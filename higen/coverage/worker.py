"""The worker side of coverage: collectors living in a backend worker process.

The pool starts a backend worker with ``HIGEN_COVERAGE`` set to a JSON spec (see
:meth:`higen.coverage.manager.CoverageManager.worker_env`), e.g.
``{"collectors": {"ort_transformers": {}}}`` or
``{"collectors": {"gcov_tvm": {"src": ..., "build": ..., "prefix": ..., "reset": false, "dump_every": 100},
"tvm_py": {}}}``.
Without it :func:`from_env` returns None and the worker does exactly what it did before.

A request with ``"coverage": true`` is measured; the reply then carries
``{"features": {collector: [new to this process]}, "baseline": {...}, "hit": {collector: n},
"errors": {collector: message}, "seconds": s}``. Requests without it (the op-support probe) are not
measured; what they executed is handed over as *baseline* with the next measured request (or
dropped with the ``reset`` option of gcov collectors), so it never counts as a test's novelty.
A request ``{"coverage_flush": true}`` runs nothing: the gcov collectors write their counters into
the ``.gcda`` files (see :meth:`WorkerCoverage.flush`).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

from higen.coverage.collectors import (
    OrtTransformerCollector,
    OutputCapture,
    OvLayerCollector,
    OvPassCollector,
    TestContext,
    TvmPythonCollector,
)

ENV = "HIGEN_COVERAGE"


def make_collector(name: str, options: dict[str, Any]):
    if name == "ort_transformers":
        return OrtTransformerCollector()
    if name == "ov_layers":
        return OvLayerCollector()
    if name == "ov_passes":
        OvPassCollector.prepare()
        return OvPassCollector()
    if name == "tvm_py":
        return TvmPythonCollector(options["dirs"]) if options.get("dirs") else TvmPythonCollector()
    if name.startswith("gcov_"):
        from higen.coverage.gcov import GcovCollector

        return GcovCollector(name, options["src"], options["build"], options["prefix"], bool(options.get("reset")),
                             int(options.get("dump_every", 0)))
    raise ValueError(f"unknown coverage collector {name!r}")


class WorkerCoverage:
    """All collectors of one worker; wraps each measured request with begin/end."""

    def __init__(self, spec: dict[str, Any]):
        # Collectors are made before the backend: some must set the environment before the runtime
        # reads it (OpenVINO's pass profiler, GCOV_PREFIX).
        self.collectors = [make_collector(name, options or {}) for name, options in spec.get("collectors", {}).items()]
        self.capture = OutputCapture() if any(getattr(c, "captures_output", False) for c in self.collectors) else None
        self.reported: dict[str, set[str]] = {c.name: set() for c in self.collectors}
        self._problems_sent: dict[str, int] = {}
        self.dirty = True  # something ran (start-up) that no measured request accounted for
        self.measuring = False
        self.errors: dict[str, str] = {}
        self._capturing = False
        self._captured: list[str] = []
        self._began = 0.0
        self._active: list = []

    def attach(self, backend: Any) -> None:
        """After the backend exists (its libraries are loaded); a failure here fails the worker's start."""
        for collector in self.collectors:
            collector.attach(backend)
        if self.capture is not None and backend is not None and hasattr(backend, "compile"):
            # Take the collectors' chatter out of the log as soon as compilation is over, so that a
            # crash while running the model leaves the log as it would be without coverage.
            compile_model = backend.compile

            def compile_then_clean(*args, **kwargs):
                try:
                    return compile_model(*args, **kwargs)
                finally:
                    self._checkpoint()

            backend.compile = compile_then_clean

    def _drop(self, line: str) -> bool:
        return any(c.drop_line(line) for c in self.collectors if getattr(c, "captures_output", False))

    def _checkpoint(self) -> None:
        if self.capture is not None and self._capturing:
            self._captured.append(self.capture.end(self._drop))
            self.capture.begin()

    def begin(self, request: dict[str, Any]) -> bool:
        """Start measuring when the request asks for it; returns whether it does. Every request,
        measured or not, must be followed by :meth:`end` (chatter the collectors switched on is
        removed from the worker log either way)."""
        self.measuring = bool(request.get("coverage"))
        self._captured = []
        if not self.measuring:
            self.dirty = True
            self._start_capture()
            return False
        self._began = time.perf_counter()
        self.baseline: dict[str, list[str]] = {}
        self.errors: dict[str, str] = {}
        if self.dirty:
            for collector in self.collectors:
                if hasattr(collector, "take_baseline"):
                    try:
                        found = self._fresh(collector.name, collector.take_baseline())
                        if found:
                            self.baseline[collector.name] = found
                    except Exception as error:  # reported, the test still runs
                        self.errors[collector.name] = f"{type(error).__name__}: {error}"
            self.dirty = False
        context = TestContext(model_path=request.get("model"))
        self._active = []
        for collector in self.collectors:
            try:
                collector.begin(context)
                self._active.append(collector)
            except Exception as error:
                self.errors[collector.name] = f"{type(error).__name__}: {error}"
        self._start_capture()
        return True

    def _start_capture(self) -> None:
        if self.capture is not None:
            try:
                self.capture.begin()
                self._capturing = True
            except OSError as error:
                self.errors = {**getattr(self, "errors", {}), "capture": f"{type(error).__name__}: {error}"}

    def end(self, request: dict[str, Any], compiled: Any) -> dict[str, Any] | None:
        """The coverage payload of a measured request (None for others)."""
        if self.capture is not None and self._capturing:
            self._capturing = False
            try:
                self._captured.append(self.capture.end(self._drop))
            except OSError as error:
                self.errors["capture"] = f"{type(error).__name__}: {error}"
        output = "".join(self._captured)
        self._captured = []
        if not self.measuring:
            return None
        context = TestContext(model_path=request.get("model"), compiled=compiled, output=output)
        features: dict[str, list[str]] = {}
        hit: dict[str, int] = {}
        for collector in self._active:
            try:
                found = collector.end(context)
            except Exception as error:
                self.errors[collector.name] = f"{type(error).__name__}: {error}"
                continue
            hit[collector.name] = getattr(collector, "hit_last", len(found))
            features[collector.name] = self._fresh(collector.name, found)
            self._report_problems(collector)
        self._active = []
        payload: dict[str, Any] = {"features": features, "hit": hit,
                                   "seconds": round(time.perf_counter() - self._began, 6)}
        if self.baseline:
            payload["baseline"] = self.baseline
        if self.errors:
            payload["errors"] = self.errors
        return payload

    def flush(self) -> dict[str, Any]:
        """Write what the gcov collectors counted since their last dump into the .gcda files (the
        parent asks before gcovr's last run). Returns the errors, by collector."""
        errors = {}
        for collector in self.collectors:
            if hasattr(collector, "flush"):
                try:
                    collector.flush()
                except Exception as error:
                    errors[collector.name] = f"{type(error).__name__}: {error}"
        return errors

    def _report_problems(self, collector: Any) -> None:
        """A collector's new problems (gcov: an object it cannot read), as one error of this request:
        the parent counts them into coverage_errors.json."""
        problems = getattr(collector, "problems", ())
        new = problems[self._problems_sent.get(collector.name, 0):]
        if new:
            self._problems_sent[collector.name] = len(problems)
            self.errors[collector.name] = f"{len(new)} problem(s), the first: {new[0]}"

    def _fresh(self, name: str, found: set[str]) -> list[str]:
        """Features this process has not sent before (the parent already has the others)."""
        seen = self.reported[name]
        fresh = [f for f in found if f not in seen]
        seen.update(fresh)
        return fresh


def handle_request(coverage: WorkerCoverage | None, request: dict[str, Any],
                   run: Callable[[], tuple[dict[str, Any], Any]]) -> dict[str, Any]:
    """One request of a worker that may have collectors: a flush, or ``run`` (which returns the reply
    and the compiled model) measured when the request asks for it."""
    if request.get("coverage_flush"):
        return {"status": "ok", "errors": coverage.flush() if coverage is not None else {}}
    if coverage is not None:
        coverage.begin(request)
    reply, compiled = run()
    if coverage is not None and (payload := coverage.end(request, compiled)) is not None:
        reply["coverage"] = payload
    return reply


def from_env() -> WorkerCoverage | None:
    text = os.environ.get(ENV)
    if not text:
        return None
    return WorkerCoverage(json.loads(text))
