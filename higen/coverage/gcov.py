"""Branch coverage of an instrumented (``gcc --coverage``) compiler, per test, inside its worker.

The worker process has the instrumented libraries loaded (e.g. ``libtvm.so`` built with
``--coverage``, linked with ``-Wl,-u,__gcov_dump -Wl,-u,__gcov_reset`` so that both are exported).
Per test :class:`GcovCollector` calls ``__gcov_dump`` (libgcov adds the in-memory counters into the
``.gcda`` files under ``GCOV_PREFIX``, a private directory on tmpfs) and ``__gcov_reset`` (zeroes the
in-memory counters), then reads which counters grew since the previous dump and turns them into
branches taken (see :mod:`higen.coverage.gcov_data`). The ``.gcda`` files stay cumulative, so gcovr
can total them at any time (:class:`higen.coverage.gcovr.GcovrSampler`).

Cost per test: one dump (libgcov rewrites every ``.gcda`` of the loaded libraries, merging the
counters into them), one read and byte comparison per file, one vectorized word comparison over the
files whose counters moved (all at once), and a sparse product from counter deltas to branches.
Each ``.gcno`` is parsed once per build: :func:`warm_branch_maps` parses every one of a build
before the workers start (in parallel, with progress), into HiGen's cache
(``<cache>/gcno/<digest>.npz``, keyed by path, size, modification time and source root), and a
worker loads the maps from there. A branch map holds integers and one string table per object; a
branch's feature name is formatted only when it is reported for the first time (a real TVM build has
~2 million branches, whose names as a string array took gigabytes). Measured figures: docs/coverage.md.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from higen.coverage.gcov_data import (
    GcovFormatError,
    branches_of,
    counter_values,
    gcda_blocks,
    parse_gcno,
)
from higen.files import replacing

GCDA, GCNO = ".gcda", ".gcno"


def branch_key(source: str, line: int, function: str, index: int) -> str:
    """Feature name of one branch: gcovr's merge key (source relative to the source root)."""
    return f"{source}:{line}:{function}:{index}"


# -- libgcov entry points ----------------------------------------------------------------------------
def instrumented_libraries(skip: set[str] | None = None) -> list[tuple[str, object, object]]:
    """Loaded shared libraries of this process that export ``__gcov_dump`` and ``__gcov_reset``.

    Each instrumented library carries its own copy of libgcov and dumps only its own objects, so
    all of them are needed, including plugins loaded later (OpenVINO loads its CPU plugin on the
    first compile). They are found in ``/proc/self/maps`` and opened again by path (``dlopen`` of a
    loaded library returns the loaded one, RTLD_LOCAL or not). Paths in ``skip`` (already known,
    instrumented or not) are not opened again. Returns (path, dump, reset) per library.
    """
    found, seen = [], set(skip or ())
    try:
        with open("/proc/self/maps") as maps:
            lines = maps.read().splitlines()
    except OSError:
        return found
    for line in lines:
        parts = line.split(None, 5)
        if len(parts) < 6:
            continue
        path = parts[5].strip()
        if path in seen or ".so" not in path:
            continue
        seen.add(path)
        try:
            library = ctypes.CDLL(path)
            dump, reset = getattr(library, "__gcov_dump"), getattr(library, "__gcov_reset")
        except (OSError, AttributeError):
            found.append((path, None, None))
            continue
        found.append((path, dump, reset))
    return found


# -- per-object state ----------------------------------------------------------------------------------
@dataclass
class _Object:
    """What is known about one .gcda/.gcno pair: its branch map and the counters last read."""

    names: list[str]  # the object's string table: sources and function names
    branches: np.ndarray  # branch -> (source, function, line, index on the line): int32, names by position
    indptr: np.ndarray  # counter -> its slice of rows/coef: branch count = sum(coef * counter)
    rows: np.ndarray
    coef: np.ndarray
    counters: dict[int, tuple[int, int]]  # function ident -> (first counter, number of counters)
    n_counters: int
    counter_base: int = 0  # offsets of this object's counters and branches in the collector's arrays
    branch_base: int = 0
    data: bytes | None = None  # the .gcda as last read
    counter_low: np.ndarray | None = None  # counter -> word position of its low half (-1: all-zero block)
    word_to_low: np.ndarray | None = None  # word -> position of its counter's low half (-1: not a counter)
    word_to_counter: np.ndarray | None = None  # word -> the collector's (global) counter index, or -1

    @property
    def n_branches(self) -> int:
        return len(self.branches)

    def keys(self, local: np.ndarray) -> list[str]:
        """Feature names of branches ``local`` (indices into this object's branches)."""
        names = self.names
        return [branch_key(names[source], line, names[function], index)
                for source, function, line, index in self.branches[local].tolist()]


