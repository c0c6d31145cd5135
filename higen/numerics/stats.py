"""Per-operator numerical events of one test on each target, and the campaign hook that records them.

For every node of the model and every target that ran it, the node's output is compared with the
node's own inputs *on that target* (so a NaN that merely flows through is not blamed on the node):

``nan``        the output holds a NaN where no operand was NaN;
``inf``        the output holds +-Inf where every operand was finite (a pole such as x/0 or
               log(0), or an overflow);
``overflow``   such an Inf where no operand was zero either: the magnitude left the dtype's range
               (Exp(89) in float32, 1e30 * 1e30), not a pole;
``underflow``  the output is exactly 0 where every operand was finite and non-zero, for operators
               whose exact result can never be 0 then (Mul, Div, Exp, Pow, Sigmoid, Softmax, ...:
               ``ZERO_FREE``); Sub(x, x) or Relu(-1) giving 0 is arithmetic, not an underflow;
``any``        an execution with at least one of the four above;
``error``      the target failed on the test (compile or run, error/crash/timeout) and the message
               names this operator (a node name or op type in it; otherwise ``(unattributed)``).

For elementwise operators (``ELEMENTWISE``) the operands of each output element are taken element by
element, broadcasting as ONNX does; for other operators (MatMul, Conv, reductions, data movement) the
conditions hold for the operand tensors as a whole. Only floating-point outputs count for the first
four. Constant operands (initializers, Constant nodes) are read from the model.

Intermediate values come from a second run of the model with its intermediate tensors exposed as
graph outputs (:func:`higen.graph.expose_intermediates`), on the same targets. Exposing a
tensor can keep a compiler from fusing across it, so per-node events describe each operator as
executed unfused on that target; the test's verdict always comes from the original run.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from higen.backends.base import Outcome
from higen.execute import load_outputs
from higen.graph import Node, constant_values, expose_intermediates, nodes
from higen.tensors import Tensors, load_tensors

EVENTS = ("nan", "inf", "overflow", "underflow")
COUNTS = ("runs", *EVENTS, "any", "error")  # any: executions with at least one event
UNATTRIBUTED = "(unattributed)"
FAILED = ("error", "crash", "timeout")

ELEMENTWISE = frozenset("""
Abs Acos Acosh Add And Asin Asinh Atan Atanh BitShift Cast Ceil Celu Clip Cos Cosh Div Elu Equal Erf Exp
Floor Gelu Greater GreaterOrEqual HardSigmoid HardSwish IsInf IsNaN LeakyRelu Less LessOrEqual Log Max
Mean Min Mish Mod Mul Neg Not Or PRelu Pow Reciprocal Relu Round Selu Sigmoid Sign Sin Sinh Softplus
Softsign Sqrt Sub Sum Tan Tanh ThresholdedRelu Where Xor
""".split())
#: Exact result is never 0 when every operand is finite and non-zero (a 0 output is an underflow).
ZERO_FREE = frozenset("""
Mul Div Exp Pow Reciprocal Sigmoid Softmax Softplus Sqrt Tanh Erf Gelu Abs Neg Max Min ReduceProd
ReduceMax ReduceMin
""".split())


@dataclass
class NodeEvents:
    node: Node
    dtype: str  # of the node's first output
    by_target: dict[str, set[str]]  # target -> events of this node on it (targets that ran it)


def _masks(op_type: str, operands: list[np.ndarray], shape: tuple[int, ...]):
    """(any operand NaN, any operand non-finite, any operand zero), per output element for
    elementwise ops, else as scalars over whole operands."""
    floats = [x for x in operands if np.issubdtype(x.dtype, np.floating)]
    elementwise = op_type in ELEMENTWISE
    if elementwise:
        try:
            elementwise = np.broadcast_shapes(shape, *(x.shape for x in operands)) == shape
        except ValueError:
            elementwise = False

    def any_of(arrays):
        if elementwise:
            mask = np.zeros(shape, dtype=bool)
            for array in arrays:
                mask |= np.broadcast_to(array, shape)
            return mask
        return any(bool(array.any()) for array in arrays)

    return (any_of(np.isnan(x) for x in floats), any_of(~np.isfinite(x) for x in floats),
            any_of(x == 0 for x in operands))


def node_events(op_type: str, operands: list[np.ndarray], output: np.ndarray) -> set[str]:
    """The events (``EVENTS``) of one node execution: ``operands`` are its known input values."""
    if not np.issubdtype(output.dtype, np.floating) or output.size == 0:
        return set()
    operand_nan, operand_nonfinite, operand_zero = _masks(op_type, operands, output.shape)
    events = set()
    if (np.isnan(output) & ~operand_nan).any():
        events.add("nan")
    new_inf = np.isinf(output) & ~operand_nonfinite
    if new_inf.any():
        events.add("inf")
        if (new_inf & ~operand_zero).any():
            events.add("overflow")
    if op_type in ZERO_FREE and ((output == 0) & ~operand_nonfinite & ~operand_zero).any():
        events.add("underflow")
    return events


def events_by_node(model: onnx.ModelProto, inputs: Tensors, values: dict[str, Tensors]) -> list[NodeEvents]:
    """Events per node (topological order) and target; ``values``: target -> every tensor it computed
    (graph outputs and exposed intermediates). A node whose output a target lacks is not counted."""
    known = {**constant_values(model), **inputs}
    result = []
    for node in nodes(model):
        if node.op_type == "Constant" or not node.outputs:
            continue
        by_target, dtype = {}, ""
        for target, tensors in values.items():
            if not all(name in tensors for name in node.outputs):
                continue
            operands = [tensors.get(name, known.get(name)) for name in node.inputs if name]
            operands = [np.asarray(x) for x in operands if x is not None]
            by_target[target] = set().union(*(node_events(node.op_type, operands, np.asarray(tensors[name]))
                                              for name in node.outputs))
            dtype = np.asarray(tensors[node.outputs[0]]).dtype.name
        if by_target:
            result.append(NodeEvents(node, dtype, by_target))
    return result


def attribute_error(model: onnx.ModelProto, message: str) -> str:
    """The op type a failure message points at: a node named in it, else an op type it mentions."""
    graph_nodes = nodes(model)
    for node in graph_nodes:
        if node.name and re.search(rf"(?<![\w/.]){re.escape(node.name)}(?![\w/.])", message):
            return node.op_type
    for op in dict.fromkeys(node.op_type for node in graph_nodes):
        if re.search(rf"\b{re.escape(op)}\b", message):
            return op
    return UNATTRIBUTED


def record_from_values(model: onnx.ModelProto, inputs: Tensors, values: dict[str, Tensors],
                failures: dict[str, str]) -> dict[str, Any]:
    """Counts per op type and target for one test, plus the nodes where targets disagree.
    ``values``: target -> tensors it computed; ``failures``: target -> message of its failure."""
    ops: dict[str, dict[str, dict[str, int]]] = {}

    def tally(op: str, target: str) -> dict[str, int]:
        return ops.setdefault(op, {}).setdefault(target, dict.fromkeys(COUNTS, 0))

    disagreements = []
    for entry in events_by_node(model, inputs, values):
        for target, events in entry.by_target.items():
            counts = tally(entry.node.op_type, target)
            counts["runs"] += 1
            counts["any"] += bool(events)
            for event in events:
                counts[event] += 1
        ran = set(entry.by_target)
        for event in EVENTS:
            having = {t for t, events in entry.by_target.items() if event in events}
            if having and having != ran:
                disagreements.append({"node": entry.node.name, "op": entry.node.op_type, "dtype": entry.dtype,
                                      "event": event,
                                      "with": sorted(having), "without": sorted(ran - having)})
    errors = {}
    for target, message in failures.items():
        errors[target] = attribute_error(model, message)
        tally(errors[target], target)["error"] += 1
    compact = {op: {target: {k: v for k, v in counts.items() if v} for target, counts in by_target.items()}
               for op, by_target in ops.items()}  # zero counts left out
    return {"ops": compact, "disagreements": disagreements, "errors": errors}


def run_instrumented(pool, model_path: Path, inputs_path: Path, work: Path,
                     targets: list[str]) -> tuple[onnx.ModelProto, dict[str, Tensors], dict[str, str]]:
    """Run ``model_path`` with its intermediates exposed on ``targets`` of a BackendPool.
    Returns (the original model, target -> tensors, target -> why the instrumented run failed)."""
    model = onnx.load(str(model_path))
    instrumented, _ = expose_intermediates(model)
    work.mkdir(parents=True, exist_ok=True)
    path = work / "instrumented.onnx"
    onnx.save(instrumented, path)
    runs = pool.run(path, inputs_path, work, only=targets) if targets else {}
    values = load_outputs(runs)
    skipped = {name: f"{o.status}: {(o.message or o.error_type)[:200]}" for name, o in runs.items() if not o.ok}
    return model, values, skipped


def failure_message(outcome: Outcome | dict) -> str:
    data = outcome if isinstance(outcome, dict) else outcome.to_json() | {"log_tail": outcome.log_tail}
    return " ".join(str(data.get(key) or "") for key in ("error_type", "message", "log_tail", "signal"))


def record_test(pool, model_path: Path, inputs_path: Path, work: Path,
                outcomes: dict[str, Outcome | dict]) -> dict[str, Any]:
    """The numerics record of one executed test: re-runs it instrumented on the targets whose run
    succeeded, attributes the failures of the others. ``outcomes`` as the engine (Outcome) or a bug
    case's meta.json (dicts) holds them; the reference (torch:cpu) is not a pool target and is skipped."""
    status = {name: (o["status"] if isinstance(o, dict) else o.status) for name, o in outcomes.items()}
    ok = [name for name in pool.workers if status.get(name) == "ok"]
    model, values, skipped = run_instrumented(pool, model_path, inputs_path, work, ok)
    failures = {name: failure_message(outcomes[name]) for name in pool.workers if status.get(name) in FAILED}
    record = record_from_values(model, dict(load_tensors(inputs_path)), values, failures)
    if skipped:
        record["instrumented_failed"] = skipped
    return record


class NumericsRecorder:
    """The engine hook: after a test is judged, ``record`` appends its per-op counts to
    ``RUN_DIR/numerics.jsonl`` (one JSON object per test). Costs one more run per target."""

    FILE = "numerics.jsonl"

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / self.FILE
        self.handle = open(self.path, "a", buffering=1)

    def record(self, pool, index: int, test, outcomes: dict[str, Outcome]) -> dict[str, Any]:
        """``test``: the engine's TestCase (its directory must still exist)."""
        entry = {"test": index, "seed": test.config.seed, "inputs": test.config.input_strategy,
                 **record_test(pool, test.model_path, test.inputs_path, test.directory / "numerics", outcomes)}
        self.handle.write(json.dumps(entry) + "\n")
        return entry

    def close(self) -> None:
        self.handle.close()
