"""Judge one node from its own inputs: is its output what the op's definition gives, and can the
difference between two targets be explained by how sensitive the op is to its inputs?

The definition is ONNX's reference implementation (``onnx.reference``), evaluated in float64 on the
node's actual inputs (float16/float32 operands widened), then rounded to the node's output dtype.
Sensitivity is measured, not assumed from op names: the node is evaluated again with every float
input moved by at least one unit in the last place of its dtype (or by the observed difference
between the two targets' inputs, when larger), with several sign patterns. A divergence that stays
within that spread is ill-conditioning (continuous outputs) or a flip at a discontinuity (integer
or boolean outputs, Floor/Ceil/Round/Sign): not a defect of the node.

Runs only inside the analyst worker (:mod:`higen.bugs.analyst_serve`), under its time and memory caps.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import onnx
from onnx.reference import ReferenceEvaluator

from higen.graph import array_info
from higen.oracle import DEFAULT_TOLERANCES, EXACT, Tolerance

DISCRETE_OPS = {"Floor", "Ceil", "Round", "Sign", "ArgMax", "ArgMin", "Greater", "Less", "Equal",
                "GreaterOrEqual", "LessOrEqual", "Mod", "Resize", "TopK"}
#: Ops whose result on given inputs is exact (selection, comparison, rounding, data movement): on its
#: own inputs such a node has no precision or conditioning excuse, so it must match exactly (within
#: the dtype's tolerance). Not for float16 inputs: a runtime may compute a float16 chain in float32
#: (ONNX Runtime's CPU provider does where it lacks a float16 kernel, issue 15977), and the exposed
#: intermediate is then a float16 rounding of what the node really read (two float32 values that
#: round to one float16 value make an apparent tie that ArgMax breaks "wrongly").
EXACT_OPS = {"ArgMax", "ArgMin", "Greater", "Less", "Equal", "GreaterOrEqual", "LessOrEqual", "Max", "Min",
             "Floor", "Ceil", "Round", "Sign", "Abs", "Neg", "Relu", "Not", "And", "Or", "Xor", "Where",
             "Concat", "Slice", "Reshape", "Transpose", "Gather", "Squeeze", "Unsqueeze", "Identity", "Pad",
             "Expand", "Tile", "Clip", "ReduceMax", "ReduceMin", "MaxPool", "Flatten", "Tril", "Triu"}
#: Fractions of the input step at which the node is evaluated again: a backward-stable result is
#: the exact function of an input within half an ulp, and near a pole only the smaller step shows it.
STEP_SCALES = (1.0, 0.5, 0.25)
WIDE = np.float64
SIGN_SAMPLES = 2  # random per-element sign patterns, beside the all-up / all-down corners


@dataclass
class NodeVerdict:
    """What the values say about one node on one or two targets."""

    consistent: dict[str, bool]  # target -> its output matches the op's definition on its own inputs
    explained: bool | None = None  # the two outputs differ only as much as the inputs' rounding allows
    ub: str = ""  # undefined behaviour seen at this node (out-of-range cast, overflow, division by zero)
    rounding: bool = False  # a Resize whose difference float32 coordinate (index) rounding explains
    note: str = ""


def evaluate(node: onnx.NodeProto, opsets, inputs: list[np.ndarray | None], widen: bool) -> list[np.ndarray]:
    """``node``'s outputs on ``inputs`` by ONNX's reference implementation (float operands in
    float64 when ``widen``); raises when the reference cannot evaluate it."""
    feeds, graph_inputs, names = {}, [], []
    for index, (name, value) in enumerate(zip(node.input, inputs)):
        if not name or value is None:
            names.append("")
            continue
        local = f"in{index}"
        if widen and value.dtype.kind == "f":
            value = value.astype(WIDE)
        feeds[local] = value
        graph_inputs.append(array_info(local, value))
        names.append(local)
    clone = onnx.NodeProto()
    clone.CopyFrom(node)
    del clone.input[:]
    clone.input.extend(names)
    outputs = [f"out{i}" for i in range(len(node.output))]
    del clone.output[:]
    clone.output.extend(outputs)
    graph = onnx.helper.make_graph([clone], "node", graph_inputs,
                                   [onnx.helper.make_empty_tensor_value_info(o) for o in outputs])
    model = onnx.helper.make_model(graph, opset_imports=opsets)
    with np.errstate(all="ignore"):
        return [np.asarray(v) for v in ReferenceEvaluator(model).run(None, feeds)]


def _tolerance(dtype: np.dtype, tolerances: dict[str, Tolerance]) -> Tolerance:
    return tolerances.get(dtype.name) or DEFAULT_TOLERANCES.get(dtype.name, EXACT)


def _as_output(value: np.ndarray, like: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        return value.astype(like.dtype) if value.dtype != like.dtype else value


def _distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Elementwise |a - b| in float64, 0 where both hold the same NaN/Inf, inf where only one does."""
    x, y = a.astype(WIDE), b.astype(WIDE)
    with np.errstate(all="ignore"):
        same_special = (np.isnan(x) & np.isnan(y)) | (np.isinf(x) & (x == y))
        one_special = ~np.isfinite(x) | ~np.isfinite(y)
        return np.where(same_special, 0.0, np.where(one_special, np.inf, np.abs(x - y)))


