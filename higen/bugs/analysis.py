"""What a finding looks like, measured once when its case is saved (and read by ``higen triage``).

For a value mismatch: how large the error is relative to the dtype's precision, whether both sides
are finite, whether the failure has the shape of known noise (a float16 rounding flip) or of a known
semantic difference of a runtime (OpenVINO CPU saturating uint8 arithmetic, computing int64 in int32
and float64 in float32), and whether the other targets side with the blamed one (then the reference
is the odd one out). For an error: whether its message reads like "not implemented".
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import onnx
from onnx.reference import ReferenceEvaluator
from onnx.reference.op_run import OpRun

from higen.backends.base import REFERENCE
from higen.graph import ancestor_ops, inferred_types, producer_nodes, upstream_tensors
from higen.oracle import DEFAULT_TOLERANCES, EXACT, Tolerance, Verdict, compare_tensors
from higen.tensors import Tensors

ROUNDING_OPS = {"Floor", "Ceil", "Round"}  # (and Cast: float -> integer truncates)
WRAPPING_OPS = {"Add", "Sub", "Mul"}
SMALL_INTS = (np.dtype(np.uint8), np.dtype(np.int8))
#: Error texts that mean "this runtime lacks the op/dtype" although the backend reported an error.
UNSUPPORTED_TEXT = re.compile(r"not implemented|not supported|unsupported|NOT_IMPLEMENTED|"
                              r"Could not find an implementation|No conversion rule", re.IGNORECASE)

#: Tags for known semantic differences and noise patterns (docs/bug-cases.md explains each).
KNOWN = {
    "ov-uint8-saturation": "OpenVINO CPU saturates uint8 Add/Sub/Mul instead of wrapping (seen directly, or "
                           "re-evaluating the model with saturating arithmetic gives OpenVINO's output)",
    "ov-int8-saturation": "the same for int8 (measured: -76 * 76 gives -128, not the wrapped 112)",
    "narrowed-int64": "the target computes int64 in int32 (OpenVINO CPU), values beyond int32 differ",
    "narrowed-float64": "the target computes float64 in float32 (OpenVINO CPU), beyond float32 range",
}
NOISE = {"rounding-boundary": "integer-valued outputs differ by exactly 1 after Floor/Ceil/Round/Cast",
         "fp16-rounding-upstream": "float16, a few elements off, a Floor/Ceil/Round upstream that may have flipped",
         "float32-upcast": "a float64 output off by a few float32 ulps: computed from float32 values",
         "float16-upcast": "a float32/float64 output off by a few float16 ulps: computed from float16 values"}


def producer_context(model: onnx.ModelProto, output: str) -> dict[str, Any]:
    """The op producing ``output`` and, per input, the op type feeding it (``input``/``const``)."""
    made_by = producer_nodes(model)
    constants = {init.name for init in model.graph.initializer}
    node = made_by.get(output)
    if node is None:
        return {"op": "input", "inputs": []}
    feeds = []
    for name in node.input:
        if not name:
            continue
        feeder = made_by.get(name)
        feeds.append(feeder.op_type if feeder else "const" if name in constants else "input")
    return {"op": node.op_type, "inputs": feeds}


def narrowest_upstream(model: onnx.ModelProto, output: str, precision: str) -> str | None:
    """The narrowest float dtype among the tensors ``output`` is computed from, when it is narrower
    than ``precision`` (the dtype the comparison used): a float64 output computed from float16 values
    can only be as exact as float16, whatever its own type says."""
    types = {name: value.type.tensor_type.elem_type for name, value in inferred_types(model).items()}
    types.update({init.name: init.data_type for init in model.graph.initializer})
    widths = {FLOAT_CODES[types[name]] for name in upstream_tensors(model, output) if types.get(name) in FLOAT_CODES}
    narrow = min(widths, key=lambda d: np.finfo(d).bits, default=None)
    return narrow if narrow and precision in FLOAT_CODES.values() and \
        np.finfo(narrow).bits < np.finfo(precision).bits else None


FLOAT_CODES = {onnx.TensorProto.FLOAT16: "float16", onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.DOUBLE: "float64"}


def nonfinite(tensors: Tensors) -> bool:
    return any(np.issubdtype(v.dtype, np.floating) and not np.isfinite(v).all() for v in tensors.values())


def _eps(dtype: np.dtype) -> float:
    return float(np.finfo(dtype).eps) if np.issubdtype(dtype, np.floating) else 1.0


def mismatch_features(expected: np.ndarray, actual: np.ndarray, tolerance: Tolerance,
                      precision: str | None = None) -> dict[str, Any]:
    """Size and shape of the disagreement between two same-shaped outputs."""
    dtype = np.dtype(precision or expected.dtype)
    features: dict[str, Any] = {"dtype": expected.dtype.name, "precision": dtype.name, "eps": _eps(dtype)}
    if expected.shape != actual.shape or expected.dtype != actual.dtype:
        return features
    if not np.issubdtype(expected.dtype, np.floating):
        a, b = expected.astype(np.float64), actual.astype(np.float64)
        bad = a != b
        features.update(both_finite=True, bad_fraction=float(bad.mean()) if bad.size else 0.0,
                        max_abs=float(np.abs(a - b)[bad].max()) if bad.any() else 0.0,
                        integral_off_by_one=bool(bad.any() and np.all(np.abs(a - b)[bad] == 1.0)))
        features["error_eps"] = features["max_abs"]  # an integer's precision is 1
        return features
    a, b = expected.astype(np.float64), actual.astype(np.float64)
    finite = np.isfinite(a) & np.isfinite(b)
    diff = np.where(finite, np.abs(a - b), 0.0)
    bad = finite & (diff > tolerance.atol + tolerance.rtol * np.abs(a))
    scale = np.maximum(np.abs(a), np.abs(b))
    relative = np.divide(diff, scale, out=np.zeros_like(diff), where=scale > 0)
    features.update(
        both_finite=bool(np.isfinite(a).all() and np.isfinite(b).all()),
        bad_fraction=float(bad.mean()) if bad.size else 0.0,
        max_abs=float(diff[bad].max()) if bad.any() else 0.0,
        error_eps=float(relative[bad].max() / features["eps"]) if bad.any() else 0.0,
        integral_off_by_one=bool(bad.any() and np.all(a[bad] == np.round(a[bad]))
                                 and np.all(b[bad] == np.round(b[bad])) and np.all(diff[bad] == 1.0)),
    )
    return features


def known_difference(expected: np.ndarray, actual: np.ndarray, suspect: dict[str, Any],
                     ops: set[str]) -> str | None:
    """A KNOWN tag when the disagreement is what the suspect target's documented semantics give.

    ``actual`` comes from the suspect target; ``suspect`` is its recorded description (runtime,
    device, internal_precision)."""
    if expected.shape != actual.shape or expected.dtype != actual.dtype:
        return None
    differs = expected != actual
    if expected.dtype.kind == "f":
        differs &= ~(np.isnan(expected) & np.isnan(actual))
    if not differs.any():
        return None
    narrowed = suspect.get("internal_precision") or {}
    want, got = expected[differs], actual[differs]
    if (expected.dtype in SMALL_INTS and suspect.get("runtime") == "openvino" and ops & WRAPPING_OPS
            and np.isin(got, (np.iinfo(expected.dtype).min, np.iinfo(expected.dtype).max)).all()):
        return f"ov-{expected.dtype.name}-saturation"
    if narrowed.get(expected.dtype.name) == "int32":
        info = np.iinfo(np.int32)
        if ((want < info.min) | (want > info.max)).any() or (got == want.astype(np.int32)).all():
            return "narrowed-int64"
    if narrowed.get(expected.dtype.name) == "float32":
        big = float(np.finfo(np.float32).max)
        tiny = float(np.finfo(np.float32).tiny)
        magnitude = np.abs(want.astype(np.float64))
        if ((magnitude > big) | ((magnitude < tiny) & (magnitude > 0)) | np.isinf(got)).any():
            return "narrowed-float64"
    return None


def _saturating(op: str, combine) -> type[OpRun]:
    """``op`` for onnx.reference with OpenVINO CPU's 8-bit semantics (saturate), others unchanged."""
    def _run(self, a, b):
        if a.dtype in SMALL_INTS:
            bounds = np.iinfo(a.dtype)
            exact = combine(a.astype(np.int64), b.astype(np.int64))
            return (np.asarray(np.clip(exact, bounds.min, bounds.max), a.dtype),)
        return (np.asarray(combine(a, b)),)
    return type(op, (OpRun,), {"op_domain": "", "_run": _run})


