"""GCC 12 ``.gcno``/``.gcda`` files, read directly, and per-test branch deltas computed from them.

Why: running ``gcov`` per test costs a process and a text/JSON round trip per object file. This module
reads the binary files itself and turns counter deltas into *branches taken*, the way gcov does:

- ``.gcno`` (written by the compiler): per function, its blocks, the arcs between them (flags
  ``on_tree`` / ``fake`` / ``fallthrough``) and the source lines of each block.
- ``.gcda`` (written by ``__gcov_dump``): one 64-bit counter per arc that is *not* on the spanning
  tree, in the ``.gcno`` arc order. Counts of the tree arcs follow from flow conservation, so a
  new branch may show up only as a change of *other* counters: reading non-zero counters alone
  misses it. Each branch count is a fixed signed sum of counters; :func:`_solve_function` derives
  those sums once per function, symbolically, and a test's branch counts are then one sparse
  product with the counter deltas (numpy).
- A *branch* is what gcov's JSON report (``gcov --json-format``) and gcovr call one: an arc leaving a
  block that is neither the entry nor the exit block, has source lines, and is not the only
  non-fake way out of its block (unconditional) nor a call's exceptional exit. Its identity is
  (source file, line, function name as gcov prints it, index on that line), so the same inline
  function compiled into several objects counts once. gcovr 8 merges more finely (by the branch's
  flow-graph blocks, which differ between objects that compiled one inline function differently):
  on one library built alike the counts are equal, on a full TVM build gcovr counts ~1.4-1.9x more.

Format facts (GCC 12, version tag ``B22*``; checked with ``gcov-dump -l``): little-endian 32-bit
words; a record is (tag, length in *bytes*) then its payload; strings are a byte length (counting
the NUL; 0 for none) followed by the bytes, unpadded, so records after a string may be unaligned.
``.gcno`` header: magic ``gcno``, version, stamp, checksum, cwd string, has-unexecuted-blocks flag.
``.gcda`` header: magic ``gcda``, version, stamp, checksum. An arc-counter record with a *negative*
length holds ``-length / 8`` counters that are all zero, and no payload.
"""

from __future__ import annotations

import bisect
import os
import struct
from dataclasses import dataclass, field

import numpy as np

GCNO_MAGIC = 0x67636E6F  # "gcno"
GCDA_MAGIC = 0x67636461  # "gcda"
TAG_FUNCTION = 0x01000000
TAG_BLOCKS = 0x01410000
TAG_ARCS = 0x01430000
TAG_LINES = 0x01450000
TAG_COUNTER_ARCS = 0x01A10000
ARC_ON_TREE, ARC_FAKE, ARC_FALLTHROUGH = 1, 2, 4
ENTRY_BLOCK, EXIT_BLOCK = 0, 1
SUPPORTED_VERSIONS = {"B22*", "B12*", "B32*"}  # GCC 12.x (the layout documented above)


class GcovFormatError(ValueError):
    """A file that is not a GCC 12 .gcno/.gcda, or is truncated (e.g. a dump cut short by a kill)."""


def version_text(word: int) -> str:
    return struct.pack(">I", word).decode("latin-1")


def _string(data: bytes, pos: int) -> tuple[str | None, int]:
    (length,) = struct.unpack_from("<I", data, pos)
    pos += 4
    if length == 0:
        return None, pos
    return data[pos:pos + length].rstrip(b"\0").decode("utf-8", "replace"), pos + length


@dataclass
class Function:
    ident: int
    name: str
    source: str  # absolute, normalized
    start_line: int
    start_column: int
    end_line: int
    artificial: bool
    n_blocks: int = 0
    group: bool = False  # starts on the same source line as another function (templates, macros)
    arcs: list[tuple[int, int, int]] = field(default_factory=list)  # (src, dst, flags) in counter order
    #: block -> its locations, each (source, sorted line numbers), in .gcno order
    locations: dict[int, list[tuple[str, list[int]]]] = field(default_factory=dict)

    @property
    def n_counters(self) -> int:
        return sum(1 for _, _, flags in self.arcs if not flags & ARC_ON_TREE)


@dataclass
class Branch:
    source: str
    line: int
    function: str  # the name gcov prints for that line (mangled)
    index: int  # position among the branches of (source, line, function)
    terms: dict[int, int]  # counter index in the object file -> coefficient


