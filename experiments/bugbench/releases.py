"""The runtime releases entries need, from HiGen's runtime cache (:mod:`higen.runtimes`).

A release is ``pip install --target <cache>/runtimes/<distribution>-<version> --no-deps`` (its
dependencies come from the main environment), imported by a worker that has that folder first on
``PYTHONPATH``; ``HIGEN_RUNTIME_CACHE`` moves the cache. The release installed in the main
environment counts as available too.
"""

from __future__ import annotations

from pathlib import Path

from higen import runtimes


def available(runtime: str, version: str) -> bool:
    """Whether ``runtime`` (``ort``, ``ov``, ``tvm``) ``version`` can run here without installing."""
    if runtimes.path_for(runtime, version) is not None:
        return True
    main = runtimes.main_version(runtimes.runtime_for(runtime))
    return main is not None and runtimes.same_release(main, version)


def install(runtime: str, version: str) -> Path:
    """Install the release into the cache (checked to import here); RuntimeInstallError says why not."""
    return runtimes.install(f"{runtime}@{version}")


def distribution(runtime: str) -> str:
    return runtimes.runtime_for(runtime).distribution
