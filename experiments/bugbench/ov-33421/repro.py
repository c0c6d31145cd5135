"""OpenVINO #33421: the ReshapePRelu transformation indexes the channel dimension of PRelu's input
without checking its rank, so PRelu on a scalar (rank 0) with a [1] slope fails to compile
("Accessing out-of-range dimension"; fix: PR #33937)."""

import numpy as np
from onnx import TensorProto, helper, numpy_helper


def build():
    x = np.array(-1.75, np.float32)
    slope = numpy_helper.from_array(np.array([0.25], np.float32), "slope")
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Neg", ["r"], ["n"]),
             helper.make_node("PRelu", ["n", "slope"], ["y"])]
    graph = helper.make_graph(nodes, "prelu_scalar", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [slope])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), {"x": x}


if __name__ == "__main__":
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from bugbench.entries import repro_main

    repro_main(build, sys.argv)
