#!/usr/bin/env python3
"""Which shapes and dtypes show the ONNX Runtime MatmulTransposeFusion wrong result.

MatMul(Transpose(A, perm), b) with a 1-D b, run at ORT_DISABLE_ALL, at ORT_ENABLE_ALL, and at
ORT_ENABLE_ALL with disabled_optimizers=["MatmulTransposeFusion"]; numpy's A.transpose(perm) @ b is
the expected value. Needs numpy, onnx, onnxruntime.
"""

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

DTYPES = {np.float32: TensorProto.FLOAT, np.float64: TensorProto.DOUBLE, np.float16: TensorProto.FLOAT16}
CASES = [((2, 2), (1, 0)), ((1, 2), (1, 0)), ((2, 1), (1, 0)), ((2, 3), (1, 0)), ((3, 2), (1, 0)),
         ((1, 2, 2), (0, 2, 1)), ((2, 3, 4), (0, 2, 1)), ((2, 3, 4), (1, 0, 2))]


def model(shape, perm, dtype):
    kind = DTYPES[dtype]
    k = shape[perm[-1]]
    nodes = [helper.make_node("Transpose", ["A"], ["At"], perm=list(perm)), helper.make_node("MatMul", ["At", "b"], ["Y"])]
    graph = helper.make_graph(nodes, "sweep", [helper.make_tensor_value_info("A", kind, list(shape)),
                                               helper.make_tensor_value_info("b", kind, [k])],
                              [helper.make_tensor_value_info("Y", kind, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)], ir_version=8)


def run(proto, feeds, level, disabled=None):
    options = ort.SessionOptions()
    options.graph_optimization_level = level
    session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"],
                                   disabled_optimizers=disabled)
    return session.run(None, feeds)[0]


def main():
    print(f"onnxruntime {ort.__version__}: max abs error against numpy")
    print(f"{'A shape':>10} {'perm':>10} {'dtype':>8} {'O0':>10} {'O3':>10} {'O3 -MTF':>10}")
    rng = np.random.default_rng(0)
    for shape, perm in CASES:
        for dtype in DTYPES:
            proto = model(shape, perm, dtype)
            feeds = {"A": rng.standard_normal(shape).astype(dtype),
                     "b": rng.standard_normal(shape[perm[-1]]).astype(dtype)}
            expected = np.matmul(feeds["A"].transpose(perm).astype(np.float64), feeds["b"].astype(np.float64))
            errors = []
            for level, disabled in ((ort.GraphOptimizationLevel.ORT_DISABLE_ALL, None),
                                    (ort.GraphOptimizationLevel.ORT_ENABLE_ALL, None),
                                    (ort.GraphOptimizationLevel.ORT_ENABLE_ALL, ["MatmulTransposeFusion"])):
                try:
                    errors.append(f"{np.abs(run(proto, feeds, level, disabled) - expected).max():10.3g}")
                except Exception as error:  # older releases: no float64 FusedMatMul kernel
                    errors.append(f"{type(error).__name__[:10]:>10}")
            print(f"{str(shape):>10} {str(perm):>10} {dtype.__name__:>8} {' '.join(errors)}")


if __name__ == "__main__":
    main()
