"""The backend protocol: what every runtime module under ``higen.backends`` provides.

A *target* is (runtime, device, optimization level), written ``ort:cpu:O3``, ``tvm:llvm:O0``,
``ov:CPU``; a runtime may name a release other than the installed one, ``ort@1.20.1:cpu:O3``
(installed with ``higen runtimes add``, see ``higen.runtimes``). One backend object lives in one
worker process and serves one target.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Protocol

from higen.errors import HigenError
from higen.tensors import Tensors

REFERENCE = "torch:cpu"  # NNSmith's PyTorch oracle, computed by the generator worker


class BackendMissing(HigenError, RuntimeError):
    """The runtime is not installed; the message says what to install."""


class DeviceUnavailable(HigenError, RuntimeError):
    """The runtime is installed but the requested device is absent; it is never replaced by another."""


class Unsupported(Exception):
    """The model uses an operator or dtype the target does not implement: an invalid test, not a bug."""


_VERSION = re.compile(r"[0-9][0-9A-Za-z.+!-]*")


@dataclass(frozen=True)
class Target:
    runtime: str
    device: str
    opt: str = ""
    version: str = ""  # a release from the runtime cache (``higen.runtimes``); "" = the installed one

    def __post_init__(self) -> None:
        if self.version and not _VERSION.fullmatch(self.version):
            raise ValueError(f"bad version {self.version!r} in target {self.runtime}@{self.version}: "
                             "write a release number, e.g. ort@1.20.1")

    @property
    def pinned(self) -> str:
        """The runtime with its release, as written in target names: ``ort`` or ``ort@1.20.1``."""
        return f"{self.runtime}@{self.version}" if self.version else self.runtime

    @property
    def name(self) -> str:
        return ":".join(part for part in (self.pinned, self.device, self.opt) if part)

    @classmethod
    def parse(cls, text: str) -> "Target":
        """``RUNTIME[@VERSION]:DEVICE[:OPT]``, e.g. ``ort:cpu:O3``, ``ort@1.20.1:cpu:O3``, ``ov:CPU``."""
        parts = text.split(":")
        runtime, at, version = parts[0].partition("@")
        if len(parts) not in (2, 3) or not all(parts) or not runtime or (at and not version):
            raise ValueError(f"bad target {text!r}: write RUNTIME[@VERSION]:DEVICE[:OPT], "
                             "e.g. ort:cpu:O3, ort@1.20.1:cpu:O3 or ov:CPU")
        return cls(runtime, *parts[1:], version=version)

    def __str__(self) -> str:
        return self.name

    def check(self, title: str, devices, levels) -> None:
        """Refuse a device or optimization level the runtime does not have, naming the valid ones."""
        if self.device not in devices:
            raise ValueError(f"{title} device must be one of {sorted(devices)}, not {self.device!r}")
        if self.opt not in levels:
            raise ValueError(f"{title} optimization level must be one of {sorted(levels)}, not {self.opt!r}")


class Backend(Protocol):
    """One runtime serving one target inside a worker process."""

    target: Target

    def describe(self) -> dict[str, Any]:
        """Runtime name, version and device, for bug-case metadata and ``higen doctor``."""

    def compile(self, model_path: str) -> Any:
        """Load and compile an ONNX file; raise :class:`Unsupported` for an op/dtype it lacks."""

    def run(self, compiled: Any, inputs: Tensors) -> Tensors:
        """Execute a compiled model on named inputs; returns outputs by ONNX output name."""

    def is_unsupported(self, error: Exception) -> bool:
        """Whether an exception from compile/run means "not implemented" rather than a failure."""


@dataclass
class Outcome:
    """What one target did with one test, as the parent saw it."""

    target: str
    status: str  # ok | unsupported | error | crash | timeout
    stage: str = ""  # compile | run, where it stopped
    error_type: str = ""
    message: str = ""
    log_tail: str = ""
    signal: str | None = None
    compile_s: float = 0.0
    run_s: float = 0.0
    wall_s: float = 0.0
    outputs_path: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_json(self) -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items() if k not in ("outputs_path", "log_tail")}
        return data
