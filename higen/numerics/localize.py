"""``higen localize CASE`` (the command is :mod:`higen.cli.localize`): the first node where two
targets part ways, and the optimization behind it.

1. The case's finding names two targets (a mismatch) or one (an error: its partner is the other side
   of the first compared pair that holds it). PyTorch (``torch:cpu``) has no intermediate values, so
   when it is one side, a *proxy* stands in for it: a target of the case whose saved outputs agree
   with PyTorch's, else ``ort:cpu:O0``.
2. Both targets run the case again (crash-isolated workers); the finding must reproduce.
3. For a value mismatch, the model runs once more with its intermediate tensors exposed as graph
   outputs; nodes that feed the diverging output are compared in topological order with the
   oracle's per-dtype tolerances (:func:`higen.oracle.compare_tensors`), and the first that differs
   is the answer: its inputs agree by construction. Exposing tensors can stop a fusion and make the
   difference vanish; then each node's prefix (the subgraph computing it) is run on its own instead.
4. The pass search (:mod:`higen.numerics.passes`) on each side that has switches.

Writes ``localization.json`` into the case folder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import onnx

from higen.backends.base import REFERENCE, Outcome, Target
from higen.errors import UserError
from higen.execute import Execution, execute, judge_outcomes
from higen.graph import ancestors, expose_intermediates, nodes, prefix_model, producers
from higen.numerics.passes import SwitchablePool, search
from higen.oracle import Judgement, Verdict, compare_tensors, judge
from higen.tensors import Tensors, load_tensors, scratch_dir

PROXY_FALLBACK = "ort:cpu:O0"
VALUE_VERDICTS = {"mismatch", "nan_inf_mismatch", "shape_mismatch", "dtype_mismatch"}


def _precision(precision: dict[str, dict[str, str]], a: str, b: str, dtype: str) -> str | None:
    return precision.get(a, {}).get(dtype) or precision.get(b, {}).get(dtype)


def first_divergence(model: onnx.ModelProto, left: Tensors, right: Tensors, a: str, b: str, wanted: set[str],
                     tolerances, precision) -> tuple[dict[str, Any] | None, list[str]]:
    """The first node (topological order, among ``wanted``) whose output differs between two targets'
    tensors, and the names of all nodes that differ."""
    first, diverging = None, []
    for node in nodes(model):
        if node.name not in wanted:
            continue
        for name in node.outputs:
            if name not in left or name not in right:
                continue
            verdict, detail, max_abs, _ = compare_tensors(left[name], right[name], tolerances,
                                                          _precision(precision, a, b, left[name].dtype.name))
            if verdict is not Verdict.OK:
                diverging.append(node.name)
                if first is None:
                    first = {"name": node.name, "op_type": node.op_type, "index": node.index, "output": name,
                             "inputs": [i for i in node.inputs if i], "verdict": str(verdict), "detail": detail}
                break
    return first, diverging


class Localizer:
    """One case and its workers: the oracle's verdict on a pair, and node localisation (module doc)."""

    def __init__(self, case, pool: SwitchablePool, work: Path):
        self.case, self.pool, self.work = case, pool, work
        self.model = onnx.load(str(case.model_path))
        self.tolerances = case.tolerances
        self.precision = pool.internal_precision()
        self.reference = load_tensors(case.reference_path)

    def execute(self, targets: list[str], pairs: list[tuple[str, str]], folder: str) -> Execution:
        """The case's model run on ``targets`` (outputs in ``folder``) and judged on ``pairs``."""
        return execute(self.pool, self.case, self.work / folder, targets, pairs=pairs, tolerances=self.tolerances,
                       nan_policy=self.case.nan_policy, reference=self.reference)

    def judge_pair(self, a: str, b: str, outcomes: dict[str, Outcome]) -> Judgement:
        """The oracle's verdict on (a, b) for these outcomes (the reference read from the case)."""
        return judge_outcomes(outcomes, self.reference, pairs=[(a, b)], producers=producers(self.model),
                              tolerances=self.tolerances, precision=self.precision,
                              nan_policy=self.case.nan_policy).judgement

    def run(self, model_path: Path, targets: list[str], folder: str) -> dict[str, Outcome]:
        (self.work / folder).mkdir(parents=True, exist_ok=True)
        return self.pool.run(model_path, self.case.inputs_path, self.work / folder, only=targets)

    def by_intermediates(self, a: str, b: str, wanted: set[str]) -> tuple[dict | None, list[str], str]:
        instrumented, _ = expose_intermediates(self.model)
        path = self.work / "instrumented.onnx"
        onnx.save(instrumented, path)
        outcomes = self.run(path, [a, b], "instrumented")
        failed = [f"{n}: {o.status} {o.message[:200]}" for n, o in outcomes.items() if not o.ok]
        if failed:
            return None, [], "the model with exposed intermediates failed on " + "; ".join(failed)
        left, right = (load_tensors(outcomes[t].outputs_path) for t in (a, b))
        first, diverging = first_divergence(self.model, left, right, a, b, wanted, self.tolerances, self.precision)
        return first, diverging, "" if first else "no node differs with the intermediates exposed"

    def by_prefixes(self, a: str, b: str, wanted: set[str]) -> tuple[dict | None, list[str], str]:
        """Each wanted node's prefix model on its own, in topological order, up to the first difference."""
        for node in nodes(self.model):
            if node.name not in wanted or node.op_type == "Constant" or not node.outputs:
                continue
            try:
                prefix = prefix_model(self.model, node.outputs[0])
            except KeyError:
                continue  # no type known for this tensor
            path = self.work / "prefix.onnx"
            onnx.save(prefix, path)
            outcomes = self.run(path, [a, b], "prefix")
            if not all(o.ok for o in outcomes.values()):
                continue
            left, right = (load_tensors(outcomes[t].outputs_path) for t in (a, b))
            first, diverging = first_divergence(prefix, left, right, a, b, {node.name}, self.tolerances,
                                                self.precision)
            if first:
                first["index"] = node.index
                return first, diverging, ""
        return None, [], "no node's prefix differs on its own either: the difference needs the whole graph"

    def node(self, a: str, b: str, output: str | None) -> dict[str, Any]:
        wanted = ancestors(self.model, output)
        first, diverging, note = self.by_intermediates(a, b, wanted)
        method = "intermediates"
        if first is None:
            first, diverging, more = self.by_prefixes(a, b, wanted)
            method, note = "prefixes", f"{note}; {more}" if more else note
        result = {"node": first, "method": method if first else None, "diverging_nodes": diverging}
        if note:
            result["node_note"] = note
        return result


