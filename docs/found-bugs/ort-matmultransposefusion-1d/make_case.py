#!/usr/bin/env python3
"""Rebuild this folder's bug case with HiGen: the 2-node model recorded through HiGen's own store
(normal mode: ort:cpu:O0 vs ort:cpu:O3, reference from onnx.reference), then `higen localize` and
`higen report` on it.

    python make_case.py   # rewrites model.onnx, inputs.npz, outputs/, meta.json, repro.py, ...
"""

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from higen.bugs.capture import capture
from higen.bugs.store import BugStore

HERE = Path(__file__).resolve().parent
CASE_FILES = ("model.onnx", "inputs.npz", "outputs", "meta.json", "repro.py", "error.log")


def model() -> onnx.ModelProto:
    nodes = [helper.make_node("Transpose", ["A"], ["At"], name="transpose", perm=[1, 0]),
             helper.make_node("MatMul", ["At", "b"], ["Y"], name="matmul")]
    graph = helper.make_graph(nodes, "matmul_transpose_1d",
                              [helper.make_tensor_value_info("A", TensorProto.FLOAT, [2, 2]),
                               helper.make_tensor_value_info("b", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [2])])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)], ir_version=8)
    onnx.checker.check_model(proto, full_check=True)
    return proto


def main() -> int:
    rng = np.random.default_rng(0)
    inputs = {"A": rng.standard_normal((2, 2)).astype(np.float32), "b": rng.standard_normal(2).astype(np.float32)}
    with tempfile.TemporaryDirectory() as work:
        store = BugStore(Path(work) / "bug_cases")
        judgement, case = capture(model(), inputs, ["ort:cpu:O0", "ort:cpu:O3"], store,
                                  pairs=[("ort:cpu:O0", "ort:cpu:O3"), ("torch:cpu", "ort:cpu:O0")])
        if case is None:
            print("no finding: the bug does not show with this onnxruntime")
            return 1
        for name in CASE_FILES:
            target = HERE / name
            shutil.rmtree(target, ignore_errors=True) if target.is_dir() else target.unlink(missing_ok=True)
            (shutil.copytree if (store.root / case / name).is_dir() else shutil.copy2)(store.root / case / name, target)
    print(f"recorded: {judgement.findings[0].signature}")
    subprocess.run(["higen", "localize", str(HERE)], check=True)
    subprocess.run(["higen", "report", str(HERE), "--out", str(HERE / "report.md"),
                    "--script", str(HERE / "repro_minimal.py")], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
