"""Atomic file writes: a reader sees the old file or the whole new one, never half of it, and a
process killed while writing leaves no partial file under the real name (nothing found is lost to a
torn write). The lowest layer: any module may import it."""

from __future__ import annotations

import json
import os
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


@contextmanager
def replacing(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; when the block ends normally it replaces ``path``
    in one rename, otherwise it is removed."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with replacing(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: str | os.PathLike, data: Any, indent: int = 2) -> None:
    """``data`` as JSON with sorted keys (values JSON lacks written as their ``str``)."""
    write_text_atomic(path, json.dumps(data, indent=indent, sort_keys=True, default=str))