def choose_pair(case, finding: dict[str, Any], targets: list[str] | None) -> tuple[str, str]:
    if targets:
        if len(targets) != 2:
            raise UserError(f"--targets takes two targets, not {len(targets)}")
        return targets[0], targets[1]
    involved = list(finding["targets"])
    if len(involved) == 2:
        return involved[0], involved[1]
    target = involved[0]
    for pair in case.pairs:
        if target in pair:
            return (pair[0], target) if pair[1] == target else (target, pair[1])
    raise UserError(f"the case compared {target} with nothing: pass --targets A,B")


def choose_proxy(case, blamed: str) -> str:
    """A runnable stand-in for PyTorch: a case target whose saved outputs agree with PyTorch's."""
    from higen.bugs.case import load_outputs

    saved = load_outputs(case.path, case.meta)
    for target in case.targets:
        if target == blamed or target not in saved:
            continue
        outcome = {target: Outcome(target, "ok")}
        if not judge(outcome, saved, [(REFERENCE, target)], {}, case.tolerances, {}, case.nan_policy).findings:
            return target
    return PROXY_FALLBACK


def localize_case(case_dir: Path, targets: list[str] | None = None, pass_search: bool = True,
                  timeout_s: float = 60.0, memory_limit_mb: int = 8192, budget_s: float = 600.0) -> dict[str, Any]:
    """Localise a case's finding (module doc); writes and returns the content of localization.json."""
    from higen.bugs.case import load_case

    case = load_case(case_dir)
    finding = case.finding()
    a, b = choose_pair(case, finding, targets)
    report: dict[str, Any] = {"case": case.path.name, "finding": {k: finding.get(k) for k in
                              ("verdict", "targets", "output", "signature")}, "compared": [a, b]}
    runnable = [t for t in (a, b) if t != REFERENCE]
    proxy = choose_proxy(case, runnable[0]) if REFERENCE in (a, b) else None
    if proxy:
        report["proxy"] = {"for": REFERENCE, "target": proxy,
                           "why": "PyTorch has no intermediate values; this target agrees with it on the case's outputs"
                           if proxy in case.targets else "no case target agrees with PyTorch; ORT without optimizations stands in"}
    try:
        parsed = [Target.parse(t) for t in dict.fromkeys(runnable + ([proxy] if proxy else []))]
    except ValueError as error:
        raise UserError(str(error)) from error
    work = scratch_dir("higen-localize-")
    try:
        with SwitchablePool(parsed, work / "logs", timeout_s, memory_limit_mb) as pool:
            localizer = Localizer(case, pool, work)
            baseline = localizer.execute(runnable, [(a, b)], "baseline")
            base, judgement = baseline.outcomes, baseline.judgement
            report["reproduced"] = bool(judgement.findings)
            report["baseline"] = {n: o.status for n, o in base.items()}
            if not judgement.findings:
                report["answer"] = f"the finding does not reproduce on {a} vs {b} here"
            else:
                report["reproduced_as"] = judgement.findings[0].detail[:300]
                if str(finding["verdict"]) in VALUE_VERDICTS and all(o.ok for o in base.values()):
                    report.update(locate_node(localizer, a, b, proxy, finding.get("output"), report.get("proxy")))
                else:
                    report["node_note"] = "not a value mismatch (a side fails): the error message, not values, says where"
                if pass_search:
                    report["pass_search"] = {}
                    for target in runnable:
                        def agrees(outcome: Outcome, target=target) -> bool:
                            return not localizer.judge_pair(a, b, {**base, target: outcome}).findings
                        report["pass_search"][target] = search(pool, target, case.model_path, case.inputs_path,
                                                               work / "search", base[target], agrees, budget_s)
                report["answer"] = summarize(report)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    (case.path / "localization.json").write_text(json.dumps(report, indent=2, sort_keys=True, default=str))
    return report


