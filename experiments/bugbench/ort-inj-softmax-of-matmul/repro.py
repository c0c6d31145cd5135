"""Injected defect softmax-of-matmul: MatMul(a, b) -> Softmax."""

import numpy as np
from onnx import TensorProto, helper


def model(nodes, inputs, name):
    graph = helper.make_graph(nodes, name, inputs, [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def build():
    rng = np.random.default_rng(5)
    feeds = {"a": rng.normal(size=(2, 3)).astype(np.float32), "b": rng.normal(size=(3, 4)).astype(np.float32)}
    nodes = [helper.make_node("MatMul", ["a", "b"], ["m"]), helper.make_node("Softmax", ["m"], ["z"], axis=-1)]
    inputs = [helper.make_tensor_value_info("a", TensorProto.FLOAT, (2, 3)),
              helper.make_tensor_value_info("b", TensorProto.FLOAT, (3, 4))]
    return model(nodes, inputs, "softmax_of_matmul"), feeds


if __name__ == "__main__":
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from bugbench.entries import repro_main

    repro_main(build, sys.argv)
