"""Run a model on one release of a runtime, crash-isolated, with per-run backend options.

Each release gets its own :class:`higen.numerics.passes.SwitchablePool` (HiGen's backend workers,
which also take per-request backend options such as ORT's ``disabled_optimizers``) serving targets
pinned to it (``ort@1.20.1:cpu:O3``: the pool gives the worker that release from the runtime cache,
see :mod:`higen.runtimes`). A crash, hang or memory blow-up of the runtime becomes an
:class:`Outcome`, never an exception here.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from higen.backends.base import Outcome, Target
from higen.numerics.passes import SwitchablePool
from higen.runtimes import same_release
from higen.tensors import Tensors, load_tensors
from higen.workers import WorkerStartError


@dataclass
class Run:
    """One model on one target of one release: what happened, and the outputs when it ran."""

    outcome: Outcome
    outputs: Tensors | None

    @property
    def failed(self) -> bool:
        return self.outcome.status in ("crash", "error", "timeout")

    def describe(self) -> str:
        first = (self.outcome.message or self.outcome.error_type or "").strip().splitlines()
        return f"{self.outcome.status}" + (f" at {self.outcome.stage}: {first[0][:160]}" if first and self.failed else "")


def pinned(target: str, version: str) -> str:
    """``ort:cpu:O3`` at ``1.20.1`` -> ``ort@1.20.1:cpu:O3`` (unchanged for "", the installed release)."""
    runtime, _, rest = target.partition(":")
    return f"{runtime}@{version}:{rest}" if version else target


#: Folder of the injected tier's ``sitecustomize.py`` (see injected/defects.py).
INJECTED = Path(__file__).resolve().parent / "injected"


class ReleasePool:
    """Workers for ``targets`` (``ort:cpu:O3``, ``ov:CPU``) of ``runtime`` at ``version`` ("" means the
    release installed in the main environment), with the injected ``defect`` planted when one is
    named. Use as a context manager."""

    def __init__(self, runtime: str, version: str, targets: list[str], work: Path, timeout_s: float = 60.0,
                 defect: str = ""):
        self.runtime, self.version, self.work = runtime, version, Path(work)
        self.names = {target: pinned(target, version) for target in targets}
        self.pool = SwitchablePool([Target.parse(name) for name in self.names.values()], self.work / "logs",
                                   timeout_s, start_timeout_s=120.0)
        if defect:
            for worker in self.pool.workers.values():
                path = (worker.spec.env or {}).get("PYTHONPATH") or os.environ.get("PYTHONPATH", "")
                env = {"PYTHONPATH": os.pathsep.join(p for p in (str(INJECTED), path) if p),
                       "HIGEN_BUGBENCH_DEFECT": defect}
                worker.spec = replace(worker.spec, env={**(worker.spec.env or {}), **env})
        self._count = itertools.count()

    def __enter__(self) -> "ReleasePool":
        described = self.pool.start()
        if self.version:  # the worker must really have imported the pinned release
            for name, info in described.items():
                got = str(info.get("version", ""))
                if not same_release(got, self.version):
                    self.pool.close()
                    raise WorkerStartError(f"{name} imported {info.get('runtime')} {got}, not {self.version}")
        return self

    def __exit__(self, *exc: Any) -> None:
        self.pool.close()

    def run(self, target: str, model: Path, inputs: Path, options: dict[str, Any] | None = None) -> Run:
        out_dir = self.work / f"run-{next(self._count)}"
        out_dir.mkdir(parents=True, exist_ok=True)
        outcome = self.pool.run_with(self.names[target], Path(model), Path(inputs), out_dir, options or {})
        outputs = load_tensors(outcome.outputs_path) if outcome.ok and outcome.outputs_path else None
        return Run(outcome, outputs)

