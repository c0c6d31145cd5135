"""The executor: one persistent worker per target, a test fanned out to all of them at once."""

from __future__ import annotations

import select
import time
from pathlib import Path

from higen.backends.base import Outcome, Target
from higen.runtimes import worker_env
from higen.workers import (
    DEFAULT_MEMORY_LIMIT_MB,
    DEFAULT_RECYCLE_AFTER,
    POLL_INTERVAL_S,
    WorkerFailure,
    WorkerProcess,
    WorkerSpec,
)


class BackendPool:
    """Runs one model on every target, each in its own crash-isolated worker, in parallel. A target
    pinned to a release (``ort@1.20.1:cpu:O3``) imports it from the runtime cache (``higen.runtimes``);
    one that is not installed raises BackendMissing here, naming the command that installs it."""

    def __init__(self, targets: list[Target], log_dir: Path, timeout_s: float = 60.0,
                 memory_limit_mb: int = DEFAULT_MEMORY_LIMIT_MB, start_timeout_s: float = 180.0,
                 recycle_after: int = DEFAULT_RECYCLE_AFTER, timeouts_by_target: dict[str, float] | None = None):
        self.targets = list(targets)
        self.timeout_s = timeout_s
        #: target name -> its own limit instead of ``timeout_s`` (``EngineSettings.timeouts_by_target``, --tvm-timeout)
        self.timeouts_by_target: dict[str, float] = dict(timeouts_by_target or {})
        self.collect_coverage = False  # ask workers for coverage (see higen.coverage); set by the engine
        self.workers = {
            target.name: WorkerProcess(
                WorkerSpec(name=target.name, module="higen.backends.serve", args=(target.name,),
                           memory_limit_mb=memory_limit_mb, start_timeout_s=start_timeout_s,
                           recycle_after=recycle_after, env=worker_env(target)),
                log_dir,
            )
            for target in self.targets
        }

    def start(self) -> dict[str, dict]:
        """Start every worker (imports overlap); raises WorkerStartError naming the first that failed."""
        for worker in self.workers.values():
            worker.launch()
        try:
            return {name: worker.wait_ready() for name, worker in self.workers.items()}
        except Exception:
            self.close()
            raise

    def describe(self) -> dict[str, dict]:
        return {name: worker.info for name, worker in self.workers.items()}

    def run(self, model_path: Path, inputs_path: Path, out_dir: Path,
            only: list[str] | None = None) -> dict[str, Outcome]:
        """Compile and run the model on all targets (or ``only`` these); every target yields an
        Outcome, whatever happens to it. Workers that died last time restart in parallel first."""
        names = list(only or self.workers)
        for name in [n for n in names if self.workers[n].relaunch_if_dead()]:
            self.workers[name].wait_ready()
        started = {}
        for name in names:
            worker = self.workers[name]
            request = {"model": str(model_path), "inputs": str(inputs_path),
                       "outputs": str(out_dir / f"{name.replace(':', '_')}.npz")}
            if self.collect_coverage:
                request["coverage"] = True
            started[name] = (time.perf_counter(), request["outputs"])
            worker.submit(request, self.timeouts_by_target.get(name, self.timeout_s))
        results: dict[str, Outcome] = {}
        while len(results) < len(started):  # watch every pending worker: deadline, liveness, memory
            for name, began in started.items():
                if name not in results:
                    outcome = self._poll(name, *began)
                    if outcome is not None:
                        results[name] = outcome
            pending = [self.workers[n].fileno() for n in started if n not in results]
            if pending:
                select.select(pending, [], [], POLL_INTERVAL_S)
        return {name: results[name] for name in started}

    def _poll(self, name: str, began: float, outputs_path: str) -> Outcome | None:
        worker = self.workers[name]
        try:
            reply = worker.poll()
            if reply is None:
                return None
        except WorkerFailure as failure:
            return Outcome(target=name, status="timeout" if failure.kind == "timeout" else "crash",
                           stage=failure.stage, error_type=failure.kind, message=failure.detail,
                           log_tail=failure.log_tail, signal=failure.signal_name,
                           wall_s=time.perf_counter() - began)
        outcome = Outcome(
            target=name, status=reply["status"], stage=reply.get("stage", ""),
            error_type=reply.get("error_type", ""), message=reply.get("message", ""),
            log_tail=reply.get("traceback", ""), compile_s=reply.get("compile_s", 0.0),
            run_s=reply.get("run_s", 0.0), wall_s=time.perf_counter() - began,
        )
        if outcome.ok:
            outcome.outputs_path = outputs_path
        if "coverage" in reply:
            outcome.extra["coverage"] = reply["coverage"]
        return outcome

    def internal_precision(self) -> dict[str, dict[str, str]]:
        """target -> {declared dtype: dtype it really computes in}, as each backend describes itself."""
        return {name: worker.info.get("internal_precision", {}) for name, worker in self.workers.items()}

    def worker_memory_mb(self) -> dict[str, float]:
        return {name: worker.rss_mb() for name, worker in self.workers.items()}

    def close(self) -> None:
        for worker in self.workers.values():
            worker.stop()

    def __enter__(self) -> "BackendPool":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()