def _allowed(reference: np.ndarray, tolerance: Tolerance) -> np.ndarray:
    magnitude = np.abs(np.nan_to_num(reference.astype(WIDE), nan=0.0, posinf=0.0, neginf=0.0))
    return tolerance.atol + tolerance.rtol * magnitude


def _ulp(value: np.ndarray) -> np.ndarray:
    if value.dtype.kind != "f":
        return np.zeros(value.shape, dtype=WIDE)
    with np.errstate(all="ignore"):
        return np.nan_to_num(np.spacing(np.abs(value)).astype(WIDE), nan=0.0, posinf=0.0)


def spread(node: onnx.NodeProto, opsets, inputs: list[np.ndarray | None], steps: list[np.ndarray | None],
           rng: np.random.Generator) -> list[np.ndarray] | None:
    """How far each output moves when every float input moves by up to its ``steps`` (elementwise),
    over the all-up, all-down and a few random sign patterns; None when nothing can move."""
    movable = [i for i, (v, s) in enumerate(zip(inputs, steps)) if v is not None and s is not None and s.any()]
    if not movable:
        return None
    base = evaluate(node, opsets, inputs, widen=True)
    patterns = [dict.fromkeys(movable, sign) for sign in (1.0, -1.0)]
    patterns += [dict(zip(movable, signs)) for signs in itertools.islice(
        itertools.product((1.0, -1.0), repeat=len(movable)), 1, 2 ** len(movable) - 1)][:4]
    patterns += [{i: rng.choice((1.0, -1.0), size=inputs[i].shape) for i in movable} for _ in range(SIGN_SAMPLES)]
    widest = [np.zeros(b.shape, dtype=WIDE) for b in base]
    for pattern, scale in itertools.product(patterns, STEP_SCALES):
        moved = [v if i not in pattern else (v.astype(WIDE) + scale * pattern[i] * steps[i])
                 for i, v in enumerate(inputs)]
        try:
            values = evaluate(node, opsets, moved, widen=True)
        except Exception:
            continue
        for k, (b, v) in enumerate(zip(base, values)):
            if v.shape == b.shape:
                widest[k] = np.maximum(widest[k], _distance(b, v))
    for k, linear in enumerate(first_order(node, opsets, inputs, steps, movable, base)):
        widest[k] = np.maximum(widest[k], linear)
    return widest


def first_order(node: onnx.NodeProto, opsets, inputs: list[np.ndarray | None], steps: list[np.ndarray | None],
                movable: list[int], base: list[np.ndarray]) -> list[np.ndarray]:
    """|df/dx| times the step, per output element, summed over the movable inputs (central
    differences at a thousandth of the step). Sampled moves miss what a pole inside the step does
    (tan(388) in float16: one ulp is 0.25, and tan spans every value within it); the derivative
    does not."""
    total = [np.zeros(b.shape, dtype=WIDE) for b in base]
    for i in movable:
        tiny = steps[i] * 1e-3
        try:
            ahead, behind = (evaluate(node, opsets, [v if j != i else v.astype(WIDE) + sign * tiny
                                                     for j, v in enumerate(inputs)], widen=True)
                             for sign in (1.0, -1.0))
        except Exception:
            continue
        for k, (a, b) in enumerate(zip(ahead, behind)):
            if a.shape == total[k].shape:
                with np.errstate(all="ignore"):
                    slope = np.abs(a.astype(WIDE) - b.astype(WIDE)) / 2e-3  # |df| per step
                total[k] += np.where(np.isfinite(slope), slope, 0.0)
    return total


