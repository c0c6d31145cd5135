"""ONNX Runtime 1.32.0: wrong result from MatMul (float32) at ORT_ENABLE_ALL; disabling MatmulTransposeFusion fixes it

Standalone repro written by `higen report` from HiGen case .
Needs numpy, onnx, onnxruntime. Prints BUG SHOWS (exit 0) while the bug is there.
"""

import base64
import re
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

KIND = 'mismatch'
EXPECTED = 'ort:cpu:O0'
OBSERVED = 'ort:cpu:O3'
OUTPUT = 'Y'
TOLERANCE = (0.01, 0.001)
ABLATION = [['MatmulTransposeFusion']]
FAILURES = ('crash', 'error', 'timeout')


def build_model() -> onnx.ModelProto:
    inputs = [
        helper.make_tensor_value_info('A', TensorProto.FLOAT, [2, 2]),
        helper.make_tensor_value_info('b', TensorProto.FLOAT, [2]),
    ]
    outputs = [
        helper.make_tensor_value_info('Y', TensorProto.FLOAT, [2]),
    ]
    initializers = [
    ]
    nodes = [
        helper.make_node('Transpose', ['A'], ['At'], name='transpose', perm=[1, 0]),
        helper.make_node('MatMul', ['At', 'b'], ['Y'], name='matmul'),
    ]
    graph = helper.make_graph(nodes, 'matmul_transpose_1d', inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 14)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    return model


def make_inputs() -> dict[str, np.ndarray]:
    return {
        'A': np.array([[0.1257302165031433, -0.13210485875606537], [0.6404226422309875, 0.10490011423826218]], dtype=np.float32),
        'b': np.array([-0.5356693863868713, 0.3615950644016266], dtype=np.float32),
    }


def run_ort(model, feeds, device, opt, switched_off=()):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if opt == "O3"
                                        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    provider = "CUDAExecutionProvider" if device == "cuda" else "CPUExecutionProvider"
    session = ort.InferenceSession(model.SerializeToString(), options, providers=[provider],
                                   disabled_optimizers=list(switched_off) or None)
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))


def disagreement(expected: np.ndarray, actual: np.ndarray, rtol: float, atol: float) -> str | None:
    """The kind of disagreement between two outputs (HiGen's verdict names), None when they agree."""
    if (expected.dtype, expected.shape) != (actual.dtype, actual.shape):
        return "dtype_mismatch" if expected.dtype != actual.dtype else "shape_mismatch"
    if expected.dtype.kind not in "fc":
        return "mismatch" if np.any(expected != actual) else None
    want, got = expected.astype(np.float64), actual.astype(np.float64)
    same_special = (np.isnan(want) == np.isnan(got)) & (np.isinf(want) == np.isinf(got))
    if not np.all(same_special & (~np.isinf(want) | (want == got))):
        return "nan_inf_mismatch"
    close = np.abs(want - got) <= atol + rtol * np.abs(want)
    return None if np.all(close | ~np.isfinite(want)) else "mismatch"


def run(target, model, feeds, switched_off=()):
    if target == "torch:cpu":
        return run_reference(model, feeds)
    runtime, device, *opt = target.split(":")
    runner = globals()[f"run_{runtime.split('@')[0]}"]  # ort@1.20.1: HiGen ran that release; run the installed one
    return runner(model, feeds, device, opt[0] if opt else "", switched_off)


def preview(values) -> str:
    flat = np.asarray(values).ravel()
    return np.array2string(flat[:8], precision=6) + (f" ... ({flat.size} values)" if flat.size > 8 else "")


def show(label, expected, observed) -> str | None:
    found = disagreement(expected, observed, *TOLERANCE)
    error = ""
    if found == "mismatch":
        diff = np.abs(observed.astype(np.float64) - expected.astype(np.float64))
        rel = diff / np.maximum(np.abs(expected.astype(np.float64)), np.finfo(np.float64).tiny)
        error = f" (max abs error {np.nanmax(diff):.6g}, max rel error {np.nanmax(rel):.6g})"
    print(f"  {label}: {preview(observed)} -> {found or 'agrees'}{error}")
    return found


def main() -> int:
    model, feeds = build_model(), make_inputs()
    if KIND in FAILURES:
        for switched_off in ABLATION:  # first, as a crash ends the script
            try:
                run(OBSERVED, model, feeds, switched_off)
                print(f"{OBSERVED} with {', '.join(switched_off)} off: runs")
            except Exception as error:
                print(f"{OBSERVED} with {', '.join(switched_off)} off: {type(error).__name__} too")
        print(f"{OBSERVED}: HiGen saw {KIND} ({SAW})", flush=True)
        try:
            run(OBSERVED, model, feeds)
        except Exception as error:
            print(f"{type(error).__name__}: {str(error).strip()[:2000]}")
            if KIND == "error" and re.search(MESSAGE, str(error), re.S):
                print(f"BUG SHOWS: {OBSERVED} fails with the recorded error")
                return 0
            print(f"bug does not show: {OBSERVED} fails differently")
            return 1
        print(f"bug does not show: {OBSERVED} ran")
        return 1
    expected = run(EXPECTED, model, feeds)[OUTPUT]
    print(f"output {OUTPUT}, expected ({EXPECTED}): {preview(expected)}")
    found = show(f"observed ({OBSERVED})", expected, run(OBSERVED, model, feeds)[OUTPUT])
    for switched_off in ABLATION:
        fixed = run(OBSERVED, model, feeds, switched_off)[OUTPUT]
        show(f"{OBSERVED} with {', '.join(switched_off)} off", expected, fixed)
    if found == KIND:
        print(f"BUG SHOWS: {OBSERVED} gives a {found} on {OUTPUT} (rtol, atol = {TOLERANCE})")
        return 0
    print(f"bug does not show: {found or 'the outputs agree'} (recorded: {KIND})")
    return 1


if __name__ == "__main__":
    sys.exit(main())
