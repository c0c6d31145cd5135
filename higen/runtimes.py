"""Other releases of a runtime, installed side by side in a per-user cache (``higen runtimes``, the
command is :mod:`higen.cli.runtimes`).

A target may name a release other than the environment's (``ort@1.20.1:cpu:O3``, see
:class:`higen.backends.base.Target`): for version-differential testing, or to replay a bug case on
the version that showed it. Each release lives in ``<cache>/runtimes/<distribution>-<version>/``, a
``pip install --target DIR --no-deps`` of the runtime alone: what it depends on (numpy, protobuf, ...)
comes from the main environment, and the worker serving the target gets ``DIR`` first on its
``PYTHONPATH`` so that it imports that release and no other (checked at its start). ``<cache>`` is
``$HIGEN_CACHE_DIR``, else ``$XDG_CACHE_HOME/higen``, else ``~/.cache/higen``; ``$HIGEN_RUNTIME_CACHE``
moves the ``runtimes`` folder alone.

Python API (also used by ``experiments/bugbench``): :func:`install`, :func:`installed`,
:func:`path_for`, :func:`remove`, :func:`import_check`.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from higen.backends.base import BackendMissing, Target
from higen.backends.registry import RUNTIMES, RuntimeInfo, require_installed
from higen.errors import UserError


class RuntimeInstallError(UserError, RuntimeError):
    """``higen runtimes add`` failed; the message is one line that says why and what to do."""


@dataclass(frozen=True)
class Runtime:
    """One release in the cache."""

    key: str  # the runtime's key in target names: ort, tvm, ov
    distribution: str  # its name on PyPI: onnxruntime, apache-tvm, openvino
    version: str
    path: Path

    @property
    def spec(self) -> str:
        """What ``higen runtimes add`` takes: ``onnxruntime==1.20.1``."""
        return f"{self.distribution}=={self.version}"

    @property
    def pinned(self) -> str:
        """How targets name it: ``ort@1.20.1``."""
        return f"{self.key}@{self.version}"

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file() and not p.is_symlink())


def cache_root() -> Path:
    """HiGen's per-user cache: ``$HIGEN_CACHE_DIR``, else ``$XDG_CACHE_HOME/higen``, else ``~/.cache/higen``."""
    if os.environ.get("HIGEN_CACHE_DIR"):
        return Path(os.environ["HIGEN_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "higen"


def runtimes_dir() -> Path:
    """``$HIGEN_RUNTIME_CACHE`` when set (this folder alone moved), else ``<cache>/runtimes``."""
    return Path(os.environ.get("HIGEN_RUNTIME_CACHE") or cache_root() / "runtimes")


def versioned_runtimes() -> list[RuntimeInfo]:
    return [info for info in RUNTIMES.values() if info.distribution]


def runtime_for(name: str) -> RuntimeInfo:
    """A runtime by target key (``ort``) or PyPI name (``onnxruntime``); ValueError names the choices."""
    for info in versioned_runtimes():
        if name == info.key or canonicalize_name(name) == canonicalize_name(info.distribution):
            return info
    choices = ", ".join(f"{i.distribution} ({i.key})" for i in versioned_runtimes())
    raise ValueError(f"unknown runtime {name!r}: choose from {choices}")


def parse_spec(text: str) -> tuple[RuntimeInfo, str]:
    """``onnxruntime==1.20.1``, ``ort==1.20.1`` or ``ort@1.20.1`` -> (runtime, version)."""
    name, _, version = re.sub(r"==|@", "=", text.strip(), count=1).partition("=")
    info = runtime_for(name.strip())
    try:
        Version(version.strip())
    except InvalidVersion:
        raise ValueError(f"{text!r}: name one release, e.g. {info.distribution}==1.20.1") from None
    return info, version.strip()


def add_command(info: RuntimeInfo, version: str) -> str:
    return f"higen runtimes add {info.distribution}=={version}"


def same_release(a: str, b: str) -> bool:
    """``1.27`` and ``1.27.0`` are one release; so are OpenVINO's ``2025.1.0-18503-...`` and ``2025.1.0``."""
    try:
        return Version(re.split(r"[-+ ]", a, maxsplit=1)[0]) == Version(re.split(r"[-+ ]", b, maxsplit=1)[0])
    except InvalidVersion:
        return a == b


def installed() -> list[Runtime]:
    """Every release in the cache, by runtime then version (staging folders of an install, and
    other distributions such as ``apache-tvm-ffi-0.1.0``, left out)."""
    found = []
    folder = runtimes_dir()
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        for info in versioned_runtimes():
            version = path.name.removeprefix(f"{info.distribution}-")
            if path.is_dir() and version != path.name and version[:1].isdigit():
                found.append(Runtime(info.key, info.distribution, version, path))
    return sorted(found, key=lambda r: (r.key, _sort_key(r.version)))


def _sort_key(version: str) -> tuple:
    try:
        return (0, Version(version))
    except InvalidVersion:
        return (1, version)


def path_for(runtime: str, version: str) -> Path | None:
    """The cache folder holding ``runtime`` (key or PyPI name) at ``version``, or None."""
    info = runtime_for(runtime)
    return next((r.path for r in installed() if r.key == info.key and same_release(r.version, version)), None)


def main_version(info: RuntimeInfo) -> str | None:
    """The release installed in the main environment, or None."""
    try:
        return importlib.metadata.version(info.distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def locate(target: Target) -> Path | None:
    """Where the worker for ``target`` imports its runtime from: a cache folder, or None for the main
    environment (an unpinned target, or one pinned to the release installed there). Raises
    :class:`BackendMissing` naming the command that installs a missing release."""
    if not target.version:
        require_installed(target.runtime)
        return None
    info = runtime_for(target.runtime)
    path = path_for(info.key, target.version)
    if path is not None:
        return path
    if (main := main_version(info)) is not None and same_release(main, target.version):
        return None
    raise BackendMissing(f"{info.title} {target.version} is not installed (target {target.name}): "
                         f"run `{add_command(info, target.version)}`")


def worker_env(target: Target) -> dict[str, str]:
    """Environment for the worker serving ``target``: its release's folder first on ``PYTHONPATH``."""
    path = locate(target)
    if path is None:
        return {}
    return {"PYTHONPATH": os.pathsep.join(p for p in (str(path), os.environ.get("PYTHONPATH", "")) if p)}


def verify_loaded(target: Target) -> dict[str, str]:
    """Inside a pinned target's worker: import the runtime and check it is the requested release;
    returns ``{"pinned_version", "runtime_path"}`` for the worker's description."""
    info = runtime_for(target.runtime)
    module = importlib.import_module(info.package)
    loaded, where = str(getattr(module, "__version__", "?")), str(Path(module.__file__).parent.parent)
    if not same_release(loaded, target.version):
        raise BackendMissing(f"{target.name}: the worker imported {info.package} {loaded} from {where}, "
                             f"not {target.version}; run `{add_command(info, target.version)}`")
    return {"pinned_version": target.version, "runtime_path": where}


# -- install / check / remove -----------------------------------------------------------------
_CHECK = """import importlib, json, sys
m = importlib.import_module(sys.argv[1])
print(json.dumps({"version": str(getattr(m, "__version__", "?")), "file": m.__file__}))"""


def import_check(path: Path, package: str, timeout_s: float = 120.0) -> dict[str, Any]:
    """Import ``package`` in a child process with ``path`` first on its path: ``{"version", "file"}``, or
    ``{"error": one line}`` (e.g. a wheel built for another numpy ABI, a dependency missing here)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(path), os.environ.get("PYTHONPATH")) if p)}
    try:
        done = subprocess.run([sys.executable, "-c", _CHECK, package], capture_output=True, text=True,
                              env=env, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"error": f"importing {package} took over {timeout_s:g} s"}
    if done.returncode != 0 or _NUMPY_ABI.search(done.stderr):  # an old ORT survives its numpy failure
        return {"error": _import_problem(done.stderr, done.returncode)}
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if not Path(result["file"]).resolve().is_relative_to(path.resolve()):
        return {"error": f"{package} was imported from {result['file']}, not from {path}"}
    return result


_NUMPY_ABI = re.compile(r"compiled using NumPy 1\.x cannot be run in|numpy\.core\.multiarray failed to import")


def _import_problem(stderr: str, code: int) -> str:
    """The line that says why an import failed; numpy's ABI complaint is named as such."""
    if _NUMPY_ABI.search(stderr):
        import numpy

        return (f"built for NumPy 1.x, and this environment has NumPy {numpy.__version__}: "
                "choose a newer release of the runtime")
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else f"exit status {code}"


def unmet_requirements(path: Path, distribution: str) -> list[str]:
    """The release's own dependencies that the main environment lacks or has at another version."""
    dists = [d for d in importlib.metadata.distributions(path=[str(path)])
             if canonicalize_name(d.metadata["Name"]) == canonicalize_name(distribution)]
    unmet = []
    for text in (dists[0].requires or []) if dists else []:
        try:
            requirement = Requirement(text)
        except InvalidRequirement:
            continue
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        try:
            have = importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            unmet.append(f"{requirement} (missing)")
            continue
        if requirement.specifier and not requirement.specifier.contains(have, prereleases=True):
            unmet.append(f"{requirement} (have {have})")
    return unmet


def install(spec: str, force: bool = False) -> Path:
    """Install one release (``onnxruntime==1.20.1``) into the cache and check that it imports here;
    returns its folder. Already installed: returns it at once (``force`` reinstalls). Staged in a
    hidden folder and renamed into place, so an interrupted install leaves nothing half-written."""
    info, version = parse_spec(spec)
    existing = path_for(info.key, version)
    if existing is not None and not force:
        return existing
    root = runtimes_dir()
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f".tmp-{info.distribution}-{version}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        _pip_install(info, version, staging)
        real = _installed_version(staging, info)
        _require_import(staging, info, real)
        final = root / f"{info.distribution}-{real}"
        if final.exists():  # another install of it finished first: keep that one unless asked not to
            if not force:
                return final
            shutil.rmtree(final)
        os.rename(staging, final)
        return final
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _pip_install(info: RuntimeInfo, version: str, folder: Path) -> None:
    command = [sys.executable, "-m", "pip", "install", "--no-deps", "--only-binary", ":all:", "--target", str(folder),
               "--disable-pip-version-check", "--no-warn-script-location", f"{info.distribution}=={version}"]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR:")]
        why = errors[-1].removeprefix("ERROR:").strip() if errors else f"pip exited with status {done.returncode}"
        raise RuntimeInstallError(f"pip could not install {info.distribution}=={version}: {why} "
                                  "(check the release exists for this Python and platform on PyPI)")


def _require_import(folder: Path, info: RuntimeInfo, version: str) -> None:
    """Refuse a release that does not import here, with the reason and what it asks for that is not met."""
    checked = import_check(folder, info.package)
    if "error" in checked:
        unmet = unmet_requirements(folder, info.distribution)
        needs = f" (it requires {', '.join(unmet)})" if unmet else ""
        raise RuntimeInstallError(f"{info.distribution} {version} does not import in this environment: "
                                  f"{checked['error']}{needs}")


def _installed_version(folder: Path, info: RuntimeInfo) -> str:
    for dist in importlib.metadata.distributions(path=[str(folder)]):
        if canonicalize_name(dist.metadata["Name"]) == canonicalize_name(info.distribution):
            return dist.version
    raise RuntimeInstallError(f"pip installed no {info.distribution} into {folder}")


def remove(spec: str) -> Path:
    """Delete one release from the cache; returns the folder it occupied."""
    info, version = parse_spec(spec)
    path = path_for(info.key, version)
    if path is None:
        raise ValueError(f"{info.distribution} {version} is not in {runtimes_dir()}: see `higen runtimes list`")
    shutil.rmtree(path)
    return path


def describe(runtime: Runtime) -> dict[str, Any]:
    """What ``higen runtimes list`` and ``higen doctor`` show for one release."""
    checked = import_check(runtime.path, runtime_for(runtime.key).package)
    return {"runtime": runtime.key, "distribution": runtime.distribution, "version": runtime.version,
            "target": runtime.pinned, "path": str(runtime.path), "size_mb": round(runtime.size_bytes() / 2**20, 1),
            "imports": "error" not in checked, "problem": checked.get("error", ""),
            "unmet_requirements": unmet_requirements(runtime.path, runtime.distribution)}


def describe_installed() -> list[dict[str, Any]]:
    """:func:`describe` for every release in the cache, import checks in parallel child processes."""
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        return list(pool.map(describe, installed()))