def undefined_behaviour(node: onnx.NodeProto, inputs: list[np.ndarray | None], output: np.ndarray) -> str:
    """Undefined behaviour this node shows on these inputs: a float-to-int Cast out of the target
    range (or of NaN/Inf), integer arithmetic that overflows, integer division by zero."""
    first = inputs[0] if inputs and inputs[0] is not None else None
    if node.op_type in ("ArgMax", "ArgMin", "TopK") and first is not None and first.dtype.kind == "f" \
            and np.isnan(first).any():
        return "ub:nan-into-argmax"  # which index a NaN takes is the implementation's choice
    if node.op_type == "Cast" and first is not None and first.dtype.kind == "f" and output.dtype.kind in "iu":
        info = np.iinfo(output.dtype)
        values = first.astype(WIDE)
        if (~np.isfinite(values)).any() or (values < info.min).any() or (values >= info.max + 1.0).any():
            return "ub:float-to-int-out-of-range"
    operands = [v for v in inputs if v is not None]
    if output.dtype.kind in "iu" and operands and all(v.dtype.kind in "iu" for v in operands):
        if node.op_type in ("Div", "Mod") and len(operands) > 1 and (operands[1] == 0).any():
            return "ub:integer-division-by-zero"
        if node.op_type in ("Add", "Sub", "Mul", "Neg", "Abs", "Pow", "ReduceSum", "ReduceProd", "CumSum"):
            try:
                wide = [v.astype(np.float64) for v in operands]
                exact = {"Add": lambda a, b: a + b, "Sub": lambda a, b: a - b, "Mul": lambda a, b: a * b,
                         "Neg": lambda a: -a, "Abs": np.abs, "Pow": np.power}.get(node.op_type)
                if exact is not None:
                    with np.errstate(all="ignore"):
                        value = np.broadcast_to(exact(*wide), output.shape)
                    info = np.iinfo(output.dtype)
                    if ((value < info.min) | (value > info.max)).any():
                        return "ub:integer-overflow"
            except (ValueError, TypeError):
                pass
    return ""


def check_node(node: onnx.NodeProto, opsets, sides: dict[str, tuple[list[np.ndarray | None], list[np.ndarray]]],
               tolerances: dict[str, Tolerance], seed: int = 0) -> NodeVerdict:
    """Judge ``node`` on one or two targets: ``sides`` maps target -> (its input values, its output
    values). Raises when the reference implementation cannot evaluate the node."""
    rng = np.random.default_rng(seed)
    consistent, own_spread, ub, resized = {}, {}, "", False
    for target, (inputs, outputs) in sides.items():
        ub = ub or undefined_behaviour(node, inputs, outputs[0])
        if node.op_type in ("ArgMax", "ArgMin") and inputs[0] is not None and inputs[0].dtype.kind == "f":
            consistent[target] = picks_an_extreme(node, inputs[0], outputs[0])
            continue
        expected = [_as_output(e, o) for e, o in zip(evaluate(node, opsets, inputs, widen=True), outputs)]
        steps = [_ulp(v) if v is not None else None for v in inputs]
        exact = node.op_type in EXACT_OPS and not any(v is not None and v.dtype == np.float16 for v in inputs)
        moved = None if exact else spread(node, opsets, inputs, steps, rng)
        own_spread[target] = moved
        ok = coordinates = True
        for k, (e, o) in enumerate(zip(expected, outputs)):
            if e.shape != o.shape:
                ok = False
                continue
            slack = _allowed(e, _tolerance(o.dtype, tolerances)) + (2 * moved[k] if moved else 0.0)
            ok &= bool((_distance(e, o) <= slack).all())
            coordinates &= bool((_distance(e, o) <= slack + coordinate_slack(node, inputs[0], o.shape)).all())
        consistent[target] = ok or coordinates
        resized |= coordinates and not ok
    verdict = NodeVerdict(consistent, ub=ub, rounding=resized or nearest_rounding(node, sides))
    if len(sides) == 2 and node.op_type in ("ArgMax", "ArgMin"):
        verdict.explained = all(consistent.values())  # each picked an extreme of its own (differing) input
    elif len(sides) == 2:
        verdict.explained = _explained(node, opsets, sides, tolerances, rng)
    return verdict


