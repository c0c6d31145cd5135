"""Which targets a campaign runs and which pairs the oracle compares.

Normal mode (``--compiler X``): X's optimized build against its unoptimized build, and the
unoptimized build against the PyTorch reference; X's GPU build too when a GPU exists. Diff mode
(``--diff-backends a,b --diff-device D``): every listed backend against the reference and each other.
Pairs are in priority order: the oracle blames each target at most once (see ``oracle.judge``).
"""

from __future__ import annotations

import glob
import itertools
from dataclasses import dataclass, field

from higen.backends.base import REFERENCE, DeviceUnavailable, Target
from higen.backends.registry import require_installed, runtime_info

NORMAL_TARGETS = {"ort": ("ort:cpu:O0", "ort:cpu:O3"), "tvm": ("tvm:llvm:O0", "tvm:llvm:O3"), "ov": ("ov:CPU",)}
NORMAL_GPU_TARGETS = {"ort": ("ort:cuda:O3",), "tvm": ("tvm:cuda:O3",), "ov": ("ov:GPU",)}
DIFF_TARGETS = {
    "cpu": {"ort": "ort:cpu:O3", "tvm": "tvm:llvm:O3", "ov": "ov:CPU"},
    "gpu": {"ort": "ort:cuda:O3", "tvm": "tvm:cuda:O3", "ov": "ov:GPU"},
}


@dataclass
class Plan:
    mode: str  # normal | diff | exec
    targets: list[Target]
    pairs: list[tuple[str, str]]
    #: targets that are dropped with a plain warning when their device turns out absent
    optional: set[str] = field(default_factory=set)

    def without(self, target: str) -> "Plan":
        kept = [t for t in self.targets if t.name != target]
        pairs = [p for p in self.pairs if target not in p]
        return Plan(self.mode, kept, pairs, self.optional - {target})


def diff_pairs(names: list[str], with_reference: bool = True) -> list[tuple[str, str]]:
    """Diff-mode comparison order: each target against the reference, then each pair of targets."""
    return ([(REFERENCE, n) for n in names] if with_reference else []) + list(itertools.combinations(names, 2))


def gpu_present() -> bool:
    """Whether this machine has an NVIDIA GPU at all (device nodes exist)."""
    return bool(glob.glob("/dev/nvidia[0-9]*"))


def normal_plan(compiler: str, with_gpu: bool | None = None) -> Plan:
    require_installed(compiler)
    names = list(NORMAL_TARGETS[runtime_info(compiler).key])
    optional: set[str] = set()
    if gpu_present() if with_gpu is None else with_gpu:
        optional = set(NORMAL_GPU_TARGETS[compiler])
        names += sorted(optional)
    base = names[0]
    pairs = [(base, name) for name in names[1:]] + [(REFERENCE, base)]
    return Plan("normal", [Target.parse(n) for n in names], pairs, optional)


def diff_plan(backends: list[str], device: str) -> Plan:
    if device not in DIFF_TARGETS:
        raise ValueError(f"--diff-device must be cpu or gpu, not {device!r}")
    if device == "gpu" and not gpu_present():
        raise DeviceUnavailable("--diff-device gpu: this machine has no GPU; use --diff-device cpu")
    if len(set(backends)) < 1:
        raise ValueError("--diff-backends needs at least one backend, e.g. ort,ov,tvm")
    names = []
    for backend in dict.fromkeys(backends):
        require_installed(backend)
        names.append(DIFF_TARGETS[device][runtime_info(backend).key])
    return Plan("diff", [Target.parse(n) for n in names], diff_pairs(names))


def exec_plan(targets: list[str], with_reference: bool) -> Plan:
    """``higen exec``: explicit targets (``ort``, ``tvm``, ``ov`` or full names like ``ort:cpu:O0``)."""
    names = []
    for text in targets:
        name = text if ":" in text else DIFF_TARGETS["cpu"][runtime_info(text).key]
        require_installed(Target.parse(name).runtime)
        names.append(name)
    return Plan("exec", [Target.parse(n) for n in names], diff_pairs(names, with_reference))