def locate_node(localizer: Localizer, a: str, b: str, proxy: str | None, output: str | None,
                proxy_report: dict[str, Any] | None) -> dict[str, Any]:
    """The node part of the report; with a proxy for PyTorch, only when the proxy agrees with PyTorch
    on this machine (``proxy_report`` gets ``agrees_here``)."""
    if proxy:
        stand_in = localizer.execute([proxy], [(REFERENCE, proxy)], "proxy")
        proxy_report["agrees_here"] = not stand_in.judgement.findings
        if not proxy_report["agrees_here"]:
            other = b if a == REFERENCE else a
            return {"node_note": f"the stand-in {proxy} disagrees with PyTorch too, so comparing it with {other} "
                                 f"cannot show where {other} leaves PyTorch; pass --targets A,B to compare two "
                                 "runtimes instead"}
    left, right = (proxy if t == REFERENCE else t for t in (a, b))
    return localizer.node(left, right, output)


def summarize(report: dict[str, Any]) -> str:
    parts = []
    node = report.get("node")
    if node:
        parts.append(f"first diverging node: {node['name']} ({node['op_type']}, output {node['output']}): {node['detail']}")
    elif report.get("node_note"):
        parts.append(report["node_note"])
    for target, result in (report.get("pass_search") or {}).items():
        parts.append(f"{target}: {result['answer']}")
    return "; ".join(parts)
