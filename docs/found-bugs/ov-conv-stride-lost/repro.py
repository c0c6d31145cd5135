#!/usr/bin/env python3
"""Standalone reproducer of one HiGen bug case. It needs numpy, onnx and the runtime(s) of the targets
below (onnxruntime, openvino or apache-tvm), and nothing from HiGen.

    python repro.py [--timeout SECONDS]

Each target compiles and runs ``model.onnx`` on ``inputs.npz`` in a fresh subprocess, so a crash
kills only that process; then the finding the case was saved for is checked. Exit status: 0 the
bug shows, 1 it does not, 2 it could not be checked (a runtime is missing, a target failed
differently). Tensors are read with ``allow_pickle=False``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx

# The case, filled in by HiGen when it wrote this file.
CASE: dict = {'case': 'error-bcaa56e3eb/reduced',
 'signature': "error|ov@2026.3.1:CPU|compile|RuntimeError|Check 'backward_compatible_check || "
              "in_out_elements_equal' failed at SRC:",
 'model': 'model.onnx',
 'inputs': 'inputs.npz',
 'reference': 'torch:cpu',
 'reference_file': 'outputs/reference.npz',
 'targets': ['ov:CPU'],
 'versions': {'ov:CPU': 'openvino 2026.3.1-22476-759c5a6ab8c-releases/2026/3'},
 'bug': {'verdict': 'error',
         'targets': ['ov:CPU'],
         'detail': 'ov@2026.3.1:CPU error in compile: Exception from src/inference/src/cpp/core.cpp:132:\n'
                   'Exception from src/inference/src/dev/plugin.cpp:59:\n'
                   "Check 'backward_compatible_check || in_out_elements_equal' failed at "
                   'src/core/shape_inference/include/reshape_shape_inference.hpp:370:\n'
                   "While validating node 'opset",
         'output': '',
         'stage': 'compile',
         'signal': None,
         'error_type': 'RuntimeError',
         'message': "Check 'backward_compatible_check || in_out_elements_equal' failed at "
                    'src/core/shape_inference/include/reshape_shape_inference.hpp:370:'}}

HERE = Path(__file__).resolve().parent
FAILURES = ("crash", "error", "timeout")


def load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


# -- one compile function per runtime: returns a function that runs the compiled model -------------
def compile_ort(model: Path, inputs: dict, device: str, opt: str):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if opt == "O3"
                                        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    provider = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}[device]
    session = ort.InferenceSession(str(model), options, providers=[provider])
    names = [item.name for item in session.get_outputs()]
    feeds = {item.name: inputs[item.name] for item in session.get_inputs()}
    return lambda: dict(zip(names, session.run(names, feeds)))


def compile_ov(model: Path, inputs: dict, device: str, opt: str):
    import openvino as ov

    config = {"INFERENCE_PRECISION_HINT": "f32", **({"INFERENCE_NUM_THREADS": 1} if device == "CPU" else {})}
    compiled = ov.Core().compile_model(str(model), device, config)
    graph = onnx.load(str(model), load_external_data=False).graph
    weights = {tensor.name for tensor in graph.initializer}

    def execute():
        request = compiled.create_infer_request()
        for value in graph.input:
            if value.name not in weights:
                array = np.require(inputs[value.name], requirements="C")  # (keeps 0-d arrays 0-d)
                request.set_tensor(compiled.input(value.name), ov.Tensor(array))
        request.infer()
        return {v.name: np.array(request.get_tensor(compiled.output(v.name)).data, copy=True) for v in graph.output}

    return execute


def compile_tvm(model: Path, inputs: dict, device: str, opt: str):
    import tvm
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    proto = onnx.load(str(HERE / CASE.get("tvm_model", model)))  # integer constant subgraphs folded
    module = from_onnx(proto, keep_params_in_input=False, sanitize_input_names=False)
    where = tvm.cpu(0) if device == "llvm" else tvm.cuda(0)
    target = tvm.target.Target("llvm") if device == "llvm" else tvm.target.Target("cuda", host="llvm")
    with tvm.transform.PassContext(opt_level=int(opt.lstrip("O") or 0)):
        machine = relax.VirtualMachine(tvm.compile(module, target=target), where)
    names = [value.name for value in proto.graph.output]

    def execute():
        args = [tvm.runtime.tensor(np.require(inputs[p.name], requirements="C"), where) for p in module["main"].params]
        result = machine["main"](*args)
        values = [result] if len(names) == 1 else list(result)
        return {n: v.numpy() if hasattr(v, "numpy") else np.asarray(v) for n, v in zip(names, values)}

    return execute


COMPILERS = {"ort": compile_ort, "ov": compile_ov, "tvm": compile_tvm}


def child(target: str, out: str) -> None:
    """Inside the subprocess: compile, run, write outputs (.npz) and status (.json)."""
    runtime, device, *opt = target.split(":")
    status = {"status": "ok", "stage": "compile"}
    try:
        inputs = load_npz(HERE / CASE["inputs"])
        execute = COMPILERS[runtime](HERE / CASE["model"], inputs, device, opt[0] if opt else "")
        status["stage"] = "run"
        np.savez(out + ".npz", **execute())
    except Exception as error:  # the finding may be exactly this exception
        status.update(status="error", error_type=type(error).__name__, message=str(error))
    Path(out + ".json").write_text(json.dumps(status))


def run_target(target: str, timeout: float, work: str) -> dict:
    if target.split(":")[0] not in COMPILERS:
        return {"status": "skipped", "message": f"{target} runs only inside HiGen"}
    out = os.path.join(work, target.replace(":", "_"))
    env = dict(os.environ, OMP_NUM_THREADS="1", TVM_NUM_THREADS="1")
    try:
        done = subprocess.run([sys.executable, __file__, "--child", target, out], env=env, timeout=timeout,
                              capture_output=True, text=True)
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "message": f"no result within {timeout:g} s"}
    if done.returncode < 0 or not os.path.exists(out + ".json"):
        name = signal.Signals(-done.returncode).name if done.returncode < 0 else f"exit {done.returncode}"
        return {"status": "crash", "signal": name, "message": done.stderr.strip()[-1500:]}
    result = json.loads(Path(out + ".json").read_text())
    if result["status"] == "ok":
        result["outputs"] = load_npz(out + ".npz")
    return result


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


def check(results: dict, reference: dict) -> tuple[bool | None, str]:
    """Whether the recorded finding shows again (None: cannot tell), and why."""
    bug = CASE["bug"]
    kind = bug["verdict"]
    if kind in FAILURES:
        got = results[bug["targets"][-1]]
        if got["status"] == "skipped":
            return None, got["message"]
        same = got["status"] == kind and (kind != "crash" or got.get("signal") == bug.get("signal"))
        same = same and (kind != "error" or got.get("stage") == bug.get("stage"))
        said = (got.get("message") or "").strip().splitlines()
        return same, f"{got['status']} ({got.get('signal') or got.get('stage', '')}): {said[0] if said else ''}"
    left, right = bug["targets"]
    sides = []
    for target in (left, right):
        if target == CASE["reference"]:
            sides.append(reference)
        elif results[target]["status"] != "ok":
            return None, f"{target} did not run: {results[target]['status']} {results[target].get('message', '')}"
        else:
            sides.append(results[target]["outputs"])
    name = bug["output"]
    if name not in sides[0] or name not in sides[1]:
        return kind == "shape_mismatch", f"output {name} present on one side only"
    found = disagreement(sides[0][name], sides[1][name], *bug["tolerance"])
    return found == kind, f"output {name}: {found or 'agrees'} (rtol, atol = {bug['tolerance']})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per target")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return 0
    bug = CASE["bug"]
    print(f"case {CASE['case']}: {bug['verdict']} on {', '.join(bug['targets'])}")
    print(f"  recorded: {bug['detail']}")
    with tempfile.TemporaryDirectory() as work:
        results = {target: run_target(target, args.timeout, work) for target in CASE["targets"]}
        reference = load_npz(HERE / CASE["reference_file"])
    for target, result in results.items():
        message = (result.get("message") or "").strip().splitlines()
        print(f"  {target} (recorded with {CASE['versions'].get(target, '?')}): {result['status']} "
              f"{message[0][:200] if message else ''}")
    shows, why = check(results, reference)
    verdict = {True: "BUG SHOWS", False: "bug does not show", None: "cannot tell"}[shows]
    print(f"{verdict}: {why}")
    return {True: 0, False: 1, None: 2}[shows]


if __name__ == "__main__":
    sys.exit(main())
