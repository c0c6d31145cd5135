"""Injected defect pool-after-pad: Pad(x) -> MaxPool 2x2."""

import numpy as np
from onnx import TensorProto, helper


def model(nodes, inputs, name):
    graph = helper.make_graph(nodes, name, inputs, [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def build():
    rng = np.random.default_rng(6)
    feeds = {"x": rng.normal(size=(1, 1, 4, 4)).astype(np.float32)}
    nodes = [helper.make_node("Pad", ["x", "pads"], ["p"]),
             helper.make_node("MaxPool", ["p"], ["z"], kernel_shape=[2, 2])]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, (1, 1, 4, 4))]
    built = model(nodes, inputs, "pool_after_pad")
    built.graph.initializer.append(helper.make_tensor("pads", TensorProto.INT64, [8], [0, 0, 1, 1, 0, 0, 1, 1]))
    return built, feeds


if __name__ == "__main__":
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from bugbench.entries import repro_main

    repro_main(build, sys.argv)
