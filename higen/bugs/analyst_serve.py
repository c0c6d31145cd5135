"""The analyst worker: ``python -m higen.bugs.analyst_serve``. Everything that computes on a generated
model on behalf of the campaign runs here, under the worker's time and memory caps, so the driver
never does (a huge constant pooled with a huge kernel cannot stall the fuzzing loop):

- ``instrument``: a copy of the model with its data-dependent intermediates as graph outputs;
- ``prefix``: the subgraph computing one tensor, as a model of its own;
- ``locate``: from the intermediates of one or two targets, the first diverging node and what its
  own inputs say about it (:func:`locate`);
- ``analyze``: the output-level features and noise tags of a case's findings
  (:func:`higen.bugs.analysis.analyze_mismatch`);
- ``extras``: a case's standalone ``repro.py`` and, for TVM, the folded model.

NumPy and onnx warnings go to the worker's log, never to the campaign's console.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from higen.bugs.analysis import analyze_mismatch, nonfinite
from higen.bugs.nodecheck import check_node, evaluate
from higen.bugs.rootcause import attribute_class
from higen.bugs.standalone import write_case_extras
from higen.graph import ancestors, constant_values, data_dependent, expose_intermediates, node_name, prefix_model
from higen.numerics.localize import first_divergence
from higen.oracle import Tolerance
from higen.tensors import Tensors, load_tensors
from higen.workers import serve


def _tolerances(data: dict[str, Any]) -> dict[str, Tolerance]:
    return {dtype: Tolerance(**tol) for dtype, tol in (data or {}).items()}


def _narrowed(tolerances: dict[str, Tolerance], precision: dict[str, dict[str, str]],
              targets: list[str]) -> dict[str, Tolerance]:
    """Tolerances where a target computing a dtype in a narrower one is judged at the narrower's."""
    from higen.oracle import DEFAULT_TOLERANCES, EXACT

    result = dict(tolerances)
    for target in targets:
        for declared, actual in (precision.get(target) or {}).items():
            result[declared] = tolerances.get(actual) or DEFAULT_TOLERANCES.get(actual, EXACT)
    return result


def all_values(model: onnx.ModelProto, inputs: Tensors, intermediates: Tensors) -> Tensors:
    """Every tensor a node can read: inputs, constants, the exposed intermediates, and the small
    constant subgraphs (shape arithmetic) that were not exposed, evaluated here node by node."""
    values = {**constant_values(model), **inputs, **intermediates}
    live = data_dependent(model)
    for node in model.graph.node:
        wanted = [o for o in node.output if o and o not in values]
        if not wanted or any(o in live for o in wanted):
            continue
        if all(not name or name in values for name in node.input):
            try:
                for name, value in zip(node.output, evaluate(node, model.opset_import,
                                                             [values.get(n) for n in node.input], widen=False)):
                    values[name] = value
            except Exception:
                continue
    return values


def _node_facts(node: onnx.NodeProto, values: Tensors) -> dict[str, Any]:
    ins = [values.get(name) for name in node.input if name]
    present = [v for v in ins if v is not None]
    out = values.get(node.output[0]) if node.output else None
    return {"op_type": node.op_type, "dtype": out.dtype.name if out is not None else "",
            "attrs": attribute_class(node, [v.dtype.name for v in present], [v.ndim for v in present])}


def _sides(node: onnx.NodeProto, per_target: dict[str, Tensors]) -> dict[str, tuple[list, list]] | None:
    sides = {}
    for target, values in per_target.items():
        outputs = [values.get(o) for o in node.output if o]
        if any(o is None for o in outputs) or any(n and n not in values for n in node.input):
            return None
        sides[target] = ([values.get(n) if n else None for n in node.input], outputs)
    return sides


