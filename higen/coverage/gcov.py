"""Branch coverage of an instrumented (``gcc --coverage``) compiler, per test, inside its worker.

The worker process has the instrumented libraries loaded (e.g. ``libtvm.so`` built with
``--coverage``, linked with ``-Wl,-u,__gcov_dump -Wl,-u,__gcov_reset`` so that both are exported).
Per test :class:`GcovCollector` reads which arc counters grew since the previous test, in memory
(:mod:`higen.coverage.gcov_memory`), and turns them into branches taken with each object's branch
map (derived from its ``.gcno``, see :mod:`higen.coverage.gcov_data`). For gcovr's totals
(:class:`higen.coverage.gcovr.GcovrSampler`) the counters are written into cumulative ``.gcda``
files under ``GCOV_PREFIX`` (a private directory on tmpfs) every ``dump_every`` tests and when the
campaign ends: ``__gcov_dump`` adds them to the files, ``__gcov_reset`` zeroes them. Dumping per test
instead cost ~120 ms on a full TVM build (libgcov merges and rewrites every file).

Cost per test: a comparison of the live counter arrays with their copy from the previous test (a
few spans of memory per library) and a sparse product from counter deltas to branches.
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

from higen.coverage.gcov_data import GcovFormatError, branches_of, parse_gcno
from higen.coverage.gcov_memory import LiveCounters, live_functions
from higen.files import replacing

GCDA, GCNO = ".gcda", ".gcno"


def branch_key(source: str, line: int, function: str, index: int) -> str:
    """Feature name of one branch: as gcov's report names it (source relative to the source root)."""
    return f"{source}:{line}:{function}:{index}"


