"""Coverage collectors: the protocol, and the cheap signals read from the pip wheels.

A collector is told when a test begins and ends and answers with the *features* the test hit
(strings; what a feature is depends on the collector). :class:`higen.coverage.manager.CoverageManager`
keeps the union per collector and turns each test's features into a new-feature count.

Backend collectors run inside the backend's worker process (see :mod:`higen.coverage.worker`):

- ``ort_transformers``: the graph transformers ONNX Runtime applied while building the session, from
  its INFO log line ``GraphTransformer NAME modified: 1`` (session ``log_severity_level`` 1).
  Feature ``NAME`` plus ``NAME*k`` for the number of passes that modified the graph (1, 2, 3+).
- ``ov_layers``: OpenVINO's compiled runtime model (``get_runtime_model()``): per executed node its
  layer type and kernel (``kernel:Convolution:brgconv_avx512_f32``), its runtime precision, and
  the ONNX op types fused into it (``fused:FullyConnected:Add+MatMul``).
- ``ov_passes``: OpenVINO transformation passes that changed the model, from the pass profiler
  (``OV_ENABLE_PROFILE_PASS=1`` prints each pass with ``+`` when it changed the model).
- ``tvm_py``: Python arc coverage (coverage.py, branch mode) of TVM's Relax frontend, transforms,
  backend, op definitions and TOPI: feature ``relax/transform/fuse_ops.py:120>123``.
- ``gcov_<compiler>``: branches of an instrumented build (:mod:`higen.coverage.gcov`).

``structure`` runs in the parent on the test's structure tokens (op, edge, dtype, rank, attribute).
"""

from __future__ import annotations

import ctypes
import os
import re
import stat
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Any, Iterable, Protocol


class Collector(Protocol):
    """Per test: ``begin`` before it runs, ``end`` after, returning the features it hit.

    ``end`` may leave out features this collector instance already returned (the union, and so
    every new-feature count, is the same), which keeps worker replies small.
    """

    name: str

    def begin(self, context: "TestContext") -> None: ...

    def end(self, context: "TestContext") -> set[str]: ...


@dataclass
class TestContext:
    """What a collector may look at for one test (fields are None where they do not apply)."""

    model_path: str | None = None
    compiled: Any = None  # the backend's compiled model; None when compilation failed
    output: str = ""  # what the process printed during the test (collectors with ``captures_output``)
    tokens: list[str] = field(default_factory=list)


class StructureCollector:
    """Model-structure coverage: the test's structure tokens themselves (always on, in the parent)."""

    name = "structure"

    def begin(self, context: TestContext) -> None:
        pass

    def end(self, context: TestContext) -> set[str]:
        return set(context.tokens)


# -- capturing what native code prints ------------------------------------------------------------
_libc = ctypes.CDLL(None)


def _flush_all() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    _libc.fflush(None)  # C stdio buffers (std::cout writes through them)


