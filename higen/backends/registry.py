"""Which runtimes HiGen knows and how to tell whether they are installed (a worker builds a backend
with :func:`higen.backends.serve.create_backend`)."""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass

from higen.backends.base import BackendMissing


@dataclass(frozen=True)
class RuntimeInfo:
    key: str
    title: str
    module: str  # higen module implementing it
    package: str  # importable package that must exist
    install: str  # what to tell a user who lacks it
    distribution: str = ""  # its name on PyPI, for other releases in the runtime cache ("": none)


RUNTIMES: dict[str, RuntimeInfo] = {
    info.key: info
    for info in (
        RuntimeInfo("ort", "ONNX Runtime", "higen.backends.ort", "onnxruntime", "pip install onnxruntime",
                    "onnxruntime"),
        RuntimeInfo("tvm", "Apache TVM (Relax)", "higen.backends.tvm", "tvm", "pip install apache-tvm",
                    "apache-tvm"),
        RuntimeInfo("ov", "OpenVINO", "higen.backends.openvino", "openvino", "pip install openvino",
                    "openvino"),
        # Fault injection for reliability tests only: never part of a real campaign's defaults.
        RuntimeInfo("fault", "fault injector (tests)", "higen.backends.faults", "numpy", "(built in)"),
    )
}


def runtime_info(key: str) -> RuntimeInfo:
    if key not in RUNTIMES:
        known = ", ".join(k for k in RUNTIMES if k != "fault")
        raise ValueError(f"unknown backend {key!r}: choose from {known}")
    return RUNTIMES[key]


def require_installed(key: str) -> RuntimeInfo:
    """Raise :class:`BackendMissing` with the install command when the runtime's package is absent."""
    info = runtime_info(key)
    if importlib.util.find_spec(info.package) is None:
        raise BackendMissing(f"{info.title} is not installed: run `{info.install}` or leave it out")
    return info
