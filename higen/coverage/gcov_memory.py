"""Live arc counters of the instrumented libraries of this process, read where libgcov keeps them.

Why: ``__gcov_dump`` merges every object's counters into its ``.gcda`` file, which on a full TVM build
(601 objects, 5.3 million counters) costs ~120 ms per test. The counters themselves are arrays in the
process's memory; comparing them with a copy from the previous test costs a memory comparison. The
``.gcda`` files are then written only when gcovr needs them (see :class:`higen.coverage.gcov.GcovCollector`).

How (GCC 12's libgcov, ``libgcc/libgcov.h``): each instrumented object registers a ``struct gcov_info``
(its ``.gcda`` name, and per function a ``struct gcov_fn_info`` with the function's ident and, for
the arc counters, their number and address) in a list; the lists of all libraries hang off the
exported ``__gcov_master``. A function whose ``key`` is another object's ``gcov_info`` is a COMDAT copy
that the linker dropped: libgcov writes nothing for it, and neither is it read here. Counter arrays of
one library lie close together in its ``.bss``; they are read in *spans* (runs of arrays with small
gaps, never across two memory mappings), one numpy view each, made once.
"""

from __future__ import annotations

import bisect
import ctypes
from dataclasses import dataclass

import numpy as np

from higen.coverage.gcov_data import SUPPORTED_VERSIONS, version_text

GCOV_COUNTERS = 8  # GCC 12: arcs, interval, pow2, topn, indirect call, time profiler, ior, and
MAX_GAP_BYTES = 1 << 16  # arrays closer than this share a span (the gap is read and ignored)


class _CounterInfo(ctypes.Structure):
    _fields_ = [("num", ctypes.c_uint32), ("values", ctypes.c_void_p)]


class _FunctionInfo(ctypes.Structure):
    _fields_ = [("key", ctypes.c_void_p), ("ident", ctypes.c_uint32), ("lineno_checksum", ctypes.c_uint32),
                ("cfg_checksum", ctypes.c_uint32), ("ctrs", _CounterInfo * 1)]


class _Info(ctypes.Structure):
    pass


_Info._fields_ = [("version", ctypes.c_uint32), ("next", ctypes.POINTER(_Info)), ("stamp", ctypes.c_uint32),
                  ("checksum", ctypes.c_uint32), ("filename", ctypes.c_char_p),
                  ("merge", ctypes.c_void_p * GCOV_COUNTERS), ("n_functions", ctypes.c_uint32),
                  ("functions", ctypes.POINTER(ctypes.POINTER(_FunctionInfo)))]


class _Root(ctypes.Structure):
    pass


_Root._fields_ = [("list", ctypes.POINTER(_Info)), ("flags", ctypes.c_uint32), ("next", ctypes.POINTER(_Root)),
                  ("prev", ctypes.POINTER(_Root))]


class _Master(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("root", ctypes.POINTER(_Root))]


@dataclass
class LiveFunction:
    """One function's arc counters in memory."""

    gcda: str  # the object's .gcda path as compiled (before GCOV_PREFIX)
    ident: int
    address: int
    count: int


def live_functions(libraries: dict[str, ctypes.CDLL]) -> tuple[list[LiveFunction], list[str]]:
    """Every function with arc counters of every object registered with libgcov in ``libraries``
    (path -> handle), and what could not be read (a library without ``__gcov_master``, an object
    written by another GCC), one line each."""
    found, problems, seen = [], [], set()
    for path, library in libraries.items():
        try:
            master = _Master.in_dll(library, "__gcov_master")
        except ValueError:
            problems.append(f"{path}: no exported __gcov_master, its counters cannot be read (link with --coverage)")
            continue
        root = master.root
        while root:
            info = root.contents.list
            while info:
                address = ctypes.addressof(info.contents)
                if address not in seen:
                    seen.add(address)
                    found.extend(_functions_of(info.contents, address, problems))
                info = info.contents.next
            root = root.contents.next
    return found, problems


