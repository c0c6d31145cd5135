"""``higen reduce CASE`` (the command is :mod:`higen.cli.reduce`): shrink a bug case's model to a
small graph that still gives the same signature.

1. Every value of the original model is computed once by ``onnx.reference`` (by ONNX Runtime at O0,
   in a worker, when the reference evaluator cannot run the model).
2. The graph is cut to the failing part: for a mismatch, the nodes the first diverging output depends
   on, with that output alone; for a crash/error/timeout, the smallest cone of one graph output that
   still fails.
3. Delta debugging (ddmin) over the remaining nodes. A removed node's outputs that a kept node still
   reads become graph inputs fed with the values from step 1; values that were compile-time constants
   in the original (initializers, Constant nodes and what only they feed) become initializers, so
   constant-dependent rewrites (fusions) still see constants. Each candidate is checked with the ONNX
   checker (full check) and run on the finding's real targets through :class:`BackendPool` (a
   candidate that crashes a runtime costs a worker restart, nothing more), then judged by the oracle.
   Where the finding compares with PyTorch, a candidate fed only original graph inputs is expected to
   give PyTorch's recorded outputs; once it is fed an intermediate value, the step-1 values (which
   made that input) stand in for PyTorch.

The result goes to ``CASE/reduced/`` (model.onnx, inputs.npz, outputs/, meta.json with the node
counts before and after, repro.py); the original case is left untouched. Exit status: 0 reduced
(or already minimal) with the same signature, 1 the case does not reproduce here.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from higen import __version__
from higen.backends.base import REFERENCE, Target
from higen.backends.pool import BackendPool
from higen.bugs.analysis import analyze_mismatch
from higen.bugs.case import FORMAT_VERSION, BugCase, file_name
from higen.bugs.rootcause import graph_form
from higen.bugs.store import outcome_json, write_meta
from higen.execute import Execution, execute
from higen.generation.config import GenConfig
from higen.graph import array_info, cone, constant_names, inferred_types, node_name, producers, submodel
from higen.tensors import Tensors, load_tensors, save_tensors, scratch_dir
from higen.testcase import TestCase
from higen.workers import DEFAULT_MEMORY_LIMIT_MB

FAILURES = ("crash", "error", "timeout")
STAND_IN = "ort:cpu:O0"
REDUCED = "reduced"
REDUCED_REFERENCE = "outputs/reference.npz"


def _declared_types(model: onnx.ModelProto) -> dict[str, np.dtype]:
    try:
        inferred = inferred_types(model)
    except Exception:  # inference is only a dtype cross-check here
        return {}
    return {name: helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
            for name, value in inferred.items() if value.type.tensor_type.elem_type}


def evaluate_all(model: onnx.ModelProto, inputs: Tensors, work: Path, pool: BackendPool) -> tuple[Tensors, str]:
    """Every value of ``model`` on ``inputs`` (graph inputs included), and which evaluator made them;
    ``pool``: the reduction's workers (its stand-in target, when it has one, computes them)."""
    names = [out for node in model.graph.node for out in node.output if out]
    types = _declared_types(model)
    try:
        results = ReferenceEvaluator(model).run(names, dict(inputs))
        values, source = dict(zip(names, results)), "onnx.reference"
    except Exception:  # the reference evaluator lacks an op or a dtype: ONNX Runtime O0 in a worker
        try:
            values, source = _evaluate_with_ort(model, inputs, names, types, work, pool), STAND_IN
        except RuntimeError:  # no intermediate values: only nodes nobody downstream needs can go
            values, source = {}, "none"
    fixed = {}
    for name, value in values.items():
        value = np.asarray(value)
        fixed[name] = value.astype(types[name]) if name in types and value.dtype != types[name] else value
    return {**inputs, **fixed}, source


def _evaluate_with_ort(model: onnx.ModelProto, inputs: Tensors, names: list[str], types: dict[str, np.dtype],
                       work: Path, pool: BackendPool) -> Tensors:
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    present = {value.name for value in exposed.graph.output}
    for name in names:
        if name in types and name not in present:
            exposed.graph.output.append(helper.make_tensor_value_info(
                name, helper.np_dtype_to_tensor_dtype(types[name]), None))
    directory = work / "all-values"
    directory.mkdir(parents=True, exist_ok=True)
    onnx.save(exposed, directory / "model.onnx")
    save_tensors(directory / "inputs.npz", inputs)
    if STAND_IN in pool.workers:  # the finding's own unoptimized ORT: no second worker
        outcome = pool.run(directory / "model.onnx", directory / "inputs.npz", directory, only=[STAND_IN])[STAND_IN]
    else:  # started only now: onnx.reference computes the values of almost every model
        with BackendPool([Target.parse(STAND_IN)], work / "logs", pool.timeout_s) as own:
            outcome = own.run(directory / "model.onnx", directory / "inputs.npz", directory)[STAND_IN]
    if not outcome.ok:
        raise RuntimeError(f"neither onnx.reference nor {STAND_IN} computes the model's values: {outcome.message[:200]}")
    return load_tensors(outcome.outputs_path)