@dataclass
class GcnoFile:
    path: str
    stamp: int
    cwd: str
    functions: list[Function]


def parse_gcno(path: str) -> GcnoFile:
    with open(path, "rb") as handle:
        data = handle.read()
    try:
        return _parse_gcno(path, data)
    except struct.error as error:  # a record that runs past the end
        raise GcovFormatError(f"{path}: truncated ({error})") from error


def _parse_gcno(path: str, data: bytes) -> GcnoFile:
    if len(data) < 16:
        raise GcovFormatError(f"{path}: too short for a .gcno file")
    magic, version, stamp, _checksum = struct.unpack_from("<4I", data, 0)
    if magic != GCNO_MAGIC:
        raise GcovFormatError(f"{path}: not a .gcno file")
    if version_text(version) not in SUPPORTED_VERSIONS:
        raise GcovFormatError(f"{path}: written by a gcc with gcov version {version_text(version)!r}; "
                              "HiGen reads GCC 12's format (build with gcc-12/g++-12)")
    cwd, pos = _string(data, 16)
    cwd = cwd or "/"
    pos += 4  # has_unexecuted_blocks
    functions: list[Function] = []
    current: Function | None = None
    absolute: dict[str, str] = {}

    def resolve(name: str) -> str:
        if name not in absolute:
            absolute[name] = _absolute(cwd, name)
        return absolute[name]

    while pos + 8 <= len(data):
        tag, length = struct.unpack_from("<Ii", data, pos)
        pos += 8
        end = pos + max(length, 0)
        if tag == TAG_FUNCTION:
            ident, _lineno_checksum, _cfg_checksum = struct.unpack_from("<3I", data, pos)
            name, p = _string(data, pos + 12)
            (artificial,) = struct.unpack_from("<I", data, p)
            source, p = _string(data, p + 4)
            start_line, start_column, end_line = struct.unpack_from("<3I", data, p)
            current = Function(ident, name or "", resolve(source or ""), start_line, start_column,
                               end_line, bool(artificial))
            functions.append(current)
        elif current is None:
            pass
        elif tag == TAG_BLOCKS:
            (current.n_blocks,) = struct.unpack_from("<I", data, pos)
        elif tag == TAG_ARCS:
            (src,) = struct.unpack_from("<I", data, pos)
            words = struct.unpack_from(f"<{(length - 4) // 4}I", data, pos + 4)
            current.arcs.extend((src, words[i], words[i + 1]) for i in range(0, len(words), 2))
        elif tag == TAG_LINES:
            (block,) = struct.unpack_from("<I", data, pos)
            p = pos + 4
            entries = current.locations.setdefault(block, [])
            while p < end:
                (value,) = struct.unpack_from("<I", data, p)
                p += 4
                if value == 0:
                    name, p = _string(data, p)
                    if name is None:
                        break
                    entries.append((resolve(name), []))
                elif entries:
                    entries[-1][1].append(value)
        pos = end
    # Counters follow blocks in index order (gcov assigns them that way), arcs in file order.
    for function in functions:
        function.arcs.sort(key=lambda arc: arc[0])
        for entries in function.locations.values():
            for _, lines in entries:
                lines.sort()  # gcov sorts each location's lines; a block's line is the last one
    return GcnoFile(path, stamp, cwd, functions)


def _absolute(cwd: str, path: str) -> str:
    return os.path.normpath(path if os.path.isabs(path) else os.path.join(cwd, path))


# -- flow graph ------------------------------------------------------------------------------------
def _add(total: dict[int, int], term: dict[int, int], sign: int = 1) -> None:
    for key, value in term.items():
        updated = total.get(key, 0) + sign * value
        if updated:
            total[key] = updated
        else:
            total.pop(key, None)


def _block_count(function: Function) -> int:
    highest = max((max(s, d) for s, d, _ in function.arcs), default=-1) + 1
    return max(function.n_blocks, highest)


