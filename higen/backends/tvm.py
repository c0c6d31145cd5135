"""Apache TVM backend (Relax): ONNX frontend, then ``tvm.compile``, on LLVM or CUDA.

Targets are ``tvm:llvm:O0``, ``tvm:llvm:O3``, ``tvm:cuda:O0`` and ``tvm:cuda:O3``:

- O0: ``tvm.compile``'s generic ``"default"`` Relax pipeline at ``PassContext`` opt level 0. On TVM
  0.27 it legalizes and lowers without FoldConstant, FuseOps or FuseTIR.
- O3: the target's own optimizing pipeline (``relax.get_default_pipeline(target)``: for LLVM the
  cpu_generic one, which adds FoldConstant, FuseOps and FuseTIR) at opt level 3. ``tvm.compile``
  picks it by itself only for GPUs: its source says that on CPUs fusion can drop packed calls whose
  side effects matter, which is exactly what a fuzzer should look at. Without this, O0 and O3 ran
  the same 79 Relax passes and differed only in TIR lowering (see docs/numerics.md).
Integer constant subgraphs are folded first (see :mod:`higen.onnx_fold`), because the Relax frontend
only accepts literal pads, shapes and axes.
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass
from typing import Any, Sequence

os.environ.setdefault("TVM_NUM_THREADS", "1")  # the worker spawner sets it too; one thread per worker

import numpy as np
import onnx
import tvm
from tvm import relax
from tvm.relax.frontend.onnx import from_onnx

from higen.backends.base import DeviceUnavailable, Target, Unsupported
from higen.onnx_fold import fold_integer_constants
from higen.tensors import Tensors

LEVELS = {"O0": 0, "O3": 3}
DEVICES = ("llvm", "cuda")
#: Messages that mean "TVM does not implement this op/dtype", not "TVM got it wrong".
UNSUPPORTED_PATTERNS = re.compile(
    "|".join((
        r"not supported for frontend ONNX",  # OpNotImplemented: the frontend has no converter
        r"\bnot implemented\b",  # converter lacks this opset version or attribute combination
        r"not supported yet",  # frontend limitation, e.g. "Dynamic pads are not supported yet."
        r"unknown intrinsic",  # LLVM codegen lacks a math intrinsic for the dtype (float16 atan)
        r"Data type \S+ not supported for",  # TIR op lacks the dtype (bfloat16 isnan)
        r"power only applies to float",  # TIR pow is float-only (integer Pow)
        r"only support",  # e.g. "layer_norm: only support float32 and float16"
    )),
    re.IGNORECASE,
)


@dataclass
class TvmCompiled:
    """A compiled model: the VM plus the names that map ONNX tensors onto it."""

    vm: relax.VirtualMachine
    device: Any  # tvm Device the VM runs on
    input_names: list[str]  # parameters of ``main``, in order (the ONNX input names)
    output_names: list[str]  # ONNX graph outputs, in the order ``main`` returns them


class TvmBackend:
    """``disabled_passes`` are left out of the build (``PassContext(disabled_pass=...)``); a required
    pass such as LegalizeOps then makes the build fail. ``instruments`` watch the passes that run."""

    def __init__(self, target: Target, disabled_passes: Sequence[str] = (), instruments: Sequence[Any] = ()):
        target.check("TVM", DEVICES, LEVELS)
        self.target = target
        self.opt_level = LEVELS[target.opt]
        self.fuse = self.opt_level >= 3  # the target's own optimizing Relax pipeline (module docstring)
        self.disabled_passes, self.instruments = list(disabled_passes), list(instruments)
        if target.device == "cuda":
            self.device = tvm.cuda(0)
            if not self.device.exist:  # never fall back to the CPU
                raise DeviceUnavailable(
                    f"TVM {tvm.__version__} sees no CUDA device (built with CUDA: "
                    f"{tvm.support.libinfo().get('USE_CUDA', '?')}): run tvm:llvm targets instead"
                )
            self.tvm_target = tvm.target.Target(tvm.target.Target.from_device(self.device), host="llvm")
        else:
            self.device = tvm.cpu(0)
            self.tvm_target = tvm.target.Target("llvm")

    def describe(self) -> dict[str, Any]:
        return {"runtime": "tvm", "version": tvm.__version__, "device": self.target.device,
                "opt_level": self.opt_level, "target": self.tvm_target.kind.name,
                "pipeline": "target-fused" if self.fuse else "generic"}  # part of the op-support cache key

    def compile(self, model_path: str) -> TvmCompiled:
        model = fold_integer_constants(onnx.load(model_path))
        with warnings.catch_warnings():  # the frontend warns about every renamed or checker-flagged item
            warnings.simplefilter("ignore")
            # Unsanitized names keep Relax parameter names equal to the ONNX input names.
            mod = from_onnx(model, keep_params_in_input=False, sanitize_input_names=False)
        with tvm.transform.PassContext(opt_level=self.opt_level, disabled_pass=self.disabled_passes,
                                       instruments=self.instruments):
            pipeline = relax.get_default_pipeline(self.tvm_target) if self.fuse else "default"
            executable = tvm.compile(mod, target=self.tvm_target, relax_pipeline=pipeline)
        return TvmCompiled(
            vm=relax.VirtualMachine(executable, self.device),
            device=self.device,
            input_names=[param.name for param in mod["main"].params],
            output_names=[output.name for output in model.graph.output],
        )

    def run(self, compiled: TvmCompiled, inputs: Tensors) -> Tensors:
        args = [tvm.runtime.tensor(np.asarray(inputs[name], order="C"), compiled.device)
                for name in compiled.input_names]
        result = compiled.vm["main"](*args)
        values = [result] if len(compiled.output_names) == 1 else list(result)
        if len(values) != len(compiled.output_names):
            raise RuntimeError(f"TVM returned {len(values)} outputs for {len(compiled.output_names)} ONNX outputs")
        return {name: _to_numpy(value) for name, value in zip(compiled.output_names, values)}

    def is_unsupported(self, error: Exception) -> bool:
        return (isinstance(error, (Unsupported, NotImplementedError))  # includes tvm.error.OpNotImplemented
                or UNSUPPORTED_PATTERNS.search(str(error)) is not None)


def _to_numpy(value: Any) -> np.ndarray:
    """One VM result as numpy: a Tensor, a Shape (a tuple: ``Shape`` of a static tensor), or a scalar."""
    if isinstance(value, tvm.runtime.Tensor):
        return value.numpy()
    if isinstance(value, tvm.runtime.ShapeTuple):
        return np.array(value, dtype=np.int64)
    if isinstance(value, (bool, int, float)):
        return np.asarray(value)
    raise TypeError(f"unexpected TVM output of type {type(value).__name__}")


def create(target: Target, **options: Any) -> TvmBackend:
    """``options``: constructor arguments, e.g. ``disabled_passes=["FuseOps"]``."""
    return TvmBackend(target, **options)