def _functions_of(info: _Info, address: int, problems: list[str]) -> list[LiveFunction]:
    # Another GCC's gcov_info may be laid out differently: read no further than its version word.
    if version_text(info.version) not in SUPPORTED_VERSIONS:
        problems.append(f"an object written by gcov version {version_text(info.version)!r}: not read "
                        "(HiGen reads GCC 12's; build with gcc-12/g++-12)")
        return []
    if not info.merge[0] or not info.filename:  # arc counters off: nothing to read
        return []
    name, functions = info.filename.decode(errors="replace"), []
    for index in range(info.n_functions):
        pointer = info.functions[index]
        if not pointer:
            continue
        function = pointer.contents
        if function.key != address or not function.ctrs[0].num:
            continue
        functions.append(LiveFunction(name, function.ident, function.ctrs[0].values, function.ctrs[0].num))
    return functions


def _mappings() -> list[tuple[int, int]]:
    """Readable memory mappings of this process, sorted: (start, end)."""
    ranges = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            span, permissions = line.split(None, 2)[:2]
            if permissions.startswith("r"):
                start, end = (int(part, 16) for part in span.split("-"))
                ranges.append((start, end))
    return sorted(ranges)


@dataclass
class _Span:
    view: np.ndarray  # uint64 words of live memory
    previous: np.ndarray  # their values at the last read
    counter_of: np.ndarray  # word -> global counter index, -1 for a gap


class LiveCounters:
    """Reads which counters grew since the last read, from ``blocks`` of (address, count, first global
    counter index) of counter arrays in this process's memory."""

    def __init__(self, blocks: list[tuple[int, int, int]]):
        mappings = _mappings()
        starts = [start for start, _ in mappings]
        self.spans: list[_Span] = []
        group: list[tuple[int, int, int]] = []
        for block in sorted(blocks):
            if group and not self._joins(group, block, mappings, starts):
                self._add_span(group)
                group = []
            group.append(block)
        if group:
            self._add_span(group)

    @staticmethod
    def _joins(group, block, mappings, starts) -> bool:
        first, last = group[0][0], group[-1][0] + 8 * group[-1][1]
        if block[0] - last > MAX_GAP_BYTES:
            return False
        index = bisect.bisect_right(starts, first) - 1
        return index >= 0 and block[0] + 8 * block[1] <= mappings[index][1]

    def _add_span(self, group: list[tuple[int, int, int]]) -> None:
        start, end = group[0][0], group[-1][0] + 8 * group[-1][1]
        words = (end - start) // 8
        view = np.ctypeslib.as_array((ctypes.c_uint64 * words).from_address(start))
        counter_of = np.full(words, -1, dtype=np.int64)
        for address, count, first in group:
            offset = (address - start) // 8
            counter_of[offset: offset + count] = np.arange(first, first + count)
        self.spans.append(_Span(view, np.zeros(words, dtype=np.uint64), counter_of))

    def changes(self) -> tuple[np.ndarray, np.ndarray]:
        """(global counter indices, amounts) of the counters that grew since the last call."""
        counters, amounts = [], []
        for span in self.spans:
            moved = np.flatnonzero(span.view != span.previous)
            if not len(moved):
                continue
            now, before = span.view[moved], span.previous[moved]
            span.previous[moved] = now
            counter = span.counter_of[moved]
            keep = (counter >= 0) & (now > before)
            counters.append(counter[keep])
            amounts.append((now[keep] - before[keep]).astype(np.int64))
        if not counters:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        return np.concatenate(counters), np.concatenate(amounts)

    def adopt(self, earlier: LiveCounters) -> None:
        """Start from what ``earlier`` (the reader before a library was loaded) last read, for the
        counters it tracked; the others start from zero."""
        size = max((int(span.counter_of.max(initial=-1)) for span in earlier.spans), default=-1) + 1
        last = np.zeros(size, dtype=np.uint64)
        for span in earlier.spans:
            tracked = span.counter_of >= 0
            last[span.counter_of[tracked]] = span.previous[tracked]
        for span in self.spans:
            known = (span.counter_of >= 0) & (span.counter_of < size)
            span.previous[known] = last[span.counter_of[known]]

    def zeroed(self) -> None:
        """The counters were reset to zero (``__gcov_reset``)."""
        for span in self.spans:
            span.previous.fill(0)
