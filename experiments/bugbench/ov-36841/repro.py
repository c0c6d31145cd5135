"""OpenVINO PR #36841: constant folding of a scalar LeakyRelu (lowered to PRelu with a [1] slope) reads
the channel dimension of an empty shape in the PRelu reference implementation and crashes."""

import numpy as np
from onnx import TensorProto, helper, numpy_helper


def build():
    rng = np.random.default_rng(36841)
    x = rng.normal(size=(2, 3)).astype(np.float32)
    scalar = numpy_helper.from_array(np.array(3.5, np.float32), "scalar")
    nodes = [helper.make_node("LeakyRelu", ["scalar"], ["folded"], alpha=0.01),
             helper.make_node("Mul", ["x", "folded"], ["y"])]
    graph = helper.make_graph(nodes, "leakyrelu_scalar_const", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [scalar])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), {"x": x}


if __name__ == "__main__":
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from bugbench.entries import repro_main

    repro_main(build, sys.argv)