def _solve_function(function: Function) -> list[dict[int, int] | None]:
    """Every arc's count as a signed sum of the function's counters (local indices), or None where
    the graph leaves it undetermined (gcov then reports it as 0 too)."""
    arcs = function.arcs
    n_blocks = _block_count(function)
    value: list[dict[int, int] | None] = [None] * len(arcs)
    succ: list[list[int]] = [[] for _ in range(n_blocks)]
    pred: list[list[int]] = [[] for _ in range(n_blocks)]
    counter = 0
    for index, (src, dst, flags) in enumerate(arcs):
        succ[src].append(index)
        pred[dst].append(index)
        if not flags & ARC_ON_TREE:
            value[index] = {counter: 1}
            counter += 1
    unknown_succ = [sum(value[a] is None for a in succ[b]) for b in range(n_blocks)]
    unknown_pred = [sum(value[a] is None for a in pred[b]) for b in range(n_blocks)]
    block: list[dict[int, int] | None] = [None] * n_blocks
    work = list(range(n_blocks))
    while work:
        b = work.pop()
        if block[b] is None:
            if succ[b] and not unknown_succ[b]:
                block[b] = {}
                for a in succ[b]:
                    _add(block[b], value[a])
            elif pred[b] and not unknown_pred[b]:
                block[b] = {}
                for a in pred[b]:
                    _add(block[b], value[a])
            else:
                continue
        for arcs_of, unknown in ((succ[b], unknown_succ), (pred[b], unknown_pred)):
            if unknown[b] != 1:
                continue
            missing = next(a for a in arcs_of if value[a] is None)
            solved = dict(block[b])
            for a in arcs_of:
                if a != missing:
                    _add(solved, value[a], -1)
            value[missing] = solved
            src, dst, _ = arcs[missing]
            unknown_succ[src] -= 1
            unknown_pred[dst] -= 1
            work.extend((src, dst))
    return value


def _line_owners(functions: list[Function]) -> dict[str, tuple[list[int], list[str]]]:
    """Per source: the function name gcov's JSON report gives each non-group line, as (first lines,
    names) intervals. gcov walks the lines keeping a stack of non-group functions: a function is
    pushed on its start line, the top names the line, and the top is popped on a line equal to its
    end line (only the top, so an enclosing function ending on the same line stays on the stack)."""
    size: dict[str, int] = {}
    starts: dict[str, dict[int, list[Function]]] = {}
    for function in functions:
        starts.setdefault(function.source, {}).setdefault(function.start_line, []).append(function)
        for entries in function.locations.values():
            for source, lines in entries:
                if lines:
                    size[source] = max(size.get(source, 0), lines[-1] + 1)
    owners: dict[str, tuple[list[int], list[str]]] = {}
    for source, limit in size.items():
        at = starts.get(source, {})
        start_lines = sorted(at)
        firsts, names, stack = [1], [""], []
        i, line = 0, start_lines[0] if start_lines else limit
        while line < limit:
            while i < len(start_lines) and start_lines[i] == line:
                stack.extend(f for f in at[line] if not f.group)
                i += 1
            firsts.append(line)
            names.append(stack[-1].name if stack else "")
            if stack and stack[-1].end_line == line:
                stack.pop()
            following = start_lines[i] if i < len(start_lines) else limit
            if stack and line < stack[-1].end_line < following:
                following = stack[-1].end_line
            firsts.append(line + 1)
            names.append(stack[-1].name if stack else "")
            line = following
        owners[source] = (firsts, names)
    return owners


