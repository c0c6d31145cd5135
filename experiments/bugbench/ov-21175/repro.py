"""OpenVINO #21175: ONNX Split-18 with num_outputs that does not divide the axis (the last chunk is
smaller) fails with 'must be evenly divisible by num_splits'."""

import numpy as np
from onnx import TensorProto, helper


def build():
    rng = np.random.default_rng(21175)
    x = rng.normal(size=(2, 5)).astype(np.float32)
    node = helper.make_node("Split", ["x"], ["y1", "y2"], axis=1, num_outputs=2)
    graph = helper.make_graph([node], "split_uneven", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
                              [helper.make_tensor_value_info("y1", TensorProto.FLOAT, None),
                               helper.make_tensor_value_info("y2", TensorProto.FLOAT, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8), {"x": x}


if __name__ == "__main__":
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from bugbench.entries import repro_main

    repro_main(build, sys.argv)
