"""Replay of a saved bug case (``higen repro CASE``, the command is :mod:`higen.cli.repro`): its
targets again with the installed runtimes; a target pinned to a release (``ort@1.20.1:cpu:O3``,
version-differential cases) runs that release from the runtime cache, and one not installed there
is a one-line error naming ``higen runtimes add``.

The targets run in crash-isolated workers (:class:`BackendPool`), the reference is the saved
``outputs/torch_cpu.npz``, and :func:`higen.execute.execute` judges as the campaign did, with the
case's recorded pairs, tolerances and NaN policy. The case *reproduces* when its signature is among the new findings.
Exit status: 0 reproduces, 1 no longer reproduces, 2 the case cannot be used (one line says why).
"""

from __future__ import annotations

import shutil

from higen.backends.base import Target
from higen.backends.pool import BackendPool
from higen.bugs.case import BugCase
from higen.execute import Execution, execute
from higen.tensors import scratch_dir
from higen.workers import DEFAULT_MEMORY_LIMIT_MB


def replay(case: BugCase, timeout_s: float = 60.0, memory_limit_mb: int = DEFAULT_MEMORY_LIMIT_MB) -> Execution:
    """Run the case on all its targets with the installed runtimes; the reference is the saved one."""
    work = scratch_dir("higen-repro-")
    try:
        with BackendPool([Target.parse(t) for t in case.targets], work / "logs", timeout_s, memory_limit_mb) as pool:
            return execute(pool, case, work, case.targets, pairs=case.pairs, tolerances=case.tolerances,
                           nan_policy=case.nan_policy, reference=case.reference_path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
