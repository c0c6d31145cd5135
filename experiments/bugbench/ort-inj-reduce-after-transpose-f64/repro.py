"""Injected defect reduce-after-transpose-f64: ReduceMax(Transpose(float64 x), axes=[0, 1], keepdims=0)."""

import numpy as np
from onnx import TensorProto, helper


def build():
    x = np.random.default_rng(3).normal(size=(2, 3, 4))
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[2, 0, 1]),
             helper.make_node("ReduceMax", ["t"], ["r"], axes=[0, 1], keepdims=0)]
    graph = helper.make_graph(nodes, "reduce_after_transpose", [helper.make_tensor_value_info("x", TensorProto.DOUBLE, x.shape)],
                              [helper.make_tensor_value_info("r", TensorProto.DOUBLE, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), {"x": x}


if __name__ == "__main__":
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from bugbench.entries import repro_main

    repro_main(build, sys.argv)