SUMMARY_END = 32  # header (4 words) + object summary record (4 words): changes at every dump


class GcovCollector:
    """Per-test branches taken in the instrumented libraries loaded in this process.

    ``end`` returns the branches taken since ``begin`` that this process has not returned before
    (the manager's union is the same as with every branch taken, and the pipe stays small).
    """

    def __init__(self, name: str, src_root: str, build_dir: str, prefix: str, reset: bool = False):
        self.name = name
        self.src_root = os.path.realpath(src_root)
        self.build_dir = os.path.realpath(build_dir)
        self.prefix = os.path.abspath(prefix)
        self.reset_at_start = reset
        os.makedirs(self.prefix, exist_ok=True)
        # libgcov reads these at each dump; strip nothing, so a .gcda's path below the prefix is
        # the absolute path of its .gcno without the extension.
        os.environ["GCOV_PREFIX"] = self.prefix
        os.environ["GCOV_PREFIX_STRIP"] = "0"
        self.cache_dir = str(branch_map_cache())
        self.libraries: list[tuple[str, object, object]] = []
        self._known: set[str] = set()  # mapped paths already looked at
        self._files: list[str] | None = None  # .gcda files (walked again when libraries change)
        self.objects: dict[str, _Object | None] = {}  # .gcda path -> state (None: unusable)
        self.raw: dict[str, bytes] = {}  # .gcda contents left by earlier processes, not parsed yet
        self.problems: list[str] = []
        self.hit_last = 0
        self._pending_start = True
        # all objects' branch maps, concatenated (rebuilt when an object is added)
        self._n_counters = 0
        self._n_branches = 0
        self._stale = False
        self._indptr = np.zeros(1, dtype=np.int64)
        self._rows = self._coef = np.zeros(0, dtype=np.int64)
        self._owners: list[_Object] = []  # objects in branch order
        self._branch_bases = np.zeros(0, dtype=np.int64)  # each owner's first global branch index
        self._reported = np.zeros(0, dtype=bool)

    # -- protocol --------------------------------------------------------------------------------
    def attach(self, backend=None) -> None:
        """Find the instrumented libraries now (they are loaded once the backend exists) and load the
        branch map of every object of the build, before the worker says it is ready: not inside the
        first test's timeout."""
        self._attach()
        for directory, _dirs, files in os.walk(self.build_dir):
            for name in files:
                if name.endswith(GCNO):
                    gcda = self.prefix + os.path.join(directory, name)[: -len(GCNO)] + GCDA
                    if gcda not in self.objects:
                        self.objects[gcda] = self._load_object(gcda)

    def begin(self, context=None) -> None:
        """Counters are zero here (reset after the previous dump); on the first call, whatever ran
        before (imports, start-up) is dumped as *baseline*, or dropped with ``reset``."""

    def take_baseline(self) -> set[str]:
        """Dump what ran since the process started (or since the last collection) as a baseline."""
        self._attach()
        if self.reset_at_start and self._pending_start:
            self._reset()
            self._pending_start = False
            return set()
        self._pending_start = False
        return self._collect()

    def end(self, context=None) -> set[str]:
        self._attach()
        return self._collect()

    # -- libraries and files -----------------------------------------------------------------------
    def _attach(self) -> None:
        if self.libraries:
            return
        self._refresh_libraries()
        if not self.libraries:
            raise RuntimeError("no loaded library exports __gcov_dump/__gcov_reset: is the instrumented build the "
                               "one imported, and linked with -Wl,-u,__gcov_dump -Wl,-u,__gcov_reset?")
        for path in self._gcda_files():  # what earlier processes left is the starting point
            self.raw.setdefault(path, _read(path))
        self._files = None  # walked again after the first dump

    def _refresh_libraries(self) -> None:
        """Pick up instrumented libraries loaded since the last look (plugins, lazy imports)."""
        for path, dump, reset in instrumented_libraries(self._known):
            self._known.add(path)
            if dump is not None:
                self.libraries.append((path, dump, reset))
                self._files = None  # its objects will write new .gcda files

    def _dump(self) -> None:
        for _path, dump, _reset in self.libraries:
            dump()

    def _reset(self) -> None:
        for _path, _dump, reset in self.libraries:
            reset()

    def _gcda_files(self) -> list[str]:
        if self._files is None:
            found = []
            for directory, _dirs, files in os.walk(self.prefix):
                found.extend(os.path.join(directory, f) for f in files if f.endswith(GCDA))
            self._files = sorted(found)
        return self._files

    # -- one collection --------------------------------------------------------------------------------
    def _collect(self) -> set[str]:
        self._refresh_libraries()
        self._dump()
        self._reset()
        moved_parts, amount_parts = [], []
        batch: list[tuple[_Object, bytes, bytes]] = []  # same layout, some counters moved
        for path in self._gcda_files():
            try:
                data = _read(path)
            except OSError:
                self._files = None
                continue
            obj = self.objects.get(path, False)
            if obj is False:
                obj = self.objects[path] = self._load_object(path)
            if obj is None:
                continue
            old = obj.data
            if old is not None and len(old) == len(data):
                if data[SUMMARY_END:] != old[SUMMARY_END:]:
                    batch.append((obj, data, old))
                obj.data = data
                continue
            found = self._relayout(path, obj, data)
            if found is not None:
                moved_parts.append(found[0])
                amount_parts.append(found[1])
        if batch:
            moved, amounts = self._batch_changes(batch)
            moved_parts.append(moved)
            amount_parts.append(amounts)
        self.hit_last = 0
        if not moved_parts:
            return set()
        if self._stale:
            self._rebuild()
        moved, amounts = np.concatenate(moved_parts), np.concatenate(amount_parts)
        starts, stops = self._indptr[moved], self._indptr[moved + 1]
        lengths = stops - starts
        total = int(lengths.sum())
        if not total:
            return set()
        flat = np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(total)
        weights = (self._coef[flat] * np.repeat(amounts, lengths)).astype(np.float64)
        rows = self._rows[flat]
        if 8 * len(rows) > self._n_branches:  # dense: one pass over all branches beats sorting
            taken = np.flatnonzero(np.bincount(rows, weights=weights, minlength=self._n_branches) > 0)
        else:
            branches, inverse = np.unique(rows, return_inverse=True)
            taken = branches[np.bincount(inverse, weights=weights) > 0]
        self.hit_last = len(taken)
        fresh = taken[~self._reported[taken]]
        self._reported[fresh] = True
        return self._names(fresh)

    def _names(self, branches: np.ndarray) -> set[str]:
        """Feature names of global branch indices, object by object."""
        owner = np.searchsorted(self._branch_bases, branches, side="right") - 1
        names: set[str] = set()
        for index in np.unique(owner).tolist():
            obj = self._owners[index]
            names.update(obj.keys(branches[owner == index] - obj.branch_base))
        return names

    @staticmethod
    def _batch_changes(batch: list[tuple[_Object, bytes, bytes]]) -> tuple[np.ndarray, np.ndarray]:
        """Counters that grew in files whose layout did not change, all files at once: compare the
        concatenated words, map differing words to their counter's low word, subtract."""
        new = np.frombuffer(b"".join(item[1] for item in batch), "<u4")
        old = np.frombuffer(b"".join(item[2] for item in batch), "<u4")
        to_low = np.concatenate([item[0].word_to_low for item in batch])
        to_counter = np.concatenate([item[0].word_to_counter for item in batch])
        sizes = np.array([len(item[1]) // 4 for item in batch], dtype=np.int64)
        positions = np.flatnonzero(new != old)
        local_low = to_low[positions]
        keep = local_low >= 0
        positions, local_low = positions[keep], local_low[keep]
        offsets = np.cumsum(sizes) - sizes
        file_of = np.searchsorted(np.cumsum(sizes), positions, side="right")
        marked = np.zeros(len(new), dtype=bool)  # a counter's two words may both differ: once each
        marked[local_low + offsets[file_of]] = True
        low = np.flatnonzero(marked)
        values = new[low].astype(np.uint64) | (new[low + 1].astype(np.uint64) << np.uint64(32))
        before = old[low].astype(np.uint64) | (old[low + 1].astype(np.uint64) << np.uint64(32))
        delta = np.where(values >= before, values - before, values).astype(np.int64)  # a reset file restarts
        grew = delta > 0
        return to_counter[low][grew].astype(np.int64), delta[grew]

    def _relayout(self, path: str, obj: _Object, data: bytes) -> tuple[np.ndarray, np.ndarray] | None:
        """A file read for the first time, or whose layout moved (a counter block that was all zero
        now has a payload): compare all counters with their last values."""
        try:
            if obj.data is None:  # first read in this process: start from what earlier ones left
                previous = self.raw.pop(path, None)
                if previous is not None:
                    self._layout(obj, previous)
                    obj.data = previous
            before = self._all_values(obj, obj.data) if obj.data is not None else np.zeros(obj.n_counters, np.uint64)
            self._layout(obj, data)
            values = self._all_values(obj, data)
        except GcovFormatError as error:  # e.g. a dump cut short by a kill: start this file afresh
            self.problems.append(f"{path}: {error}")
            obj.data = None
            return None
        obj.data = data
        changed = np.flatnonzero(values != before)
        delta = np.where(values[changed] >= before[changed], values[changed] - before[changed],
                         values[changed]).astype(np.int64)
        grew = delta > 0
        return changed[grew] + obj.counter_base, delta[grew]

    def _layout(self, obj: _Object, data: bytes) -> None:
        """Where each function's counters sit in this .gcda (all-zero blocks have no payload)."""
        starts, firsts, counts = gcda_blocks(data, obj.counters)
        low = np.full(obj.n_counters, -1, dtype=np.int64)
        to_low = np.full(len(data) // 4, -1, dtype=np.int32)
        to_counter = np.full(len(data) // 4, -1, dtype=np.int32)
        if len(counts):
            total = int(counts.sum())
            offsets = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
            counter = np.repeat(firsts, counts) + offsets
            low[counter] = np.repeat(starts, counts) + 2 * offsets
            for half in (0, 1):
                to_low[low[counter] + half] = low[counter]
                to_counter[low[counter] + half] = counter + obj.counter_base
        obj.counter_low, obj.word_to_low, obj.word_to_counter = low, to_low, to_counter

    @staticmethod
    def _all_values(obj: _Object, data: bytes) -> np.ndarray:
        values = np.zeros(obj.n_counters, dtype=np.uint64)
        present = obj.counter_low >= 0
        values[present] = counter_values(np.frombuffer(data, "<u4"), obj.counter_low[present])
        return values

    # -- branch maps -----------------------------------------------------------------------------------
    def _load_object(self, gcda: str) -> _Object | None:
        gcno = gcda[len(self.prefix):][: -len(GCDA)] + GCNO
        if not os.path.isfile(gcno):
            self.problems.append(f"{gcda}: no {gcno} (was the build moved?)")
            return None
        try:
            arrays = self._branch_map(gcno)
        except (GcovFormatError, OSError, ValueError) as error:
            self.problems.append(f"{gcno}: {error}")
            return None
        idents = arrays["idents"].tolist()
        firsts, counts = arrays["first"].tolist(), arrays["count"].tolist()
        obj = _Object(names=_string_table(arrays["names"]), branches=arrays["branches"],
                      indptr=arrays["indptr"], rows=arrays["rows"], coef=arrays["coef"],
                      counters={i: (f, c) for i, f, c in zip(idents, firsts, counts)}, n_counters=int(sum(counts)),
                      counter_base=self._n_counters, branch_base=self._n_branches)
        self._n_counters += obj.n_counters
        self._n_branches += obj.n_branches
        self._stale = True
        return obj

    def _rebuild(self) -> None:
        """Concatenate every object's branch map into one (global counter and branch indices)."""
        objects = sorted((o for o in self.objects.values() if o is not None), key=lambda o: o.counter_base)
        indptr, before = [np.zeros(1, dtype=np.int64)], 0
        for obj in objects:
            indptr.append(obj.indptr[1:] + before)
            before += len(obj.rows)
        self._indptr = np.concatenate(indptr)
        self._rows = np.concatenate([o.rows + o.branch_base for o in objects] or [np.zeros(0, dtype=np.int64)])
        self._coef = np.concatenate([o.coef for o in objects] or [np.zeros(0, dtype=np.int64)])
        self._owners = sorted(objects, key=lambda o: o.branch_base)
        self._branch_bases = np.array([o.branch_base for o in self._owners], dtype=np.int64)
        reported = np.zeros(self._n_branches, dtype=bool)
        reported[: len(self._reported)] = self._reported
        self._reported = reported
        self._stale = False

    def _branch_map(self, gcno: str) -> dict[str, np.ndarray]:
        return cached_branch_map(gcno, self.src_root, self.cache_dir)


# -- branch maps, cached per build --------------------------------------------------------------------
def branch_map_cache() -> Path:
    """Where parsed branch maps are kept: ``<HiGen's cache>/gcno``."""
    from higen.runtimes import cache_root

    return cache_root() / "gcno"


def cached_branch_map(gcno: str, src_root: str, cache_dir: str) -> dict[str, np.ndarray]:
    """The branch map of one object, from the cache or by parsing the .gcno (then cached)."""
    stat = os.stat(gcno)
    tag = hashlib.sha1(f"{gcno}|{stat.st_size}|{stat.st_mtime_ns}|{src_root}|{MAP_FORMAT}".encode()).hexdigest()[:20]
    cached = os.path.join(cache_dir, tag + ".npz")
    if os.path.exists(cached):
        try:
            with np.load(cached, allow_pickle=False) as archive:
                return {name: archive[name] for name in archive.files}
        except (OSError, ValueError):
            pass
    arrays = build_branch_map(gcno, src_root)
    os.makedirs(cache_dir, exist_ok=True)
    with replacing(cached) as temporary, open(temporary, "wb") as out:
        np.savez(out, **arrays)
    return arrays


def _warm_one(job: tuple[str, str, str]) -> str | None:
    try:
        cached_branch_map(*job)
    except (GcovFormatError, OSError, ValueError) as error:
        return f"{job[0]}: {error}"
    return None


def warm_branch_maps(src_root: str, build_dir: str, workers: int = 0,
                     progress: Callable[[int, int], None] | None = None) -> list[str]:
    """Parse every ``.gcno`` under ``build_dir`` into the cache (those not cached yet), in
    ``workers`` processes (0: one per core), so that workers load maps instead of parsing them under
    a test's timeout. ``progress(done, total)`` after each file. Returns the problems found."""
    src_root, build_dir, cache_dir = os.path.realpath(src_root), os.path.realpath(build_dir), str(branch_map_cache())
    notes = sorted(os.path.join(d, f) for d, _dirs, files in os.walk(build_dir) for f in files if f.endswith(GCNO))
    jobs = [(gcno, src_root, cache_dir) for gcno in notes]
    problems: list[str] = []
    with ProcessPoolExecutor(max_workers=workers or os.cpu_count() or 1, initializer=os.nice, initargs=(10,)) as pool:
        for done, problem in enumerate(pool.map(_warm_one, jobs, chunksize=4), start=1):
            if problem:
                problems.append(problem)
            if progress is not None:
                progress(done, len(jobs))
    return problems


def _read(path: str) -> bytes:
    with open(path, "rb", buffering=0) as handle:
        return handle.readall()


MAP_FORMAT = 2  # bump when build_branch_map's arrays change (cached maps are keyed by it)


def _string_table(joined: np.ndarray) -> list[str]:
    return joined.tobytes().decode().split("\0") if len(joined) else []


def build_branch_map(gcno: str, src_root: str) -> dict[str, np.ndarray]:
    """Arrays describing one object's branches below ``src_root`` (see :class:`_Object`): ``names``
    (its sources and function names, UTF-8, NUL-separated), ``branches`` (n x 4 int32: source,
    function, line, index on the line), and the counter-to-branch map."""
    root = os.path.realpath(src_root) + os.sep
    notes = parse_gcno(gcno)
    branches, counters = branches_of(notes, lambda source: source.startswith(root))
    position: dict[str, int] = {}
    table = np.array([(position.setdefault(b.source[len(root):], len(position)),
                       position.setdefault(b.function, len(position)), b.line, b.index) for b in branches],
                     dtype=np.int32).reshape(-1, 4)
    names = np.frombuffer("\0".join(position).encode(), dtype=np.uint8)
    n_counters = sum(count for _, count in counters.values())
    triples = [(counter, row, coef) for row, b in enumerate(branches) for counter, coef in b.terms.items()]
    cols = np.array([t[0] for t in triples], dtype=np.int64)
    order = np.argsort(cols, kind="stable")
    rows = np.array([t[1] for t in triples], dtype=np.int64)[order]
    coef = np.array([t[2] for t in triples], dtype=np.int64)[order]
    indptr = np.zeros(n_counters + 1, dtype=np.int64)
    np.cumsum(np.bincount(cols, minlength=n_counters), out=indptr[1:])
    idents = list(counters)
    return {"names": names, "branches": table, "indptr": indptr, "rows": rows, "coef": coef,
            "idents": np.array(idents, dtype=np.int64),
            "first": np.array([counters[i][0] for i in idents], dtype=np.int64),
            "count": np.array([counters[i][1] for i in idents], dtype=np.int64)}