SATURATING = [_saturating("Add", np.add), _saturating("Sub", np.subtract), _saturating("Mul", np.multiply)]


def saturation_explains(model: onnx.ModelProto, inputs: Tensors, name: str, actual: np.ndarray) -> str | None:
    """The KNOWN tag when evaluating ``model`` with saturating 8-bit Add/Sub/Mul gives exactly ``actual``
    for output ``name``: the disagreement is then OpenVINO's semantics, seen through later ops."""
    codes = {onnx.TensorProto.UINT8: "uint8", onnx.TensorProto.INT8: "int8"}
    used = {v.type.tensor_type.elem_type for v in (*model.graph.input, *model.graph.output, *model.graph.value_info)}
    used |= {init.data_type for init in model.graph.initializer}
    used |= {a.i for node in model.graph.node for a in node.attribute if a.name == "to"}
    small = [codes[code] for code in codes if code in used]
    if not small:
        return None
    try:
        (value,) = ReferenceEvaluator(model, new_ops=SATURATING).run([name], dict(inputs))
    except Exception:  # the reference evaluator cannot run this model: no verdict
        return None
    value = np.asarray(value)
    return f"ov-{small[0]}-saturation" if value.shape == actual.shape and np.array_equal(value, actual) else None


def analyze_mismatch(finding: dict[str, Any], outputs: dict[str, Tensors], model: onnx.ModelProto,
                     tolerances: dict[str, Tolerance], descriptions: dict[str, dict[str, Any]],
                     inputs: Tensors | None = None) -> dict[str, Any]:
    """Features of one mismatch finding (``finding`` as in meta.json) from the saved outputs.

    ``outputs`` maps target -> tensors (the reference included); ``descriptions`` maps target -> what
    its backend said about itself (runtime, internal_precision); with the model's ``inputs``, a
    disagreement that saturating uint8 arithmetic explains is recognised behind later ops too."""
    left, right = finding["targets"][:2]
    name = finding.get("output")
    ops = {node.op_type for node in model.graph.node}
    if name is None or name not in outputs.get(left, {}) or name not in outputs.get(right, {}):
        return {}
    expected, actual = outputs[left][name], outputs[right][name]
    narrowed = (descriptions.get(right, {}).get("internal_precision", {}).get(expected.dtype.name)
                or descriptions.get(left, {}).get("internal_precision", {}).get(expected.dtype.name))
    dtype = narrowed or expected.dtype.name
    tolerance = tolerances.get(dtype) or DEFAULT_TOLERANCES.get(dtype, EXACT)
    features = mismatch_features(expected, actual, tolerance, narrowed)
    features["producer"] = producer_context(model, name)
    upstream = ancestor_ops(model, name)
    narrow = narrowest_upstream(model, name, features["precision"])
    if narrow:
        features["narrowest_upstream"] = narrow
    if features.get("integral_off_by_one") and upstream & (ROUNDING_OPS | {"Cast"}):
        features["noise"] = "rounding-boundary"
    elif features["dtype"] == "float16" and upstream & ROUNDING_OPS and features.get("bad_fraction", 1) <= 0.01:
        features["noise"] = "fp16-rounding-upstream"
    elif narrow and features.get("error_eps", 0.0) * features["eps"] <= 16 * float(np.finfo(narrow).eps):
        features["noise"] = f"{narrow}-upcast"
    for suspect, other, theirs in ((right, expected, actual), (left, actual, expected)):
        described = descriptions.get(suspect, {})
        tag = known_difference(other, theirs, described, ops)
        if tag is None and inputs is not None and described.get("runtime") == "openvino" and ops & WRAPPING_OPS:
            tag = saturation_explains(model, inputs, name, theirs)
        if tag:
            features["known"] = tag
            break
    if left == REFERENCE:
        features["agreeing_targets"] = agreeing(outputs, right, name, tolerance, narrowed)
    return features


def agreeing(outputs: dict[str, Tensors], blamed: str, name: str, tolerance: Tolerance,
             narrowed: str | None) -> list[str]:
    """Other targets whose ``name`` output agrees with the blamed target's (so maybe the reference is off)."""
    mine = outputs[blamed][name]
    agree = []
    for target, tensors in outputs.items():
        if target in (REFERENCE, blamed) or name not in tensors:
            continue
        if compare_tensors(mine, tensors[name], {narrowed or mine.dtype.name: tolerance}, narrowed)[0] is Verdict.OK:
            agree.append(target)
    return agree


def looks_unsupported(message: str) -> bool:
    return bool(UNSUPPORTED_TEXT.search(message or ""))
