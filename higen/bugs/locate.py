"""Root causes at campaign time: for every finding of a test, where it comes from and whether it is noise.

Runs in the pipeline right after the oracle (``higen.execute.execute``), only for tests with
findings (1-2% of them). The pipeline's own backend workers run the model again with its
intermediates exposed; the analyst worker (:mod:`higen.bugs.analyst_serve`) does all computing on the
model and its tensors. So the driver process only moves file paths, and every step is bounded by
the test's timeout and memory cap.

For a value finding on targets (A, B):

1. Runnable sides: A and B; when A is the PyTorch reference (no intermediates), a *proxy*: another
   target of the test whose outputs all agree with PyTorch's. Without one, B alone is checked
   node by node against the ops' definitions ("self-check").
2. Intermediates: the instrumented model on the runnable sides; the first diverging node and the
   check of that node on its own inputs (:mod:`higen.bugs.nodecheck`).
3. When exposing intermediates makes the difference vanish (a fusion), each ancestor's prefix model
   runs on its own, in topological order, up to :data:`MAX_PREFIXES` of them within :data:`PREFIX_BUDGET_S`.
4. The identity and the noise tags (:mod:`higen.bugs.rootcause`); the output-level analysis of the
   finding (noise patterns, known semantic differences) comes from the analyst too. A root cause
   that matches an entry of the known upstream issues (:mod:`higen.bugs.known_issues`) is tagged
   ``upstream:<id>``: a real bug, already reported.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from higen.backends.base import REFERENCE, Outcome
from higen.backends.pool import BackendPool
from higen.bugs.known_issues import match_known
from higen.bugs.rootcause import (
    FAILURE_KINDS,
    failure_root_cause,
    failure_tags,
    value_root_cause,
)
from higen.oracle import Finding, Judgement, Tolerance, judge
from higen.tensors import Tensors
from higen.testcase import TestCase
from higen.workers import WorkerFailure, WorkerProcess, WorkerSpec

MAX_PREFIXES = 8  # prefix models tried per finding when a fusion hides the diverging node
PREFIX_BUDGET_S = 10.0  # and the seconds they may take (a TVM prefix compiles in ~1 s)
log = logging.getLogger("higen.bugs")


class Analyst:
    """Parent-side handle of the analyst worker; a request that fails (timeout, crash, memory cap,
    exception) answers ``{"status": "failed", ...}`` and the worker restarts on the next request."""

    def __init__(self, log_dir: Path, timeout_s: float, memory_limit_mb: int):
        self.timeout_s = timeout_s
        self.worker = WorkerProcess(WorkerSpec("analyst", "higen.bugs.analyst_serve", memory_limit_mb=memory_limit_mb),
                                    log_dir)

    def launch(self) -> None:
        self.worker.launch()

    def wait_ready(self) -> None:
        self.worker.wait_ready()

    def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        try:
            reply = self.worker.call(request, self.timeout_s)
        except WorkerFailure as failure:
            return {"status": "failed", "message": f"analyst {failure.kind}: {failure.detail}"}
        if reply.get("status") != "ok":
            return {"status": "failed", "message": f"analyst {reply.get('error_type')}: {reply.get('message', '')[:300]}"}
        return reply

    def write_extras(self, folder: Path, meta: dict[str, Any]) -> None:
        """A case's standalone files (:func:`higen.bugs.standalone.write_case_extras`), written by
        the worker; when it fails the case is saved without them and the reason is logged."""
        reply = self.ask({"op": "extras", "case": str(folder), "meta": json.loads(json.dumps(meta, default=str))})
        if reply["status"] != "ok":
            log.warning("%s: no repro.py (%s)", folder.name, reply["message"])

    def close(self) -> None:
        self.worker.stop()


class Identifier:
    """Gives the findings of one judged test their root cause (module doc)."""

    def __init__(self, pool: BackendPool, analyst: Analyst, tolerances: dict[str, Tolerance], nan_policy: str,
                 localize: bool = True):
        self.pool, self.analyst = pool, analyst
        self.tolerances, self.nan_policy = tolerances, nan_policy
        self.localize = localize  # False: only the output-level analysis (signatures stay the unit)

    def identify(self, test: TestCase, judgement: Judgement, outcomes: dict[str, Outcome],
                 outputs: dict[str, Tensors]) -> float:
        """Set ``root_cause`` and ``analysis`` on every finding; returns the seconds it took."""
        began = time.perf_counter()
        work = test.directory / "locate"
        work.mkdir(exist_ok=True)
        values = [f for f in judgement.findings if str(f.verdict) not in FAILURE_KINDS]
        analyses = self._analyses(test, values, outcomes)
        instrumented: list[Path | None] = []  # made once per test, on first need
        for finding in judgement.findings:
            finding.analysis = analyses.get(id(finding))
            if not self.localize:
                continue
            data = finding.to_json()
            if str(finding.verdict) in FAILURE_KINDS:
                outcome = outcomes.get(finding.targets[-1])
                cause = failure_root_cause(data)
                cause.tags = failure_tags(data, outcome.message if outcome else "")
                cause.noise = bool(cause.tags)
            else:
                located = self._locate(test, finding, outcomes, outputs, work, instrumented)
                cause = value_root_cause(data, located, finding.analysis or {}, test.producers)
            upstream = match_known(finding.to_json(), cause.to_json(), {"targets": self.pool.describe()})
            cause.tags += [f"upstream:{issue.id}" for issue in upstream]  # already reported: do not file again
            finding.root_cause = cause.to_json()
        return time.perf_counter() - began

    def _analyses(self, test: TestCase, findings: list[Finding], outcomes: dict[str, Outcome]) -> dict[int, dict]:
        if not findings:
            return {}
        paths = {REFERENCE: str(test.reference_path)}
        paths.update({name: o.outputs_path for name, o in outcomes.items() if o.ok and o.outputs_path})
        reply = self.analyst.ask({
            "op": "analyze", "model": str(test.model_path), "inputs": str(test.inputs_path), "outputs": paths,
            "findings": [f.to_json() for f in findings],
            "tolerances": {k: vars(v) for k, v in self.tolerances.items()},
            "descriptions": self.pool.describe()})
        if reply["status"] != "ok":
            return {id(f): {"note": reply["message"]} for f in findings}
        return {id(f): analysis for f, analysis in zip(findings, reply["analyses"])}

    def _locate(self, test: TestCase, finding: Finding, outcomes: dict[str, Outcome], outputs: dict[str, Tensors],
                work: Path, instrumented: list[Path | None]) -> dict[str, Any]:
        left, right = finding.targets[0], finding.targets[1]
        if left == REFERENCE:
            proxy = self._proxy(right, outcomes, outputs)
            sides = [proxy, right] if proxy else [right]
        else:
            sides = [left, right]
        if not instrumented:
            reply = self.analyst.ask({"op": "instrument", "model": str(test.model_path),
                                      "out": str(work / "instrumented.onnx")})
            instrumented.append(work / "instrumented.onnx" if reply["status"] == "ok" else None)
        if instrumented[0] is None:
            return {"node": None, "note": "could not expose the intermediates"}
        ran = self.pool.run(instrumented[0], test.inputs_path, work, only=sides)
        failed = [f"{n}: {o.status}" for n, o in ran.items() if not o.ok]
        if failed:
            return {"node": None, "note": "the model with exposed intermediates failed on " + ", ".join(failed)}
        located = self._ask_locate(test.model_path, test.inputs_path, ran, finding.output, sides)
        located.setdefault("method", "intermediates")
        if located.get("node") is None and len(sides) == 2 and not located.get("failed"):
            return self._by_prefixes(test, finding, sides, work) or located
        return located

    def _ask_locate(self, model: Path, inputs: Path, ran: dict[str, Outcome], output: str,
                    sides: list[str]) -> dict[str, Any]:
        reply = self.analyst.ask({
            "op": "locate", "model": str(model), "inputs": str(inputs), "output": output,
            "intermediates": {t: ran[t].outputs_path for t in sides},
            "tolerances": {k: vars(v) for k, v in self.tolerances.items()},
            "precision": self.pool.internal_precision()})
        if reply["status"] != "ok":
            return {"node": None, "note": reply["message"], "failed": True}
        return reply

    def _by_prefixes(self, test: TestCase, finding: Finding, sides: list[str], work: Path) -> dict[str, Any] | None:
        """The first ancestor of the diverging output whose prefix model diverges on its own."""
        reply = self.analyst.ask({"op": "ancestors", "model": str(test.model_path), "output": finding.output,
                                  "limit": MAX_PREFIXES})
        if reply["status"] != "ok":
            return None
        deadline = time.monotonic() + PREFIX_BUDGET_S
        for tensor in reply["tensors"]:
            if time.monotonic() > deadline:
                return {"node": None, "note": f"no prefix model differed within {PREFIX_BUDGET_S:g} s"}
            path = work / "prefix.onnx"
            if self.analyst.ask({"op": "prefix", "model": str(test.model_path), "output": tensor,
                                 "out": str(path)})["status"] != "ok":
                continue
            ran = self.pool.run(path, test.inputs_path, work, only=sides)
            if not all(o.ok for o in ran.values()):
                continue
            located = self._ask_locate(path, test.inputs_path, ran, tensor, sides)
            if located.get("node") is not None:
                return {**located, "method": "prefix",
                        "note": "the difference vanishes with intermediates exposed (a fusion); "
                                "the first prefix model that differs on its own ends at this node"}
        return None

    def _proxy(self, blamed: str, outcomes: dict[str, Outcome], outputs: dict[str, Tensors]) -> str | None:
        """A target of this test, other than the blamed one, whose outputs all agree with PyTorch's."""
        for name, outcome in outcomes.items():
            if name == blamed or not outcome.ok or name not in outputs:
                continue
            verdict = judge({name: outcome}, outputs, [(REFERENCE, name)], {}, self.tolerances,
                            self.pool.internal_precision(), self.nan_policy)
            if not verdict.findings:
                return name
        return None

