"""Instrumented native libraries for checking and benchmarking the gcov collector without a
3.5-CPU-hour TVM build: C++ sources that exercise what gcov must get right (if/else chains, short
circuits, loops, switches, exceptions, templates, lambdas, an inline function shared by two objects,
static initializers), built with ``g++ --coverage`` into a shared library that exports
``__gcov_dump``/``__gcov_reset``, and a worker that calls into it.

``python -m higen.coverage.native LIBRARY`` is a HiGen worker (same protocol and coverage hooks as a
backend worker): request ``{"calls": [["classify", 5], ...], "coverage": true}`` calls each
``extern "C" int f(int)`` and answers with the results (and the coverage payload); ``"load": [path]``
first loads more libraries, as a runtime loads a plugin on first use.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from higen.coverage.worker import from_env, handle_request
from higen.workers import serve

LINK_FLAGS = ["-Wl,-u,__gcov_dump", "-Wl,-u,__gcov_reset"]

SOURCES = {
    "shared.h": """\
#pragma once
inline int helper(int i) { return i > 1 ? i * 2 : i; }
template <typename T> T twice(T v) { return v > T(3) ? v * 2 : v - 1; }
""",
    "classify.cpp": """\
#include <iostream>
#include <stdexcept>
#include <vector>
#include <algorithm>
#include "shared.h"
static int table[4] = {1, 2, 3, 4};
extern "C" int classify(int x) {
  int r = 0;
  if (x < 0) r = -1;
  else if (x == 0) r = 0;
  else if (x > 100 && x % 2 == 0) r = 2;
  else r = 1;
  for (int i = 0; i < (x & 3); ++i) r += helper(i);
  switch (x % 5) { case 0: r += 10; break; case 1: r += 11; break; case 2: case 3: r += twice(x); break; default: break; }
  auto f = [&](int y) { return y > 2 || (y < -2 && x > 0) ? y : -y; }; r += f(x % 7);
  r += x > 50 ? (int)twice(1.5 * x) : table[x & 3];
  std::vector<int> v{x, 3, 1}; std::sort(v.begin(), v.end()); r += v[0];
  return r;
}
extern "C" int maythrow(int x) {
  try { if (x == 7) throw std::runtime_error("seven"); return x; } catch (const std::exception& e) { return -7; }
}
""",
    "other.cpp": """\
#include "shared.h"
extern "C" int other(int x) { int s = 0; while (x > 0) { s += helper(x); x /= 3; } return s ? s : -1; }
extern "C" int rarely(int x) {
  if (x == 12345) return 1;
  return (x & 1) && (x & 2) ? 3 : 4;
}
""",
}


def synthetic_sources(files: int, functions: int) -> dict[str, str]:
    """A larger library for benchmarks: ``files`` objects of ``functions`` branchy functions each,
    and ``extern "C" int run_<k>(int)`` per object calling a seed-dependent subset of them."""
    sources = {}
    for k in range(files):
        body = []
        for j in range(functions):
            body.append(
                f"static int f{j}(int x) {{ int r = {j};\n"
                f"  if ((x ^ {j * 7 + k}) % 3 == 0) r += x; else if (x % {j % 5 + 2} == 1) r -= 1;\n"
                f"  for (int i = 0; i < (x & 3); ++i) r += (i > 1 && x > {j}) ? i : -i;\n"
                f"  switch ((x + {j}) % 4) {{ case 0: r *= 2; break; case 1: r += 3; break; default: break; }}\n"
                f"  return r; }}\n")
        calls = "\n".join(f"  if ((seed >> {j % 16}) & 1) r += f{j}(seed + {j});" for j in range(functions))
        body.append(f'extern "C" int run_{k}(int seed) {{ int r = 0;\n{calls}\n  return r; }}\n')
        sources[f"unit{k}.cpp"] = "".join(body)
    return sources


def build_library(directory: Path, sources: dict[str, str] | None = None, name: str = "libhigencov.so",
                  jobs: int = 2, compiler: str = "g++") -> tuple[Path, Path, Path]:
    """Write the sources to ``directory/src``, compile each with ``--coverage`` into
    ``directory/build`` and link the shared library. Returns (source dir, build dir, library)."""
    sources = SOURCES if sources is None else sources
    src, build = Path(directory, "src"), Path(directory, "build")
    src.mkdir(parents=True, exist_ok=True)
    build.mkdir(parents=True, exist_ok=True)
    for file_name, text in sources.items():
        Path(src, file_name).write_text(text)
    units = [f for f in sources if f.endswith(".cpp")]
    running: list[subprocess.Popen] = []
    for unit in units:
        obj = Path(build, unit[:-4] + ".o")
        running.append(subprocess.Popen([compiler, "--coverage", "-O0", "-fPIC", "-c", str(Path(src, unit)), "-o", str(obj)],
                                        cwd=build, stderr=subprocess.PIPE))
        if len(running) >= jobs:
            _finish(running.pop(0))
    for proc in running:
        _finish(proc)
    library = Path(build, name)
    _finish(subprocess.Popen([compiler, "-shared", "--coverage", *LINK_FLAGS, "-o", str(library),
                              *(str(Path(build, u[:-4] + ".o")) for u in units)], cwd=build, stderr=subprocess.PIPE))
    return src, build, library


def _finish(proc: subprocess.Popen) -> None:
    _, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"compiler failed ({proc.args[0]}): {err.decode(errors='replace')[-2000:]}")


def make_handler(library_path: str):
    coverage = from_env()
    libraries = [ctypes.CDLL(library_path)]
    if coverage is not None:
        coverage.attach(None)

    def call(symbol: str, argument: int) -> int:
        for library in libraries:
            if hasattr(library, symbol):
                return getattr(library, symbol)(argument)
        raise AttributeError(f"no loaded library has {symbol}")

    def run(request: dict[str, Any]) -> tuple[dict[str, Any], None]:
        libraries.extend(ctypes.CDLL(path) for path in request.get("load", ()))  # like a plugin loaded late
        return {"status": "ok", "results": [call(symbol, int(argument)) for symbol, argument in request.get("calls", ())]}, None

    def handle(request: dict[str, Any]) -> dict[str, Any]:
        return handle_request(coverage, request, lambda: run(request))

    return handle, {"library": library_path, "pid": os.getpid()}


if __name__ == "__main__":
    serve(lambda: make_handler(sys.argv[1]))
