"""OpenVINO PR #33384: ReplaceConcatReduceByMinOrMax rewrites ReduceMin(Concat(a, b)) over the concat
axis into Minimum(a, b) without checking that a and b have size 1 along that axis; with a [5] and a [1]
input the Minimum broadcasts to [5] instead of a scalar, and compilation fails in the consumer's shape
inference (issues #33231, #33236)."""

import numpy as np
from onnx import TensorProto, helper


def build():
    rng = np.random.default_rng(33384)
    a = rng.normal(size=(5,)).astype(np.float32)
    b = rng.normal(size=(1,)).astype(np.float32)
    nodes = [helper.make_node("Concat", ["a", "b"], ["c"], axis=0),
             helper.make_node("ReduceMin", ["c"], ["m"], axes=[0], keepdims=0),
             helper.make_node("Add", ["m", "c"], ["y"])]
    inputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, value.shape) for name, value in (("a", a), ("b", b))]
    graph = helper.make_graph(nodes, "concat_reducemin", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), {"a": a, "b": b}


if __name__ == "__main__":
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from bugbench.entries import repro_main

    repro_main(build, sys.argv)
