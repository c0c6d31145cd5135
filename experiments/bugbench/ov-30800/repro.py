"""OpenVINO PR #30800: GatherElements ignored negative indices on CPU (ONNX allows [-s, s-1]), reading the
wrong (or out-of-range) elements."""

import numpy as np
from onnx import TensorProto, helper, numpy_helper


def build():
    rng = np.random.default_rng(30800)
    x = rng.normal(size=(3, 4)).astype(np.float32)
    idx = numpy_helper.from_array(np.array([[-1, 0], [2, -4], [3, -2]], np.int64), "idx")
    node = helper.make_node("GatherElements", ["x", "idx"], ["y"], axis=1)
    graph = helper.make_graph([node], "gatherelements_negative",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [idx])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), {"x": x}


if __name__ == "__main__":
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from bugbench.entries import repro_main

    repro_main(build, sys.argv)
