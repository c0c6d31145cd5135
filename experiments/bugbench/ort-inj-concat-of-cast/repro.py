"""Injected defect concat-of-cast: Concat(Cast(int32 i), x, y) -> float32, then Relu."""

import numpy as np
from onnx import TensorProto, helper


def build():
    rng = np.random.default_rng(2)
    feeds = {"i": rng.integers(-3, 4, (2, 2)).astype(np.int32), "x": rng.normal(size=(2, 3)).astype(np.float32),
             "y": rng.normal(size=(2, 1)).astype(np.float32)}
    nodes = [helper.make_node("Cast", ["i"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("Concat", ["f", "x", "y"], ["c"], axis=1), helper.make_node("Relu", ["c"], ["z"])]
    inputs = [helper.make_tensor_value_info("i", TensorProto.INT32, (2, 2)),
              helper.make_tensor_value_info("x", TensorProto.FLOAT, (2, 3)),
              helper.make_tensor_value_info("y", TensorProto.FLOAT, (2, 1))]
    graph = helper.make_graph(nodes, "concat_of_cast", inputs, [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), feeds


if __name__ == "__main__":
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from bugbench.entries import repro_main

    repro_main(build, sys.argv)
