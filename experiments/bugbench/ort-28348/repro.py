"""ORT #28348: ReshapeFusion fuses Reshape -> Reshape(allowzero=1) into one Reshape without allowzero, so a
literal 0 in the inferred shape is read as "copy this dim" and the output gets the wrong shape."""

import numpy as np
from onnx import TensorProto, helper, numpy_helper


def build():
    x = np.zeros((0, 6, 2), np.float32)
    inits = [numpy_helper.from_array(np.array([3, 2, -1], np.int64), "s1"),
             numpy_helper.from_array(np.array([0, 0, 3], np.int64), "s2")]
    nodes = [helper.make_node("Reshape", ["x", "s1"], ["mid"]),
             helper.make_node("Reshape", ["mid", "s2"], ["y"], allowzero=1)]
    graph = helper.make_graph(nodes, "reshape_allowzero", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), {"x": x}


if __name__ == "__main__":
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from bugbench.entries import repro_main

    repro_main(build, sys.argv)
