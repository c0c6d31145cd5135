"""Fault-injecting backend for reliability tests only: ``fault:segfault``, ``fault:abort``,
``fault:hang``, ``fault:oom``, ``fault:garbage``. It stands in for a compiler that misbehaves, so
the engine's survival of each failure can be tested; it is never used in a real campaign.
"""

from __future__ import annotations

import ctypes
import os
import time
from typing import Any

import numpy as np
import onnx
from onnx.helper import tensor_dtype_to_np_dtype

from higen.backends.base import Target
from higen.tensors import Tensors

FAULTS = ("segfault", "abort", "hang", "oom", "garbage")


class FaultBackend:
    def __init__(self, target: Target):
        if target.device not in FAULTS:
            raise ValueError(f"fault must be one of {FAULTS}, not {target.device!r}")
        self.target = target

    def describe(self) -> dict[str, Any]:
        return {"runtime": "fault", "version": "0", "device": self.target.device}

    def compile(self, model_path: str) -> onnx.ModelProto:
        return onnx.load(model_path)

    def run(self, compiled: onnx.ModelProto, inputs: Tensors) -> Tensors:
        fault = self.target.device
        if fault == "segfault":
            ctypes.string_at(0)  # a real SIGSEGV, as a buggy native kernel would raise
        elif fault == "abort":
            os.abort()
        elif fault == "hang":
            time.sleep(3600)
        elif fault == "oom":
            hoard = []
            while True:
                hoard.append(np.ones(256 << 20, dtype=np.uint8))  # touch every page
        return self._garbage(compiled)

    @staticmethod
    def _garbage(model: onnx.ModelProto) -> Tensors:
        rng = np.random.default_rng(0)
        outputs = {}
        for value in model.graph.output:
            tensor_type = value.type.tensor_type
            shape = [dim.dim_value for dim in tensor_type.shape.dim]
            dtype = tensor_dtype_to_np_dtype(tensor_type.elem_type)
            outputs[value.name] = (rng.standard_normal(shape) * 1e3 + 7).astype(dtype)
        return outputs

    def is_unsupported(self, error: Exception) -> bool:
        return False


def create(target: Target) -> FaultBackend:
    return FaultBackend(target)
