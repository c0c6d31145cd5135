"""Injected defect conv-clip-f32: Conv(x, w) -> Clip(0, 6)."""

import numpy as np
from onnx import TensorProto, helper


def model(nodes, inputs, name):
    graph = helper.make_graph(nodes, name, inputs, [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def build():
    rng = np.random.default_rng(4)
    feeds = {"x": rng.normal(size=(1, 2, 5, 5)).astype(np.float32), "w": rng.normal(size=(3, 2, 3, 3)).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]),
             helper.make_node("Clip", ["c", "lo", "hi"], ["z"])]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, (1, 2, 5, 5)),
              helper.make_tensor_value_info("w", TensorProto.FLOAT, (3, 2, 3, 3))]
    built = model(nodes, inputs, "conv_clip")
    built.graph.initializer.extend([helper.make_tensor("lo", TensorProto.FLOAT, [], [0.0]),
                                    helper.make_tensor("hi", TensorProto.FLOAT, [], [6.0])])
    return built, feeds


if __name__ == "__main__":
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from bugbench.entries import repro_main

    repro_main(build, sys.argv)
