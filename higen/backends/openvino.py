"""OpenVINO backend: ``ov:CPU`` or ``ov:GPU``, always at f32 inference precision, never another device.

Precision: OpenVINO's default ``INFERENCE_PRECISION_HINT`` is bf16 on CPUs that advertise BF16 (as
this AMD EPYC test host does) and f16 on GPUs (documented; the GPU path is untested here), so every
model is compiled with the hint set to ``f32``; CPU also gets one inference thread, like every other
HiGen worker. Without the hint, bf16 rounding would drown real bugs.

Dtypes (measured with 2026.4 on CPU): the compiled model's ports keep the element types the ONNX
model declares (f64, i64, u64 included), and :meth:`OpenVinoBackend.run` returns arrays of exactly
those dtypes; nothing is cast here. The *values*, however, are computed at the CPU plugin's internal
precisions, documented in "CPU Device > Supported inference data types" (f32/bf16/f16 for floating
point, i32 for integers): f64 arithmetic runs in f32 (1e300 + 1e300 -> 3.4028235e38, 1 + 2**-40 ->
1.0) and i64/u64 in i32 (2**40 + 1 -> 1; even an int64 ``Identity`` truncates). See
:data:`CPU_INTERNAL_PRECISION`: the oracle must expect such differences, they are not bugs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import openvino as ov

from higen.backends.base import DeviceUnavailable, Target, Unsupported
from higen.tensors import Tensors

#: Properties per device family. The names and values were checked against 2026.4 (CPU accepts
#: precision values bf16, f16, f32, undefined; a wrong key or value fails the compile).
CONFIG: dict[str, dict[str, Any]] = {
    "CPU": {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1},
    "GPU": {"INFERENCE_PRECISION_HINT": "f32"},
}

#: ONNX dtype -> the precision the CPU plugin computes it in (same dtype comes back, values narrowed).
CPU_INTERNAL_PRECISION = {"float64": "float32", "int64": "int32", "uint64": "int32"}

#: OpenVINO element types whose ``Tensor.data`` is a faithful numpy array. Others are not: bf16 reads
#: back as float16 *bits* (garbage values), f8 as uint8, i4 as int8, and running an Identity on a
#: string tensor crashed the process (munmap_chunk(): invalid pointer, SIGSEGV at exit).
NUMPY_TYPES = frozenset({"f64", "f32", "f16", "i64", "i32", "i16", "i8", "u64", "u32", "u16", "u8", "boolean"})

#: Error texts that mean "OpenVINO does not implement this" (the first three seen in real 2026.4 failures):
UNSUPPORTED_MARKERS = (
    "No conversion rule found for operations",  # ONNX frontend has no converter (Det, Optional, my.domain.Foo)
    "Loading input model\nUnsupported type",  # ONNX frontend cannot load the element type (complex64)
    "unsupported src_prc:",  # CPU eltwise kernel lacks the element type (Add on f8e4m3, at compile)
    "Unsupported operation of type:",  # CPU node factory: no node implements the op (from its source)
)
# Deliberately *not* markers: "Conversion is failed for: OP" is a frontend converter that threw on a
# valid node. It may be a real limitation (STFT needs a constant frame_step) but it is also how
# converter bugs show (Celu on f64 builds an f32 constant and fails type checking), so it stays an
# error. "NotFound: Unsupported property" is a configuration error, not an unsupported model.


@dataclass
class CompiledOv:
    """A compiled model with its ports looked up by ONNX tensor name.

    Ports are found by name rather than by ``get_any_name()``: compilation merges tensor names, so an
    output ``z = Identity(a)`` comes back as a port named {"a", "z"} whose ``get_any_name()`` is "a".
    """

    model: ov.CompiledModel
    inputs: list[tuple[str, ov.ConstOutput]]
    outputs: list[tuple[str, ov.ConstOutput]]


class OpenVinoBackend:
    """OpenVINO on one device, compiling ONNX files directly with its ONNX frontend. ``properties``
    are added to the compile properties (e.g. ``{"SNIPPETS_MODE": "DISABLE"}``)."""

    def __init__(self, target: Target, properties: dict[str, Any] | None = None):
        family = target.device.split(".")[0]
        if family not in CONFIG:
            raise ValueError(f"OpenVINO device must be one of {sorted(CONFIG)}, not {target.device!r}")
        if target.opt:
            raise ValueError(f"OpenVINO targets take no optimization level: write ov:{target.device}")
        self.target = target
        self.core = ov.Core()
        self.devices: list[str] = list(self.core.available_devices)
        # "GPU" names the first GPU when OpenVINO lists several as GPU.0, GPU.1, ...
        if target.device not in self.devices and not any(d.startswith(target.device + ".") for d in self.devices):
            raise DeviceUnavailable(
                f"OpenVINO {ov.__version__} has no {target.device} device (available: {', '.join(self.devices)})"
            )
        self.config = {**CONFIG[family], **(properties or {})}

    def describe(self) -> dict[str, Any]:
        return {"runtime": "openvino", "version": ov.__version__, "device": self.target.device,
                "devices": self.devices,
                "internal_precision": CPU_INTERNAL_PRECISION if self.target.device == "CPU" else {}}

    def compile(self, model_path: str) -> CompiledOv:
        """Compile for the device; element types numpy cannot hold faithfully raise Unsupported."""
        graph = onnx.load(model_path, load_external_data=False).graph
        initializers = {tensor.name for tensor in graph.initializer}
        compiled = self.core.compile_model(model_path, self.target.device, self.config)
        inputs = [(v.name, compiled.input(v.name)) for v in graph.input if v.name not in initializers]
        outputs = [(v.name, compiled.output(v.name)) for v in graph.output]
        for name, port in inputs + outputs:
            kind = port.get_element_type().get_type_name()
            if kind not in NUMPY_TYPES:
                raise Unsupported(f"tensor {name!r} is OpenVINO {kind}, which has no faithful numpy dtype")
        return CompiledOv(compiled, inputs, outputs)

    def run(self, compiled: CompiledOv, inputs: Tensors) -> Tensors:
        """Run once; outputs are copies (the request's buffers are reused) with OpenVINO's dtypes."""
        request = compiled.model.create_infer_request()
        for name, port in compiled.inputs:
            # An ov.Tensor, not a bare array: OpenVINO converts a numpy array of the wrong dtype
            # silently, while a Tensor of the wrong dtype fails with ParameterMismatch.
            request.set_tensor(port, ov.Tensor(np.require(inputs[name], requirements="C")))
        request.infer()
        return {name: np.array(request.get_tensor(port).data, copy=True) for name, port in compiled.outputs}

    def is_unsupported(self, error: Exception) -> bool:
        text = str(error)
        return isinstance(error, Unsupported) or any(marker in text for marker in UNSUPPORTED_MARKERS)


def create(target: Target, **options: Any) -> OpenVinoBackend:
    """``options``: constructor arguments, e.g. ``properties={"EXECUTION_MODE_HINT": "ACCURACY"}``."""
    return OpenVinoBackend(target, **options)