def _explained(node, opsets, sides, tolerances, rng) -> bool:
    """Whether the two outputs differ by no more than the node's spread under input moves as large
    as the inputs' own difference (at least one ulp)."""
    (left_in, left_out), (right_in, right_out) = sides.values()
    steps = []
    for a, b in zip(left_in, right_in):
        if a is None or b is None or a.dtype.kind != "f" or a.shape != b.shape:
            steps.append(None)
            continue
        gap = _distance(a, b)
        steps.append(np.maximum(np.where(np.isfinite(gap), gap, 0.0), _ulp(a)))
    moved = spread(node, opsets, left_in, steps, rng)
    if moved is None:
        return False
    for k, (a, b) in enumerate(zip(left_out, right_out)):
        if a.shape != b.shape:
            return False
        slack = _allowed(a, _tolerance(a.dtype, tolerances)) + 2 * moved[k]
        if not (_distance(a, b) <= slack).all():
            return False
    return True


def coordinate_slack(node: onnx.NodeProto, data: np.ndarray | None, out_shape: tuple[int, ...]) -> float:
    """How far a linear or cubic Resize's output may move when its sampling coordinates are computed
    in float32 rather than float64: a few float32 ulps of position, times the steepest step between
    neighbouring input elements, per resized axis (65536 elements down to 61: the positions are
    off by ~0.004 and Tan's outputs jump by ~50 between neighbours)."""
    modes = {a.name: a.s for a in node.attribute if a.name == "mode"}
    if node.op_type != "Resize" or modes.get("mode", b"nearest") in (b"nearest", "nearest") \
            or data is None or data.dtype.kind != "f":
        return 0.0
    bound, wide = 0.0, data.astype(WIDE)
    for axis, (before, after) in enumerate(zip(data.shape, out_shape)):
        if before != after and before > 1:
            with np.errstate(all="ignore"):
                steps = np.abs(np.diff(wide, axis=axis))
            steepest = float(np.max(steps[np.isfinite(steps)], initial=0.0))
            bound += 4 * float(np.spacing(np.float32(max(before, after)))) * steepest
    return bound * (2 if modes.get("mode") in (b"cubic", "cubic") else 1)


def nearest_rounding(node: onnx.NodeProto, sides) -> bool:
    """A nearest-mode Resize whose outputs on every side are all copies of its input's elements:
    the sides only picked different source indices, which float rounding of the scale decides
    (4096 / (16384 / 60) is 14.9999 in float32)."""
    if node.op_type != "Resize" or not any(a.name == "mode" and a.s in (b"nearest", "nearest")
                                           for a in node.attribute):
        return False
    for inputs, outputs in sides.values():
        if inputs[0] is None or not np.isin(outputs[0], inputs[0]).all():
            return False
    return True


def picks_an_extreme(node: onnx.NodeProto, values: np.ndarray, chosen: np.ndarray) -> bool:
    """ArgMax/ArgMin on its own inputs: every chosen element is the extreme of its slice, exactly for
    float32/float64 inputs and within one ulp for float16 ones (a runtime may have compared the
    float32 values that the exposed float16 tensor rounds; see EXACT_OPS). Which of exactly tied
    elements is chosen is not judged."""
    attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    axis = int(attributes.get("axis", 0)) % max(values.ndim, 1)
    index = chosen.astype(np.int64) if attributes.get("keepdims", 1) else np.expand_dims(chosen.astype(np.int64), axis)
    if index.ndim != values.ndim or (index < 0).any() or (index >= values.shape[axis]).any():
        return False
    wide = values.astype(WIDE)
    picked = np.take_along_axis(wide, index, axis)
    best = (np.nanmax if node.op_type == "ArgMax" else np.nanmin)(wide, axis=axis, keepdims=True)
    allowed = 2 * np.take_along_axis(_ulp(values), index, axis) if values.dtype == np.float16 else 0.0
    with np.errstate(invalid="ignore"):
        return bool((np.isnan(best) | (np.abs(picked - best) <= allowed)).all())
