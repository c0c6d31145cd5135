"""Backend worker: ``python -m higen.backends.serve TARGET`` compiles and runs one model per request.

Request: ``{"model": path, "inputs": path, "outputs": path}``. Reply: status (ok / unsupported /
error), the stage reached, timings, and the error when there was one. Outputs go to the .npz file.
With coverage collectors configured (``HIGEN_COVERAGE``, see ``higen.coverage.worker``), a request
carrying ``"coverage": true`` gets ``"coverage": {...}`` in its reply.

Many inputs, one model (``higen maximize``): ``"cache": true`` reuses the model this worker compiled
last when the file is unchanged (:class:`CompileCache`); ``"batch": [[inputs, outputs], ...]`` runs
several input files in one request instead of ``inputs``/``outputs``.
"""

from __future__ import annotations

import importlib
import os
import sys
import time
import traceback
from typing import Any

from higen.backends.base import Backend, Target, Unsupported
from higen.backends.defects import with_defects
from higen.backends.registry import require_installed, runtime_info
from higen.coverage.worker import from_env as worker_coverage, handle_request
from higen.runtimes import verify_loaded
from higen.tensors import load_tensors, save_tensors
from higen.workers import progress, serve


def create_backend(target: Target) -> Backend:
    """Import the runtime module and build its backend for ``target`` (inside a worker). A target
    pinned to a release (``ort@1.20.1``) first checks that this release is the one imported."""
    if target.version:
        info = runtime_info(target.runtime)
        verify_loaded(target)
    else:
        info = require_installed(target.runtime)
    module = importlib.import_module(info.module)
    return module.create(target)


class CompileCache:
    """The model this worker compiled last, kept for requests that ask for it (``"cache": true``):
    keyed by backend, path, size, modification time and inode, so an edited or replaced file compiles anew.
    One entry bounds the memory it holds."""

    def __init__(self):
        self.key: tuple | None = None
        self.compiled: Any = None

    def compile(self, backend: Backend, model_path: str) -> tuple[Any, bool]:
        """The compiled model and whether it came from the cache."""
        stat = os.stat(model_path)
        key = (id(backend), os.path.abspath(model_path), stat.st_size, stat.st_mtime_ns, stat.st_ino)
        if key == self.key:
            return self.compiled, True
        self.key, self.compiled = None, None  # a failing compile leaves no stale entry
        compiled = backend.compile(model_path)
        self.key, self.compiled = key, compiled
        return compiled, False


def execute(backend: Backend, request: dict[str, Any],
            cache: CompileCache | None = None) -> tuple[dict[str, Any], Any]:
    """Compile, run and save the outputs of one request; returns the reply and the compiled model
    (None when compilation failed). Exceptions become ``unsupported`` or ``error`` replies."""
    stage, timings, compiled = "compile", {"compile_s": 0.0, "run_s": 0.0}, None
    started = time.perf_counter()
    try:
        progress(stage)
        if cache is not None and request.get("cache"):
            compiled, timings["cached"] = cache.compile(backend, request["model"])
        else:
            compiled = backend.compile(request["model"])
        timings["compile_s"], stage = time.perf_counter() - started, "run"
        progress(stage)
        for inputs_path, outputs_path in request.get("batch") or [(request["inputs"], request["outputs"])]:
            inputs = load_tensors(inputs_path)
            started = time.perf_counter()
            outputs = backend.run(compiled, inputs)
            timings["run_s"] += time.perf_counter() - started
            save_tensors(outputs_path, outputs)
        return {"status": "ok", "stage": stage, **timings}, compiled
    except Exception as exc:
        unsupported = isinstance(exc, Unsupported) or backend.is_unsupported(exc)
        return {"status": "unsupported" if unsupported else "error", "stage": stage,
                "error_type": type(exc).__name__, "message": str(exc),
                "traceback": traceback.format_exc(limit=8), **timings}, compiled


def make_handler(target_text: str):
    coverage = worker_coverage()  # None unless the pool asked for coverage (HIGEN_COVERAGE)
    target = Target.parse(target_text)
    backend = create_backend(target)  # a pinned release (ort@1.20.1) is checked to be the one imported
    backend = with_defects(backend, target.name)  # HIGEN_DEFECTS: root-cause tests only
    cache = CompileCache()
    if coverage is not None:
        coverage.attach(backend)

    def handle(request: dict[str, Any]) -> dict[str, Any]:
        return handle_request(coverage, request, lambda: execute(backend, request, cache))

    return handle, {**backend.describe(), **(verify_loaded(target) if target.version else {})}


if __name__ == "__main__":
    serve(lambda: make_handler(sys.argv[1]))
