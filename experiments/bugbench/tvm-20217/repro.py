"""TVM #20217: the Relax ONNX frontend forwarded negative indices of GatherElements (ONNX allows
[-s, s-1]) without normalizing them, so -1 read the wrong element (fix: PR #20219, in 0.27)."""

import numpy as np
from onnx import TensorProto, helper


def build():
    rng = np.random.default_rng(20217)
    data = rng.normal(size=(4, 2, 3)).astype(np.float32)
    indices = np.array([[[-1, 0, -4], [2, -2, 1]]], np.int64)
    node = helper.make_node("GatherElements", ["data", "indices"], ["y"], axis=0)
    inputs = [helper.make_tensor_value_info("data", TensorProto.FLOAT, data.shape),
              helper.make_tensor_value_info("indices", TensorProto.INT64, indices.shape)]
    graph = helper.make_graph([node], "gatherelements_negative_axis0", inputs,
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    return model, {"data": data, "indices": indices}


if __name__ == "__main__":
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from bugbench.entries import repro_main

    repro_main(build, sys.argv)
