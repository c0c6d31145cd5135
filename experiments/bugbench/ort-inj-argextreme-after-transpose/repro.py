"""Injected defect argextreme-after-transpose: Transpose(x) -> ArgMax, then a float output."""

import numpy as np
from onnx import TensorProto, helper


def model(nodes, inputs, name):
    graph = helper.make_graph(nodes, name, inputs, [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def build():
    rng = np.random.default_rng(7)
    feeds = {"x": rng.normal(size=(2, 3, 4)).astype(np.float32)}
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[2, 0, 1]),
             helper.make_node("ArgMax", ["t"], ["i"], axis=1),
             helper.make_node("Cast", ["i"], ["z"], to=TensorProto.FLOAT)]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, (2, 3, 4))]
    return model(nodes, inputs, "argextreme_after_transpose"), feeds


if __name__ == "__main__":
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from bugbench.entries import repro_main

    repro_main(build, sys.argv)
