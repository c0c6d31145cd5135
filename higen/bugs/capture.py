"""Turn any ONNX model into a bug case: run it on targets, judge it, and save it if something is found.

The engine saves generated tests; this saves a hand-written model (a minimal example written by a
person, a model from a bug report), so it can be triaged, replayed and reduced like the others.
The reference outputs are given, or computed by ``onnx.reference`` when not.
"""

from __future__ import annotations

import shutil

import onnx
from onnx.reference import ReferenceEvaluator

from higen import __version__
from higen.backends.base import Target
from higen.backends.pool import BackendPool
from higen.bugs.locate import Analyst, Identifier
from higen.bugs.store import BugStore
from higen.execute import execute
from higen.generation.config import GenConfig
from higen.generation.tokens import graph_tokens
from higen.graph import producers
from higen.modes import diff_pairs
from higen.oracle import Judgement, Tolerance
from higen.tensors import Tensors, save_tensors, scratch_dir
from higen.testcase import TestCase
from higen.workers import DEFAULT_MEMORY_LIMIT_MB


def reference_outputs(model: onnx.ModelProto, inputs: Tensors) -> Tensors:
    names = [value.name for value in model.graph.output]
    return dict(zip(names, ReferenceEvaluator(model).run(names, dict(inputs))))


def capture(model: onnx.ModelProto, inputs: Tensors, targets: list[str], store: BugStore,
            reference: Tensors | None = None, pairs: list[tuple[str, str]] | None = None,
            tolerances: dict[str, Tolerance] | None = None, nan_policy: str = "skip-unstable",
            timeout_s: float = 60.0, memory_limit_mb: int = DEFAULT_MEMORY_LIMIT_MB,
            config: GenConfig | None = None) -> tuple[Judgement, str | None]:
    """Run ``model`` on ``targets``, judge with ``pairs`` (default: the diff-mode order) and record
    the findings in ``store``. Returns the judgement and the saved case name (None: nothing saved)."""
    pairs = pairs if pairs is not None else diff_pairs(targets)
    tolerances = tolerances or {}
    work = scratch_dir("higen-capture-")
    try:
        test = TestCase(config or GenConfig(), work / "test", n_nodes=len(model.graph.node),
                        tokens=graph_tokens(model), producers=producers(model))
        test.directory.mkdir()
        onnx.save(model, test.model_path)
        save_tensors(test.inputs_path, inputs)
        save_tensors(test.reference_path, reference if reference is not None else reference_outputs(model, inputs))
        analyst = Analyst(work / "logs", timeout_s, memory_limit_mb)
        try:
            with BackendPool([Target.parse(t) for t in targets], work / "logs", timeout_s, memory_limit_mb) as pool:
                execution = execute(pool, test, test.directory, pairs=pairs, tolerances=tolerances,
                                    nan_policy=nan_policy, reference=test.reference_path,
                                    identifier=Identifier(pool, analyst, tolerances, nan_policy))
                described = pool.describe()
        finally:
            analyst.close()
        judgement = execution.judgement
        case = None
        if judgement.findings:
            metadata = {"versions": {"higen": __version__, "targets": described}, "mode": "capture",
                        "oracle": {"pairs": pairs, "nan_policy": nan_policy,
                                   "tolerances": {k: vars(v) for k, v in tolerances.items()}}}
            case = store.record(test, judgement, execution.outcomes, metadata).case
        return judgement, case
    finally:
        shutil.rmtree(work, ignore_errors=True)