def branches_of(gcno: GcnoFile, keep_source=lambda source: True) -> tuple[list[Branch], dict[int, tuple[int, int]]]:
    """The branches of an object file exactly as ``gcov -b --json-format`` lists them, and
    ident -> (first counter index in the object, number of counters) for reading its .gcda.

    gcov's rules, reproduced: artificial functions are dropped; functions of one source starting on
    the same line form a *group* whose lines are reported per function, other lines belong to the
    source and are named by :func:`_line_owners`; functions without counters are left out. A block
    other than the first and the *last-numbered* one hands its outgoing arcs (sorted by destination)
    to the last line of each of its locations; of those, arcs that are the block's only non-fake
    exit or a call's exceptional exit are not branches.
    """
    counters: dict[int, tuple[int, int]] = {}
    base = 0
    for function in gcno.functions:
        counters[function.ident] = (base, function.n_counters)
        base += function.n_counters
    real = [f for f in gcno.functions if not f.artificial]
    seen: dict[tuple[str, int], Function] = {}
    for function in real:
        function.group = False
    for function in real:
        first = seen.setdefault((function.source, function.start_line), function)
        if first is not function:
            first.group = function.group = True
    included = [f for f in real if counters[f.ident][1] > 0]
    owners = _line_owners(included)

    def owner(source: str, line: int) -> str:
        firsts, names = owners.get(source, ([1], [""]))
        return names[bisect.bisect_right(firsts, line) - 1]

    next_index: dict[tuple[str, int, str], int] = {}
    branches: list[Branch] = []
    for function in included:
        first, _ = counters[function.ident]
        values = _solve_function(function)
        n_blocks = _block_count(function)
        by_block: dict[int, list[int]] = {}
        for index, (src, _dst, _flags) in enumerate(function.arcs):
            by_block.setdefault(src, []).append(index)
        for block in range(1, n_blocks - 1):
            out = sorted(by_block.get(block, ()), key=lambda a: function.arcs[a][1])
            if not out:
                continue
            non_fake = [a for a in out if not function.arcs[a][2] & ARC_FAKE]
            line_key = None
            for source, lines in function.locations.get(block, ()):
                for line in lines:
                    if function.group and source == function.source and function.start_line <= line <= function.end_line:
                        line_key = (source, line, function.name)
                    else:
                        line_key = (source, line, None)
                if line_key is None:
                    continue
                source_of_line, line_number, name = line_key
                if name is None:
                    name = owner(source_of_line, line_number)
                key = (source_of_line, line_number, name)
                for a in out:
                    _src, _dst, flags = function.arcs[a]
                    if flags & ARC_FAKE or (len(non_fake) == 1):  # call's exceptional exit / unconditional
                        continue
                    index = next_index.get(key, 0)
                    next_index[key] = index + 1
                    if keep_source(source_of_line):
                        terms = {first + k: v for k, v in (values[a] or {}).items()}
                        branches.append(Branch(source_of_line, line_number, name, index, terms))
    return branches, counters


# -- .gcda -----------------------------------------------------------------------------------------
def gcda_blocks(data: bytes, counters: dict[int, tuple[int, int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The arc-counter blocks of a .gcda that have a payload: (word position of the payload, the
    object's index of its first counter, number of counters). Each counter spans two words, low
    then high. All-zero blocks (negative length) have no payload and are left out."""
    if len(data) < 16 or len(data) % 4 or struct.unpack_from("<I", data, 0)[0] != GCDA_MAGIC:
        raise GcovFormatError("not a .gcda file")
    words = memoryview(data).cast("i")
    n_words = len(words)
    starts, firsts, counts = [], [], []
    function_tag, arcs_tag = TAG_FUNCTION, TAG_COUNTER_ARCS  # both positive as signed words
    i, ident = 4, None
    while i + 1 < n_words:
        tag, length = words[i], words[i + 1]
        if tag == function_tag:
            ident = words[i + 2] & 0xFFFFFFFF if length > 0 else None
        elif tag == arcs_tag and length > 0 and ident in counters:
            first, n = counters[ident]
            if length != 8 * n:
                raise GcovFormatError(f"function {ident}: {length // 8} counters in .gcda, {n} in .gcno (stale build?)")
            starts.append(i + 2)
            firsts.append(first)
            counts.append(n)
        i += 2 + (length >> 2 if length > 0 else 0)
    if i > n_words:
        raise GcovFormatError("truncated .gcda file")
    return (np.array(starts, dtype=np.int64), np.array(firsts, dtype=np.int64), np.array(counts, dtype=np.int64))


def gcda_layout(data: bytes, counters: dict[int, tuple[int, int]]) -> tuple[np.ndarray, int]:
    """Word position -> counter index of the object (-1: not a counter word), and the word count."""
    starts, firsts, counts = gcda_blocks(data, counters)
    word_to_counter = np.full(len(data) // 4, -1, dtype=np.int64)
    for start, first, n in zip(starts.tolist(), firsts.tolist(), counts.tolist()):
        word_to_counter[start:start + 2 * n] = np.repeat(np.arange(first, first + n, dtype=np.int64), 2)
    return word_to_counter, len(data) // 4


def counter_values(words: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """64-bit counter values whose low words sit at ``positions``."""
    return words[positions].astype(np.uint64) | (words[positions + 1].astype(np.uint64) << np.uint64(32))
