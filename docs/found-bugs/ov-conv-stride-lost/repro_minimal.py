#!/usr/bin/env python3
"""The root cause of this case in 2 nodes: Clip -> Conv(kernel 1, stride 42, pads 253) on a [1, 1, 1] input.
ONNX Runtime gives the right [1, 1, 13]; OpenVINO's CPU plugin gives [1, 1, 507] (the stride is lost).
Needs numpy, onnx, onnxruntime, openvino. Exit 0 and "BUG SHOWS" while the bug is there."""
import sys

import numpy as np
import onnx
import onnxruntime as ort
import openvino as ov
from onnx import TensorProto, helper, numpy_helper

weights = [numpy_helper.from_array(np.array(v, np.float32), n)
           for n, v in (("lo", -1.5), ("hi", 1.5), ("W", [[[3.3]]]), ("B", [3.4]))]
nodes = [helper.make_node("Clip", ["X", "lo", "hi"], ["c"]),
         helper.make_node("Conv", ["c", "W", "B"], ["Y"], dilations=[10], kernel_shape=[1], pads=[253, 253],
                          strides=[42])]
graph = helper.make_graph(nodes, "clip_conv", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 1, 1])],
                          [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 1, 13])], weights)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)], ir_version=8)
onnx.checker.check_model(model, full_check=True)
data = model.SerializeToString()
feeds = {"X": np.array([[[0.7]]], np.float32)}
want = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, feeds)[0]
core = ov.Core()
got = next(iter(core.compile_model(core.read_model(model=data, weights=b""), "CPU",
                                   {"INFERENCE_PRECISION_HINT": "f32"})(feeds).values()))
print(f"onnxruntime {ort.__version__}: {want.shape}; openvino {ov.__version__}: {got.shape}")
shows = want.shape != got.shape
print("BUG SHOWS" if shows else "bug does not show")
sys.exit(0 if shows else 1)
