"""ORT #22177: PadFusion folds a zero Pad into a following AveragePool whose count_include_pad=0, so
the padded zeros stop counting in the average (border values grow)."""

import numpy as np
from onnx import TensorProto, helper, numpy_helper


def build():
    rng = np.random.default_rng(22177)
    x = rng.uniform(1.0, 2.0, (1, 2, 5, 5)).astype(np.float32)
    pads = numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads")
    nodes = [helper.make_node("Pad", ["x", "pads"], ["padded"], mode="constant"),
             helper.make_node("AveragePool", ["padded"], ["y"], kernel_shape=[3, 3], count_include_pad=0)]
    graph = helper.make_graph(nodes, "pad_avgpool", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [pads])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    return model, {"x": x}


if __name__ == "__main__":
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from bugbench.entries import repro_main

    repro_main(build, sys.argv)
