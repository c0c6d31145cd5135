"""Which targets a campaign runs and which pairs the oracle compares.

Normal mode (``--compiler X``): X's optimized build against its unoptimized build, and the
unoptimized build against the PyTorch reference; X's GPU build too when a GPU exists. Diff mode
(``--diff-backends a,b --diff-device D``): every listed backend against the reference and each other.
Pairs are in priority order: the oracle blames each target at most once (see ``oracle.judge``).
A backend may be pinned to a release from the runtime cache, ``ort@1.20.1`` (``higen.runtimes``):
``--diff-backends ort@1.20.1,ort`` compares two releases of one runtime (version-differential mode).
"""

from __future__ import annotations

import glob
import itertools
from dataclasses import dataclass, field, replace

from higen.backends.base import REFERENCE, DeviceUnavailable, Target
from higen.backends.registry import runtime_info
from higen.runtimes import locate

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


def pinned_targets(backend: str, targets: dict[str, tuple[str, ...]]) -> list[Target]:
    """The targets listed for ``backend``'s runtime in ``targets``, at the release it pins
    (``ort@1.20.1``; ``ort``: the installed one), checked to be installed."""
    runtime, at, version = backend.partition("@")
    if ":" in backend or (at and not version):
        raise ValueError(f"bad backend {backend!r}: write RUNTIME[@VERSION], e.g. ort or ort@1.20.1")
    pinned = [replace(Target.parse(name), version=version) for name in targets[runtime_info(runtime).key]]
    locate(pinned[0])
    return pinned


def normal_plan(compiler: str, with_gpu: bool | None = None) -> Plan:
    """``compiler``: ``ort``, ``tvm``, ``ov``, optionally pinned to a release (``ort@1.20.1``)."""
    key = runtime_info(compiler.partition("@")[0]).key
    optional = NORMAL_GPU_TARGETS[key] if (gpu_present() if with_gpu is None else with_gpu) else ()
    targets = pinned_targets(compiler, {key: (*NORMAL_TARGETS[key], *sorted(optional))})
    names = [t.name for t in targets]
    base = names[0]
    pairs = [(base, name) for name in names[1:]] + [(REFERENCE, base)]
    return Plan("normal", targets, pairs, set(names[len(NORMAL_TARGETS[key]):]))


def diff_plan(backends: list[str], device: str) -> Plan:
    if device not in DIFF_TARGETS:
        raise ValueError(f"--diff-device must be cpu or gpu, not {device!r}")
    if device == "gpu" and not gpu_present():
        raise DeviceUnavailable("--diff-device gpu: this machine has no GPU; use --diff-device cpu")
    if len(set(backends)) < 1:
        raise ValueError("--diff-backends needs at least one backend, e.g. ort,ov,tvm")
    targets = [backend_target(text, device) for text in dict.fromkeys(backends)]
    names = list(dict.fromkeys(t.name for t in targets))
    return Plan("diff", [Target.parse(n) for n in names], diff_pairs(names))


def backend_target(text: str, device: str = "cpu") -> Target:
    """A backend as given on the command line: ``ort`` or ``ort@1.20.1`` (the device's default target
    of that runtime, at that release) or a full target name (``ort@1.20.1:cpu:O0``), checked installed."""
    if ":" in text:
        target = Target.parse(text)
        locate(target)
        return target
    return pinned_targets(text, {key: (name,) for key, name in DIFF_TARGETS[device].items()})[0]


def exec_plan(targets: list[str], with_reference: bool) -> Plan:
    """``higen exec``: explicit targets (``ort``, ``ort@1.20.1``, ``tvm``, ``ov`` or full names like
    ``ort:cpu:O0``)."""
    names = list(dict.fromkeys(backend_target(text).name for text in targets))
    return Plan("exec", [Target.parse(n) for n in names], diff_pairs(names, with_reference))