# -- libgcov entry points ----------------------------------------------------------------------------
def instrumented_libraries(skip: set[str] | None = None) -> list[tuple[str, object, object]]:
    """Loaded shared libraries of this process that export ``__gcov_dump`` and ``__gcov_reset``.

    Each instrumented library carries its own copy of libgcov; where ``__gcov_master`` is exported
    (GCC's default) one dump covers every library, otherwise each dumps its own objects, so all of
    them are called, including plugins loaded later (OpenVINO loads its CPU plugin on the first
    compile). They are found in ``/proc/self/maps`` and opened again by path (``dlopen`` of a
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
    """One object file of the build: its branch map (from its .gcno)."""

    names: list[str]  # the object's string table: sources and function names
    branches: np.ndarray  # branch -> (source, function, line, index on the line): int32, names by position
    indptr: np.ndarray  # counter -> its slice of rows/coef: branch count = sum(coef * counter)
    rows: np.ndarray
    coef: np.ndarray
    counters: dict[int, tuple[int, int]]  # function ident -> (first counter, number of counters)
    n_counters: int
    counter_base: int = 0  # offsets of this object's counters and branches in the collector's arrays
    branch_base: int = 0

    @property
    def n_branches(self) -> int:
        return len(self.branches)

    def keys(self, local: np.ndarray) -> list[str]:
        """Feature names of branches ``local`` (indices into this object's branches)."""
        names = self.names
        return [branch_key(names[source], line, names[function], index)
                for source, function, line, index in self.branches[local].tolist()]


class GcovCollector:
    """Per-test branches taken in the instrumented libraries loaded in this process.

    ``end`` returns the branches taken since the previous collection that this process has not
    returned before (the manager's union is the same as with every branch taken, and the pipe stays
    small). Counters are read live from memory (:mod:`higen.coverage.gcov_memory`); the ``.gcda``
    files under ``prefix`` are written (``__gcov_dump``, then ``__gcov_reset``) every ``dump_every``
    collections (0: never on its own) and on :meth:`flush`, so they hold the cumulative counts gcovr
    totals, up to the last dump.
    """

    def __init__(self, name: str, src_root: str, build_dir: str, prefix: str, reset: bool = False,
                 dump_every: int = 0):
        self.name = name
        self.src_root = os.path.realpath(src_root)
        self.build_dir = os.path.realpath(build_dir)
        self.prefix = os.path.abspath(prefix)
        self.reset_at_start = reset
        self.dump_every = dump_every
        os.makedirs(self.prefix, exist_ok=True)
        # libgcov reads these at each dump; strip nothing, so a .gcda's path below the prefix is
        # the absolute path of its .gcno without the extension.
        os.environ["GCOV_PREFIX"] = self.prefix
        os.environ["GCOV_PREFIX_STRIP"] = "0"
        self.cache_dir = str(branch_map_cache())
        self.libraries: list[tuple[str, object, object]] = []
        self._handles: dict[str, ctypes.CDLL] = {}
        self._known: set[str] = set()  # mapped paths already looked at
        self.objects: dict[str, _Object | None] = {}  # .gcda path (below the prefix) -> its map (None: unusable)
        self.live: LiveCounters | None = None  # rebuilt when a library is loaded
        self.problems: list[str] = []
        self.hit_last = 0
        self.collections = 0
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
        """Find the instrumented libraries now (they are loaded once the backend exists), load the
        branch map of every object of the build and locate the live counters, before the worker says
        it is ready: not inside the first test's timeout."""
        for gcno in gcno_files(self.build_dir):
            gcda = self.prefix + gcno[: -len(GCNO)] + GCDA
            if gcda not in self.objects:
                self.objects[gcda] = self._load_object(gcda)
        self._attach()

    def begin(self, context=None) -> None:
        """Nothing: a collection reads what grew since the previous one."""

    def take_baseline(self) -> set[str]:
        """What ran since the process started (imports, start-up, unmeasured requests) as a
        baseline, or nothing with ``reset`` (the counters are zeroed instead, and never dumped)."""
        self._attach()
        if self.reset_at_start and self._pending_start:
            self._pending_start = False
            self._reset()
            return set()
        self._pending_start = False
        return self._collect()

    def end(self, context=None) -> set[str]:
        self._attach()
        found = self._collect()
        self.collections += 1
        if self.dump_every and self.collections % self.dump_every == 0:
            self.flush()
        return found

    def flush(self) -> None:
        """Write the counters since the last dump into the .gcda files (for gcovr) and zero them."""
        self._attach()
        self._refresh_libraries()
        self._dump()
        self._reset()

    # -- libraries ---------------------------------------------------------------------------------
    def _attach(self) -> None:
        if self.libraries:
            return
        self._refresh_libraries()
        if not self.libraries:
            raise RuntimeError("no loaded library exports __gcov_dump/__gcov_reset: is the instrumented build the "
                               "one imported, and linked with -Wl,-u,__gcov_dump -Wl,-u,__gcov_reset?")

    def _refresh_libraries(self) -> None:
        """Pick up instrumented libraries loaded since the last look (plugins, lazy imports)."""
        added = False
        for path, dump, reset in instrumented_libraries(self._known):
            self._known.add(path)
            if dump is not None:
                self.libraries.append((path, dump, reset))
                self._handles[path] = ctypes.CDLL(path)
                added = True
        if added:
            self._locate_counters()

    def _locate_counters(self) -> None:
        """Map every live function's counter array to the collector's counter indices. A new
        library's counters count from zero: their first read is everything they ran so far."""
        blocks = []
        functions, unreadable = live_functions(self._handles)
        for problem in unreadable:
            self._problem(problem)
        for function in functions:
            gcda = self.prefix + function.gcda
            obj = self.objects.get(gcda, False)
            if obj is False:
                obj = self.objects[gcda] = self._load_object(gcda)
            if obj is None:
                continue
            first, count = obj.counters.get(function.ident, (0, None))
            if count != function.count:
                found = "is not in its .gcno" if count is None else f"has {count} counters in its .gcno"
                self._problem(f"{function.gcda}: function {function.ident} has {function.count} counters in "
                              f"memory and {found} (was the build changed?)")
                continue
            blocks.append((function.address, count, obj.counter_base + first))
        previous, self.live = self.live, LiveCounters(blocks)
        if previous is not None:  # what was read before stays read
            self.live.adopt(previous)

    def _problem(self, text: str) -> None:
        """Record a problem once: the counters are located again whenever a library is loaded."""
        if text not in self.problems:
            self.problems.append(text)

    def _dump(self) -> None:
        for _path, dump, _reset in self.libraries:
            dump()

    def _reset(self) -> None:
        for _path, _dump, reset in self.libraries:
            reset()
        if self.live is not None:
            self.live.zeroed()

    # -- one collection --------------------------------------------------------------------------------
    def _collect(self) -> set[str]:
        self._refresh_libraries()
        moved, amounts = self.live.changes()
        self.hit_last = 0
        if not len(moved):
            return set()
        if self._stale:
            self._rebuild()
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
def gcno_files(build_dir: str) -> list[str]:
    """Every .gcno file of a build tree, sorted."""
    return sorted(os.path.join(d, f) for d, _dirs, files in os.walk(build_dir) for f in files if f.endswith(GCNO))


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
    jobs = [(gcno, src_root, cache_dir) for gcno in gcno_files(build_dir)]
    problems: list[str] = []
    with ProcessPoolExecutor(max_workers=workers or os.cpu_count() or 1, initializer=os.nice, initargs=(10,)) as pool:
        for done, problem in enumerate(pool.map(_warm_one, jobs, chunksize=4), start=1):
            if problem:
                problems.append(problem)
            if progress is not None:
                progress(done, len(jobs))
    return problems


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