def locate(request: dict[str, Any]) -> dict[str, Any]:
    """The first diverging node among the ancestors of ``output`` and the verdict of its own inputs.

    With two targets' intermediates: the first node (topological order) whose output differs, judged
    by :func:`higen.bugs.nodecheck.check_node` on both sides. With one target's (its partner, the
    PyTorch reference, has no intermediates): the first node whose output disagrees with the op's
    definition on that target's own inputs ("self-check"); none means the target is consistent at
    every node and the reference is the odd one out."""
    model = onnx.load(request["model"])
    inputs = load_tensors(request["inputs"])
    targets = list(request["intermediates"])
    tolerances = _narrowed(_tolerances(request.get("tolerances")), request.get("precision") or {}, targets)
    per_target = {t: all_values(model, inputs, load_tensors(p)) for t, p in request["intermediates"].items()}
    wanted = ancestors(model, request.get("output"))
    by_name = {node_name(node, i): node for i, node in enumerate(model.graph.node)}
    if len(targets) == 2:
        a, b = targets
        first, diverging = first_divergence(model, per_target[a], per_target[b], a, b, wanted, tolerances,
                                            request.get("precision") or {})
        if first is None:
            return {"status": "ok", "node": None, "note": "no node differs with the intermediates exposed"}
        node = by_name[first["name"]]
        return {"status": "ok", "node": {**first, **_node_facts(node, per_target[b])}, "diverging": diverging,
                "check": _check(node, model, per_target, tolerances)}
    (target,) = targets
    for index, node in enumerate(model.graph.node):
        name = node_name(node, index)
        if name not in wanted or node.op_type == "Constant":
            continue
        verdict = _check(node, model, {target: per_target[target]}, tolerances)
        if verdict.get("consistent", {}).get(target) is False:
            return {"status": "ok", "node": {"name": name, "op_type": node.op_type, "index": index,
                                             "output": node.output[0], **_node_facts(node, per_target[target])},
                    "check": verdict, "method": "self-check"}
    return {"status": "ok", "node": None, "consistent_everywhere": True,
            "note": f"{target} matches the definition of every node on its own inputs"}


def _check(node: onnx.NodeProto, model: onnx.ModelProto, per_target: dict[str, Tensors],
           tolerances: dict[str, Tolerance]) -> dict[str, Any]:
    sides = _sides(node, per_target)
    if sides is None:
        return {"note": "the node's inputs or outputs were not exposed on every side"}
    try:
        verdict = check_node(node, model.opset_import, sides, tolerances)
    except Exception as error:  # the reference implementation cannot evaluate it: no verdict
        return {"note": f"no reference evaluation: {type(error).__name__}: {str(error)[:200]}"}
    return {"consistent": verdict.consistent, "explained": verdict.explained, "ub": verdict.ub,
            "rounding": verdict.rounding}


def analyze(request: dict[str, Any]) -> dict[str, Any]:
    model = onnx.load(request["model"])
    inputs = load_tensors(request["inputs"])
    outputs = {target: load_tensors(path) for target, path in request["outputs"].items()}
    tolerances = _tolerances(request.get("tolerances"))
    descriptions = request.get("descriptions") or {}
    analyses = [analyze_mismatch(f, outputs, model, tolerances, descriptions, inputs) for f in request["findings"]]
    for analysis in analyses:
        analysis["inputs_nonfinite"] = nonfinite(inputs)
    return {"status": "ok", "analyses": analyses}


def ancestor_tensors(request: dict[str, Any]) -> dict[str, Any]:
    """Data-dependent tensors the diverging output depends on, in topological order (at most ``limit``)."""
    model = onnx.load(request["model"])
    wanted, live = ancestors(model, request.get("output")), data_dependent(model)
    tensors = [node.output[0] for i, node in enumerate(model.graph.node)
               if node_name(node, i) in wanted and node.output and node.output[0] in live]
    return {"status": "ok", "tensors": tensors[:int(request.get("limit", len(tensors)))]}


def handle(request: dict[str, Any]) -> dict[str, Any]:
    op = request.get("op")
    if op == "instrument":
        instrumented, exposed = expose_intermediates(onnx.load(request["model"]))
        onnx.save(instrumented, request["out"])
        return {"status": "ok", "exposed": len(exposed)}
    if op == "prefix":
        onnx.save(prefix_model(onnx.load(request["model"]), request["output"]), request["out"])
        return {"status": "ok"}
    if op == "locate":
        return locate(request)
    if op == "analyze":
        return analyze(request)
    if op == "ancestors":
        return ancestor_tensors(request)
    if op == "extras":
        write_case_extras(Path(request["case"]), request["meta"])
        return {"status": "ok"}
    raise ValueError(f"unknown analyst request {op!r}")


def make_handler():
    warnings.simplefilter("ignore")  # numpy/onnx warnings about generated models: noise in the log
    np.seterr(all="ignore")
    return handle, {"role": "analyst", "onnx": onnx.__version__}


if __name__ == "__main__":
    serve(make_handler)
