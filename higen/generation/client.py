"""Parent-side handle of the generator worker: GenConfig in, TestCase (or an invalid reason) out."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from higen.generation.config import GenConfig
from higen.generation.timeout import GenTimeout
from higen.testcase import TestCase
from higen.workers import (
    DEFAULT_MEMORY_LIMIT_MB,
    WorkerFailure,
    WorkerProcess,
    WorkerSpec,
)


#: The ceiling of the generation timeout (see higen.generation.timeout). Past the limit the worker is
#: killed and restarted, and the test counts as invalid with reason ``generator-timeout``.
GEN_TIMEOUT_S = 30.0
#: The reason of a test whose generation overran the limit (the start of ``GenResult.reason``).
GENERATOR_TIMEOUT = "generator-timeout"


@dataclass
class GenResult:
    config: GenConfig
    test: TestCase | None
    reason: str = ""  # why the test is invalid, when it is
    gen_s: float = 0.0

    @property
    def valid(self) -> bool:
        return self.test is not None


class Generator:
    """One persistent NNSmith worker; restarted when it dies. ``submit``/``collect`` let the caller
    overlap generating the next test with executing the current one."""

    def __init__(self, log_dir: Path, timeout_s: float = GEN_TIMEOUT_S, memory_limit_mb: int = DEFAULT_MEMORY_LIMIT_MB,
                 timeout: GenTimeout | None = None):
        self.worker = WorkerProcess(
            WorkerSpec(name="generator", module="higen.generation.serve", memory_limit_mb=memory_limit_mb),
            log_dir,
        )
        #: the adaptive limit; ``timeout_s`` is its ceiling
        self.timeout = timeout or replace(GenTimeout(), ceiling_s=timeout_s)
        self.recent: deque[float] = deque(maxlen=max(1, self.timeout.window))  # answered generation times
        self.timeouts = 0  # generations killed at the limit
        self.allowed_path: Path | None = None  # op -> supported dtype combos (see higen.support)
        self._pending: tuple[GenConfig, Path, float] | None = None

    def start(self) -> dict[str, Any]:
        return self.worker.start()

    def launch(self) -> None:
        self.worker.launch()

    def wait_ready(self) -> dict[str, Any]:
        return self.worker.wait_ready()

    @property
    def info(self) -> dict[str, Any]:
        return self.worker.info

    def submit(self, config: GenConfig, out_dir: Path) -> None:
        request = {"op": "generate", "config": config.to_json(), "out_dir": str(out_dir),
                   "allowed": str(self.allowed_path) if self.allowed_path else None}
        limit = self.timeout.limit(self.recent)
        self._pending = (config, out_dir, limit)
        self.worker.submit(request, limit)

    def collect(self) -> GenResult:
        config, out_dir, limit = self._pending
        self._pending = None
        try:
            reply = self.worker.collect()
        except WorkerFailure as failure:
            if failure.kind != "timeout":
                return GenResult(config, None, f"generator {failure.detail}")
            self.timeouts += 1
            return GenResult(config, None, f"{GENERATOR_TIMEOUT}: no model within {limit:.1f} s "
                             f"(replay: higen regenerate RUN_DIR INDEX)", limit)
        self.recent.append(float(reply.get("gen_s", 0.0)))
        if reply["status"] != "ok":
            return GenResult(config, None, reply.get("reason") or reply.get("message", "unknown"),
                             reply.get("gen_s", 0.0))
        test = TestCase(config=config, directory=out_dir, n_nodes=reply["n_nodes"],
                        nnsmith_ops=reply["nnsmith_ops"], tokens=reply["tokens"],
                        reference_nonfinite=reply["reference_nonfinite"], gen_s=reply["gen_s"],
                        producers=reply["producers"])
        return GenResult(config, test, gen_s=reply["gen_s"])

    def generate(self, config: GenConfig, out_dir: Path) -> GenResult:
        self.submit(config, out_dir)
        return self.collect()

    def single_op_models(self, out_dir: Path) -> list[dict[str, Any]]:
        return self.worker.call({"op": "single_op_models", "out_dir": str(out_dir)}, 600.0)["entries"]

    def close(self) -> None:
        self.worker.stop()