def _split(items: list[int], parts: int) -> list[list[int]]:
    size, extra = divmod(len(items), parts)
    chunks, start = [], 0
    for index in range(parts):
        end = start + size + (1 if index < extra else 0)
        chunks.append(items[start:end])
        start = end
    return [chunk for chunk in chunks if chunk]


KIND_VERDICTS = {"value": "mismatch", "nan_inf": "nan_inf_mismatch", "shape": "shape_mismatch",
                 "dtype": "dtype_mismatch"}


def focus_on_root_cause(finding: dict[str, Any], nodes: list[onnx.NodeProto], values: Tensors) -> dict[str, Any]:
    """A mismatch whose root cause names its first diverging node is reduced around that node: the
    candidate's only output is the node's output, and the predicate is "the pair still differs
    there, in the same way", i.e. the same root cause, whichever graph output showed it first.
    Other findings keep their own output and signature."""
    cause = finding.get("root_cause") or {}
    names = {node_name(node, i): node for i, node in enumerate(nodes)}
    node = names.get(cause.get("node", ""))
    if node is None or not node.output or node.output[0] not in values or cause.get("kind") not in KIND_VERDICTS:
        return finding
    output = node.output[0]
    left, right = finding["targets"][:2]
    signature = f"{KIND_VERDICTS[cause['kind']]}|{left}|{right}|{node.op_type}|{values[output].dtype}"
    return {**finding, "output": output, "signature": signature, "output_signature": finding["signature"]}


@dataclass
class Candidate:
    keep: tuple[int, ...]
    model: onnx.ModelProto
    feeds: Tensors
    directory: Path
    trial: Execution
    reference: Tensors | None = None  # expected outputs, when the finding compares with PyTorch
    reference_source: str = ""


@dataclass
class Reduction:
    reproduced: bool
    nodes_before: int
    best: Candidate | None = None
    tried: int = 0
    source: str = ""
    seconds: float = 0.0
    steps: list[str] = field(default_factory=list)

    @property
    def nodes_after(self) -> int:
        return len(self.best.keep) if self.best else self.nodes_before