class OutputCapture:
    """What this process writes to fds 1 and 2 during a test, with chosen lines removed afterwards.

    In a HiGen worker both fds are the worker log (a regular file opened for append): the capture
    remembers the log's size at ``begin`` and, at ``end``, reads what was appended, truncates the log
    back and writes the kept lines again. Text printed just before a crash therefore stays in the
    log, where the parent reads a crash's last words. Elsewhere (a terminal, a pipe) fds 1 and 2 are
    redirected to a temporary file for the duration of the test.
    """

    def __init__(self) -> None:
        out, err = os.fstat(1), os.fstat(2)
        self.in_log = stat.S_ISREG(out.st_mode) and (out.st_dev, out.st_ino) == (err.st_dev, err.st_ino)
        self.offset = 0
        self._saved: tuple[int, int] | None = None
        self._file: int | None = None

    def begin(self) -> None:
        _flush_all()
        if self.in_log:
            self.offset = os.fstat(1).st_size
            return
        handle, path = tempfile.mkstemp(prefix="higen-capture-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
        os.unlink(path)
        self._file = handle
        self._saved = (os.dup(1), os.dup(2))
        os.dup2(handle, 1)
        os.dup2(handle, 2)

    def end(self, drop) -> str:
        """Stop capturing; returns the captured text and keeps only lines for which ``drop`` is false."""
        _flush_all()
        if self.in_log:
            with open("/proc/self/fd/1", "rb") as log:
                log.seek(self.offset)
                text = log.read().decode(errors="replace")
            kept = "".join(line for line in text.splitlines(keepends=True) if not drop(line))
            if len(kept) != len(text):
                os.ftruncate(1, self.offset)
                if kept:
                    os.write(1, kept.encode())
            return text
        if self._saved is None:
            return ""
        os.dup2(self._saved[0], 1)
        os.dup2(self._saved[1], 2)
        for fd in self._saved:
            os.close(fd)
        self._saved = None
        os.lseek(self._file, 0, os.SEEK_SET)
        chunks = []
        while chunk := os.read(self._file, 1 << 16):
            chunks.append(chunk)
        os.close(self._file)
        text = b"".join(chunks).decode(errors="replace")
        kept = "".join(line for line in text.splitlines(keepends=True) if not drop(line))
        if kept:
            os.write(2, kept.encode())
        return text


# -- ONNX Runtime ------------------------------------------------------------------------------------
ORT_MODIFIED = re.compile(r"GraphTransformer (\S+) modified: 1\b")
ORT_CHATTER = re.compile(r"\[[IV]:onnxruntime:")  # INFO/VERBOSE lines; warnings and errors are kept


class OrtTransformerCollector:
    name = "ort_transformers"
    captures_output = True

    def attach(self, backend: Any) -> None:
        backend.options.log_severity_level = 1  # INFO: "GraphTransformer X modified: N with status: OK"

    def begin(self, context: TestContext) -> None:
        pass

    def end(self, context: TestContext) -> set[str]:
        counts: dict[str, int] = {}
        for name in ORT_MODIFIED.findall(context.output):
            counts[name] = counts.get(name, 0) + 1
        features = set(counts)
        features.update(f"{name}*{min(count, 3)}" for name, count in counts.items())
        return features

    @staticmethod
    def drop_line(line: str) -> bool:
        return ORT_CHATTER.search(line) is not None


# -- OpenVINO ----------------------------------------------------------------------------------------
def _onnx_op_types(model_path: str) -> dict[str, str]:
    """ONNX node name and output names -> op type (OpenVINO names its nodes after either)."""
    import onnx

    graph = onnx.load(model_path, load_external_data=False).graph
    types = {}
    for node in graph.node:
        for name in (node.name, *node.output):
            if name:
                types[name] = node.op_type
    return types


class OvLayerCollector:
    name = "ov_layers"
    captures_output = False
    SKIP = {"Input", "Output", "Const", "Parameter", "Result", "Constant"}

    def attach(self, backend: Any) -> None:
        pass

    def begin(self, context: TestContext) -> None:
        pass

    def end(self, context: TestContext) -> set[str]:
        compiled = context.compiled
        if compiled is None:
            return set()
        model = getattr(compiled, "model", compiled)
        types = _onnx_op_types(context.model_path) if context.model_path else {}
        features: set[str] = set()
        for op in model.get_runtime_model().get_ordered_ops():
            info = op.get_rt_info()
            value = {key: str(info[key].astype(str)) for key in ("layerType", "primitiveType", "originalLayersNames",
                                                                 "runtimePrecision") if key in info}
            layer = value.get("layerType", "?")
            if layer in self.SKIP:
                continue
            features.add(f"kernel:{layer}:{value.get('primitiveType', '?')}")
            features.add(f"prec:{layer}:{value.get('runtimePrecision', '?')}")
            originals = [n for n in value.get("originalLayersNames", "").split(",") if n]
            fused = sorted({types.get(n) or types.get(n.split("/")[0], "") for n in originals} - {""})
            if len(originals) > 1 and fused:
                features.add(f"fused:{layer}:{'+'.join(fused)}")
        return features


OV_PASS_APPLIED = re.compile(r"^\s+(\S+)\s+\d+ms\s+\+\s*$", re.MULTILINE)
OV_PASS_LINE = re.compile(r"^(PassManager (started|finished):|\s+\S+\s+\d+ms\s+[+-]\s*$)")


class OvPassCollector:
    name = "ov_passes"
    captures_output = True

    @staticmethod
    def prepare() -> None:
        """Before OpenVINO is first used: switch the pass profiler on (read from the environment)."""
        os.environ["OV_ENABLE_PROFILE_PASS"] = "1"

    def attach(self, backend: Any) -> None:
        pass

    def begin(self, context: TestContext) -> None:
        pass

    def end(self, context: TestContext) -> set[str]:
        return set(OV_PASS_APPLIED.findall(context.output))

    @staticmethod
    def drop_line(line: str) -> bool:
        return OV_PASS_LINE.match(line) is not None


# -- TVM's Python ------------------------------------------------------------------------------------
#: TVM package subdirectories whose Python arcs are measured (frontend, transforms, lowering).
TVM_PY_DIRS = ("relax/frontend", "relax/transform", "relax/backend", "relax/op", "topi", "tir/transform")


class TvmPythonCollector:
    """Arc coverage (coverage.py, branch mode) of TVM's Python code that turns ONNX into a module."""

    name = "tvm_py"
    captures_output = False

    def __init__(self, dirs: Iterable[str] = TVM_PY_DIRS):
        self.dirs = tuple(dirs)
        self.cov = None
        self.root = ""

    def attach(self, backend: Any) -> None:
        import coverage
        import tvm

        self.root = os.path.dirname(os.path.realpath(tvm.__file__))
        include = [os.path.join(self.root, d, "*") for d in self.dirs]
        self.cov = coverage.Coverage(data_file=None, branch=True, include=include, config_file=False)

    def begin(self, context: TestContext) -> None:
        self.cov.start()

    def end(self, context: TestContext) -> set[str]:
        self.cov.stop()
        arcs = self._take_arcs()
        features = set()
        for path, pairs in arcs.items():
            relative = os.path.relpath(path, self.root)
            features.update(f"{relative}:{a}>{b}" for a, b in pairs)
        return features

    def _take_arcs(self) -> dict[str, Iterable[tuple[int, int]]]:
        """The arcs recorded since ``start``, then forgotten.

        Fast path: coverage.py's collector hands its arcs to ``covdata.add_arcs`` when flushed;
        a plain sink stands in for the SQLite-backed ``CoverageData`` for that one call (the
        collector unpacks and clears its own data). This is private API, so any mismatch falls
        back to the public ``get_data()`` + ``erase()`` (about 20 ms per test instead of < 1 ms).
        """
        collector = getattr(self.cov, "_collector", None)
        if collector is not None and hasattr(collector, "flush_data") and hasattr(collector, "covdata"):
            sink, saved = _ArcSink(), collector.covdata
            collector.covdata = sink
            try:
                collector.flush_data()
                return sink.arcs
            except Exception:  # noqa: BLE001 - a changed private API: use the public one below
                pass
            finally:
                collector.covdata = saved
        data = self.cov.get_data()
        arcs = {path: data.arcs(path) or () for path in data.measured_files()}
        self.cov.erase()
        return arcs


class _ArcSink:
    """Receives what coverage.py's collector flushes (see ``TvmPythonCollector._take_arcs``)."""

    def __init__(self) -> None:
        self.arcs: dict[str, set[tuple[int, int]]] = {}

    def add_arcs(self, arc_data: dict[str, Iterable[tuple[int, int]]]) -> None:
        for path, pairs in arc_data.items():
            self.arcs.setdefault(path, set()).update(pairs)

    def add_lines(self, line_data) -> None:
        pass

    def add_file_tracers(self, file_tracers) -> None:
        pass
