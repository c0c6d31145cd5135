"""Execute and judge: a model run on targets of a :class:`BackendPool`, its outputs loaded, and the
oracle's :class:`Judgement`, with every finding's root cause when an identifier is given.

The one path from a model on disk to a verdict, so that a generated test (the engine), a captured
model, a replayed case (``higen repro``), a reduction candidate, ``higen exec`` and ``higen localize``
are judged alike: the same pairs in priority order, the backends' declared internal precision, the
tolerances and the NaN policy. :func:`judge_outcomes` is its second half, for outcomes obtained
otherwise (the pass search's runs with switches off).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Union

import onnx

from higen.backends.base import REFERENCE, Outcome
from higen.backends.pool import BackendPool
from higen.bugs.case import BugCase
from higen.bugs.locate import Identifier
from higen.graph import producers
from higen.oracle import Judgement, Tolerance, judge
from higen.tensors import Tensors, load_tensors
from higen.testcase import TestCase

#: What runs: a generated (or built) test, or a saved bug case (read, never written).
Subject = Union[TestCase, BugCase]
#: Outcomes of the first run -> the outcomes to judge (the engine's error-maximizing inputs).
Revise = Callable[[dict[str, Outcome]], dict[str, Outcome]]


@dataclass
class Execution:
    """A model run on some targets and judged."""

    outcomes: dict[str, Outcome]
    judgement: Judgement
    timings: dict[str, float] = field(default_factory=dict)  # exec_s, judge_s, locate_s (with an identifier)
    outputs: dict[str, Tensors] = field(default_factory=dict)  # target -> outputs, the reference's included

    @property
    def signatures(self) -> list[str]:
        return [f.signature for f in self.judgement.findings]


def load_outputs(outcomes: dict[str, Outcome]) -> dict[str, Tensors]:
    """The outputs of every target that ran."""
    return {name: load_tensors(o.outputs_path) for name, o in outcomes.items() if o.ok}


def judge_outcomes(outcomes: dict[str, Outcome], reference: Tensors | Path | None, *,
                   pairs: list[tuple[str, str]], producers: dict[str, str],
                   tolerances: dict[str, Tolerance] | None = None, precision: dict[str, dict[str, str]] | None = None,
                   nan_policy: str = "skip-unstable") -> Execution:
    """Load the outputs of ``outcomes`` (and ``reference``: tensors, an .npz, or None) and judge them
    (:func:`higen.oracle.judge`); no timings."""
    outputs = {REFERENCE: load_tensors(reference) if isinstance(reference, Path) else reference} \
        if reference is not None else {}
    outputs.update(load_outputs(outcomes))
    judgement = judge(outcomes, outputs, pairs, producers, tolerances, precision, nan_policy)
    return Execution(outcomes, judgement, outputs=outputs)


def execute(pool: BackendPool, subject: Subject, work: Path, targets: list[str] | None = None, *,
            pairs: list[tuple[str, str]], tolerances: dict[str, Tolerance] | None = None,
            nan_policy: str = "skip-unstable", reference: Tensors | Path | None = None,
            identifier: Identifier | None = None, revise: Revise | None = None) -> Execution:
    """Run ``subject``'s model on its inputs on ``targets`` of ``pool`` (default: every target),
    outputs written to ``work``; ``revise`` may replace the outcomes before they are judged, so the
    ``reference`` (an .npz is read only then) and the inputs may change with them. The judgement
    compares ``pairs`` in priority order with the backends' internal precision; the producing op
    types are the test's own, or read from the case's model. With an ``identifier`` (a test only),
    every finding gets its root cause."""
    began = time.perf_counter()
    work.mkdir(parents=True, exist_ok=True)
    outcomes = pool.run(subject.model_path, subject.inputs_path, work, only=targets)
    if revise is not None:
        outcomes = revise(outcomes)
    ran = time.perf_counter()
    made = subject.producers if isinstance(subject, TestCase) else \
        producers(onnx.load(str(subject.model_path), load_external_data=False))
    execution = judge_outcomes(outcomes, reference, pairs=pairs, producers=made, tolerances=tolerances,
                               precision=pool.internal_precision(), nan_policy=nan_policy)
    execution.timings = {"exec_s": ran - began, "judge_s": time.perf_counter() - ran}
    if identifier is not None and execution.judgement.findings:
        execution.timings["locate_s"] = identifier.identify(subject, execution.judgement, outcomes,
                                                            execution.outputs)
    return execution