class Reducer:
    """Delta debugging over the nodes of one case's model, judged on the real targets."""

    def __init__(self, case: BugCase, pool: BackendPool, work: Path, signature: str | None = None,
                 max_candidates: int = 500, budget_s: float = math.inf):
        self.case = case
        self.finding = case.finding(signature)
        self.mismatch = self.finding["verdict"] not in FAILURES
        self.targets = [t for t in self.finding["targets"] if t != REFERENCE]
        self.needs_reference = REFERENCE in self.finding["targets"]
        self.pairs = [tuple(self.finding["targets"])] if self.mismatch else []
        self.pool, self.work = pool, work
        self.max_candidates = max_candidates
        self.model = onnx.load(str(case.model_path))
        self.nodes = list(self.model.graph.node)
        self.outputs = [value.name for value in self.model.graph.output]
        graph_inputs = {value.name for value in self.model.graph.input}
        self.weights = {init.name: init for init in self.model.graph.initializer if init.name not in graph_inputs}
        self.graph_inputs = graph_inputs - set(self.weights)
        self.recorded = load_tensors(case.reference_path)
        self.constant = constant_names(self.model)
        self.values, self.source = evaluate_all(self.model, load_tensors(case.inputs_path), work, pool)
        if self.mismatch:
            self.finding = focus_on_root_cause(self.finding, self.nodes, self.values)
        self.signature = self.finding["signature"]
        self.deadline = time.monotonic() + budget_s
        self.cache: dict[tuple[int, ...], bool] = {}
        self.best: Candidate | None = None
        self.tried = 0

    # -- candidates ------------------------------------------------------------------------------
    def build(self, keep: tuple[int, ...]) -> tuple[onnx.ModelProto, Tensors] | None:
        """The model made of the nodes ``keep`` (original order), or None when it is not valid."""
        nodes = [self.nodes[i] for i in keep]
        produced = [out for node in nodes for out in node.output if out]
        consumed = {name for node in nodes for name in node.input if name}
        if self.mismatch:
            outputs = [self.finding["output"]] if self.finding["output"] in produced else []
        else:
            outputs = [out for out in produced if out not in consumed or out in self.outputs]
        if not outputs or any(out not in self.values for out in outputs):
            return None
        made = set(produced)
        needed = list(dict.fromkeys(name for node in nodes for name in node.input if name and name not in made))
        inputs, weights, feeds = [], [], {}
        for name in needed:
            if name in self.weights:
                weights.append(self.weights[name])
            elif name not in self.values:
                return None
            elif name in self.constant:
                weights.append(numpy_helper.from_array(self.values[name], name))
            else:
                inputs.append(array_info(name, self.values[name]))
                feeds[name] = self.values[name]
        model = submodel(self.model, nodes, inputs, [array_info(out, self.values[out]) for out in outputs], weights,
                         self.model.graph.name or "reduced", "higen-reduce")
        try:
            onnx.checker.check_model(model, full_check=True)
        except Exception:  # the checker or shape inference rejects the candidate: not a valid test
            return None
        return model, feeds

    def reproduces(self, keep: list[int] | tuple[int, ...]) -> bool:
        key = tuple(sorted(keep))
        if key in self.cache:
            return self.cache[key]
        if self.tried >= self.max_candidates or time.monotonic() > self.deadline:
            return False
        self.tried += 1
        built = self.build(key)
        verdict = False
        if built is not None:
            model, feeds = built
            directory = self.work / f"candidate-{self.tried}"
            directory.mkdir()
            onnx.save(model, directory / "model.onnx")
            save_tensors(directory / "inputs.npz", feeds)
            reference, source = self.reference_for(model, feeds) if self.needs_reference else (None, "")
            trial = execute(self.pool, TestCase(GenConfig(), directory, producers=producers(model)), directory,
                            self.targets, pairs=self.pairs, tolerances=self.case.tolerances,
                            nan_policy=self.case.nan_policy, reference=reference)
            verdict = self.signature in trial.signatures
            if verdict and (self.best is None or len(key) <= len(self.best.keep)):
                if self.best is not None:
                    shutil.rmtree(self.best.directory, ignore_errors=True)
                self.best = Candidate(key, model, feeds, directory, trial, reference, source)
            else:
                shutil.rmtree(directory, ignore_errors=True)
        self.cache[key] = verdict
        return verdict

    def reference_for(self, model: onnx.ModelProto, feeds: Tensors) -> tuple[Tensors, str]:
        """Expected outputs of a candidate and where they come from: PyTorch's recorded outputs while
        the candidate is fed only original graph inputs (it computes the same values then), else the
        step-1 values (they also made the candidate's inputs)."""
        names = [value.name for value in model.graph.output]
        if set(feeds) <= self.graph_inputs and all(name in self.recorded for name in names):
            return {name: self.recorded[name] for name in names}, f"{REFERENCE} (recorded)"
        return {name: self.values[name] for name in names}, f"{self.source} (stands in for {REFERENCE})"

    # -- the search ------------------------------------------------------------------------------
    def cut(self, steps: list[str]) -> list[int] | None:
        """The failing part of the graph, or None when even the whole model does not reproduce."""
        if self.mismatch:
            part = cone(self.model, [self.finding["output"]])
            steps.append(f"cut to output {self.finding['output']}: {len(part)} nodes")
            return part if self.reproduces(part) else None
        everything = list(range(len(self.nodes)))
        if not self.reproduces(everything):
            return None
        for part in sorted((cone(self.model, [out]) for out in self.outputs), key=len):
            if len(part) < len(everything) and self.reproduces(part):
                steps.append(f"cut to one output's cone: {len(part)} nodes")
                return part
        return everything

    def ddmin(self, items: list[int]) -> list[int]:
        """Zeller's delta debugging: a 1-minimal subset of ``items`` that still reproduces."""
        parts = 2
        while len(items) >= 2 and self.tried < self.max_candidates:
            chunks = _split(items, parts)
            smaller = next((c for c in chunks if len(c) < len(items) and self.reproduces(c)), None)
            if smaller is not None:
                items, parts = smaller, 2
                continue
            rests = ([i for i in items if i not in chunk] for chunk in chunks)
            rest = next((r for r in rests if r and self.reproduces(r)), None) if parts > 2 else None
            if rest is not None:
                items, parts = rest, max(parts - 1, 2)
                continue
            if parts >= len(items):
                break
            parts = min(len(items), parts * 2)
        return items

    def run(self) -> Reduction:
        began = time.perf_counter()
        steps: list[str] = []
        part = self.cut(steps)
        if part is None:
            return Reduction(False, len(self.nodes), None, self.tried, self.source, time.perf_counter() - began, steps)
        kept = self.ddmin(part)
        steps.append(f"ddmin: {len(part)} -> {len(kept)} nodes")
        return Reduction(True, len(self.nodes), self.best, self.tried, self.source, time.perf_counter() - began, steps)


