"""Coverage flags for ``higen`` (run): :func:`add_coverage_flags` adds them to the run parser,
:func:`coverage_settings_from_args` turns them into ``EngineSettings.coverage``."""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

from higen.coverage.manager import FAMILIES, CoverageSettings, GcovBuild
from higen.errors import UserError

#: ``--coverage auto``: every cheap collector; ov-passes is left out (OpenVINO's pass profiler about
#: doubles compile time, see docs/coverage.md)
AUTO = tuple(f for f in FAMILIES if f != "ov-passes")
#: runtimes that may have an instrumented build, with the flag prefix naming them
GCOV_RUNTIMES = {"tvm": "tvm", "ov": "ov"}


def add_coverage_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("coverage (see docs/coverage.md)")
    group.add_argument("--coverage", default="auto", metavar="LIST",
                       help="collectors from the installed wheels: auto (default: ort,ov,tvm-py, those that "
                            "apply to the targets), none (structure coverage is always on), or a comma list of "
                            f"{','.join(FAMILIES)} (ov-passes slows OpenVINO compilation ~2x)")
    for runtime, prefix in GCOV_RUNTIMES.items():
        title = {"tvm": "TVM", "ov": "OpenVINO"}[runtime]
        group.add_argument(f"--{prefix}-cov-src", type=Path, metavar="DIR",
                           help=f"source tree of an instrumented (gcc --coverage) {title} build")
        group.add_argument(f"--{prefix}-cov-build", type=Path, metavar="DIR",
                           help=f"build tree of that {title} build (holds the .gcno files)")
    group.add_argument("--cov-every", type=int, default=100, metavar="N",
                       help="gcovr totals every N tests, in the background (0: only at the end; default 100)")
    group.add_argument("--no-final-gcovr", action="store_true",
                       help="skip gcovr's last run when the campaign ends (on a full TVM build one run takes "
                            "many minutes; HiGen's own branch union is in coverage_by_steps.csv either way)")
    group.add_argument("--cov-reset", action="store_true",
                       help="zero the gcov counters before the first test: start-up and the op-support probe "
                            "do not count as covered")
    group.add_argument("--cov-data", type=Path, metavar="DIR",
                       help="keep the cumulative .gcda files here (default: a temporary directory on /dev/shm, "
                            "removed at the end)")


def coverage_settings_from_args(args: argparse.Namespace) -> CoverageSettings:
    """Validate the coverage flags; a mistake raises :class:`UserError` with what to do."""
    text = (getattr(args, "coverage", None) or "none").strip()
    if text == "none":
        families: tuple[str, ...] = ()
    elif text == "auto":
        families = AUTO
    else:
        families = tuple(dict.fromkeys(f.strip() for f in text.split(",") if f.strip()))
        unknown = [f for f in families if f not in FAMILIES]
        if unknown:
            raise UserError(f"--coverage: unknown collector {unknown[0]!r}; choose none, auto or from "
                            f"{', '.join(FAMILIES)}")
    gcov: dict[str, GcovBuild] = {}
    for runtime, prefix in GCOV_RUNTIMES.items():
        src = getattr(args, f"{prefix}_cov_src", None)
        build = getattr(args, f"{prefix}_cov_build", None)
        if src is None and build is None:
            continue
        if src is None or build is None:
            raise UserError(f"--{prefix}-cov-src and --{prefix}-cov-build go together (source and build tree "
                            "of the instrumented build)")
        for flag, directory in ((f"--{prefix}-cov-src", src), (f"--{prefix}-cov-build", build)):
            if not directory.is_dir():
                raise UserError(f"{flag} {directory}: no such directory")
        if not _has_gcno(build):
            raise UserError(f"--{prefix}-cov-build {build}: no .gcno files there; build with gcc --coverage "
                            "(see docs/coverage.md)")
        gcov[runtime] = GcovBuild(str(src.resolve()), str(build.resolve()))
    every = getattr(args, "cov_every", 100)
    if every is None or every < 0:
        raise UserError(f"--cov-every must be 0 or more, not {every}")
    if gcov:
        for tool in ("gcov", "gcovr"):
            if shutil.which(tool) is None:
                raise UserError(f"{tool} is not on PATH: it is needed for --*-cov-build "
                                f"({'apt-get install gcc' if tool == 'gcov' else 'pip install gcovr'})")
    data = getattr(args, "cov_data", None)
    return CoverageSettings(families=families, gcov=gcov, every=every, reset=bool(getattr(args, "cov_reset", False)),
                            data_dir=str(data) if data else None,
                            final_sample=not getattr(args, "no_final_gcovr", False))


def _has_gcno(directory: Path) -> bool:
    for _root, _dirs, files in os.walk(directory):
        if any(f.endswith(".gcno") for f in files):
            return True
    return False
