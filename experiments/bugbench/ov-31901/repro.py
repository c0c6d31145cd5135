"""OpenVINO PR #31901 (OneHot-16): ONNX OneHot allows negative indices in [-depth, depth-1]; OneHot-1 in
OpenVINO ignored them, giving all-off rows."""

import numpy as np
from onnx import TensorProto, helper, numpy_helper


def build():
    indices = np.array([-1, 3, -5, 0, 2, -3], np.int64)
    depth = numpy_helper.from_array(np.array(5, np.int64), "depth")
    values = numpy_helper.from_array(np.array([0.5, 2.0], np.float32), "values")
    node = helper.make_node("OneHot", ["indices", "depth", "values"], ["y"], axis=0)
    graph = helper.make_graph([node], "onehot_negative",
                              [helper.make_tensor_value_info("indices", TensorProto.INT64, indices.shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [depth, values])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), {"indices": indices}


if __name__ == "__main__":
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from bugbench.entries import repro_main

    repro_main(build, sys.argv)