def write_reduced(case: BugCase, reducer: Reducer, result: Reduction) -> Path:
    """Write ``CASE/reduced/`` atomically (staged, then renamed over any previous reduction)."""
    best = result.best
    staging = case.path / f".tmp-{REDUCED}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "outputs").mkdir(parents=True)
    onnx.save(best.model, staging / "model.onnx")
    save_tensors(staging / "inputs.npz", best.feeds)
    reference, source = best.reference, best.reference_source
    if reference is None:  # the finding does not involve PyTorch: the step-1 values, for information
        reference = {v.name: reducer.values[v.name] for v in best.model.graph.output}
        source = f"{result.source} (not used by the finding)"
    save_tensors(staging / REDUCED_REFERENCE, reference)
    for target, outcome in best.trial.outcomes.items():
        if outcome.ok:
            shutil.copy2(outcome.outputs_path, staging / "outputs" / f"{file_name(target)}.npz")
    described = reducer.pool.describe()
    findings = [f.to_json() for f in best.trial.judgement.findings]
    for finding in findings:  # on the small graph, noise and known differences show plainly
        if finding["verdict"] not in FAILURES:
            finding["analysis"] = analyze_mismatch(finding, best.trial.outputs, best.model, case.tolerances,
                                                   described, best.feeds)
    ops = sorted({node.op_type for node in best.model.graph.node})
    meta: dict[str, Any] = {
        "format_version": FORMAT_VERSION, "case": f"{case.path.name}/{REDUCED}", "reduced_from": "..",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "verdict": reducer.finding["verdict"],
        "signature": reducer.signature, "saved_for": [reducer.signature], "findings": findings,
        "root_cause": reducer.finding.get("root_cause"), "form": graph_form(best.model),
        "original_signature": reducer.finding.get("output_signature", reducer.signature),
        "targets": reducer.targets, "reference": REFERENCE, "reference_file": REDUCED_REFERENCE,
        "reference_source": source, "values_source": result.source,
        "nodes_before": result.nodes_before, "nodes_after": result.nodes_after, "onnx_nodes": result.nodes_after,
        "op_types": ops, "candidates_tried": result.tried, "reduce_s": round(result.seconds, 3), "steps": result.steps,
        "outcomes": {t: outcome_json(o) for t, o in best.trial.outcomes.items()},
        "versions": {"higen": __version__, "targets": described},
        "oracle": {**case.meta.get("oracle", {}), "pairs": [list(p) for p in reducer.pairs]},
        "inputs_nonfinite": any(v.dtype.kind == "f" and not np.isfinite(v).all() for v in best.feeds.values()),
    }
    write_meta(staging, meta)
    final = case.path / REDUCED
    if final.exists():
        old = case.path / f".tmp-{REDUCED}-old-{os.getpid()}"
        os.rename(final, old)
        shutil.rmtree(old, ignore_errors=True)
    os.rename(staging, final)
    return final


def reduce_case(case: BugCase, signature: str | None = None, timeout_s: float = 30.0,
                memory_limit_mb: int = DEFAULT_MEMORY_LIMIT_MB, max_candidates: int = 500,
                budget_s: float = math.inf) -> tuple[Reduction, Path | None]:
    """Reduce one case; returns the reduction and the ``reduced/`` folder (None when it did not reproduce)."""
    work = scratch_dir("higen-reduce-")
    try:
        finding = case.finding(signature)
        targets = [Target.parse(t) for t in finding["targets"] if t != REFERENCE]
        with BackendPool(targets, work / "logs", timeout_s, memory_limit_mb) as pool:
            reducer = Reducer(case, pool, work, signature, max_candidates, budget_s)
            result = reducer.run()
            folder = write_reduced(case, reducer, result) if result.reproduced and result.best else None
        return result, folder
    finally:
        shutil.rmtree(work, ignore_errors=True)
