"""Backend worker: ``python -m higen.backends.serve TARGET`` compiles and runs one model per request.

Request: ``{"model": path, "inputs": path, "outputs": path}``. Reply: status (ok / unsupported /
error), the stage reached, timings, and the error when there was one. Outputs go to the .npz file.
With coverage collectors configured (``HIGEN_COVERAGE``, see ``higen.coverage.worker``), a request
carrying ``"coverage": true`` gets ``"coverage": {...}`` in its reply.
"""

from __future__ import annotations

import sys
import time
import traceback
from typing import Any

from higen.backends.base import Backend, Target, Unsupported
from higen.backends.registry import create_backend
from higen.coverage.worker import from_env as worker_coverage
from higen.tensors import load_tensors, save_tensors
from higen.workers import progress, serve


def execute(backend: Backend, request: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """Compile, run and save the outputs of one request; returns the reply and the compiled model
    (None when compilation failed). Exceptions become ``unsupported`` or ``error`` replies."""
    stage, timings, compiled = "compile", {"compile_s": 0.0, "run_s": 0.0}, None
    started = time.perf_counter()
    try:
        progress(stage)
        compiled = backend.compile(request["model"])
        timings["compile_s"], stage = time.perf_counter() - started, "run"
        progress(stage)
        inputs = load_tensors(request["inputs"])
        started = time.perf_counter()
        outputs = backend.run(compiled, inputs)
        timings["run_s"] = time.perf_counter() - started
        save_tensors(request["outputs"], outputs)
        return {"status": "ok", "stage": stage, **timings}, compiled
    except Exception as exc:
        unsupported = isinstance(exc, Unsupported) or backend.is_unsupported(exc)
        return {"status": "unsupported" if unsupported else "error", "stage": stage,
                "error_type": type(exc).__name__, "message": str(exc),
                "traceback": traceback.format_exc(limit=8), **timings}, compiled


def make_handler(target_text: str):
    coverage = worker_coverage()  # None unless the pool asked for coverage (HIGEN_COVERAGE)
    backend = create_backend(Target.parse(target_text))
    if coverage is not None:
        coverage.attach(backend)

    def handle(request: dict[str, Any]) -> dict[str, Any]:
        if coverage is not None:
            coverage.begin(request)
        reply, compiled = execute(backend, request)
        if coverage is not None and (payload := coverage.end(request, compiled)) is not None:
            reply["coverage"] = payload
        return reply

    return handle, backend.describe()


if __name__ == "__main__":
    serve(lambda: make_handler(sys.argv[1]))
