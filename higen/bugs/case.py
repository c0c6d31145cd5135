"""One saved bug case read back from disk: its meta.json checked, its tensors checked for pickles.

Cases travel between people, so loading one never executes anything it holds: ``.npz`` headers are
inspected before any array is read, and a file that holds an object array (a pickle) is refused.
See docs/bug-cases.md for the layout.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from higen.backends.base import REFERENCE
from higen.errors import UserError
from higen.modes import diff_pairs
from higen.oracle import Tolerance
from higen.tensors import Tensors, load_tensors
from higen.testcase import ModelFiles

#: Version of the case layout written by :class:`higen.bugs.store.BugStore`; readers accept 1..this.
FORMAT_VERSION = 2
REQUIRED_KEYS = ("format_version", "verdict", "signature", "findings", "outcomes")
REFERENCE_FILE = f"outputs/{REFERENCE.replace(':', '_')}.npz"


class CaseError(UserError):
    """A case folder that cannot be used; the message is one line that names the folder."""


def file_name(target: str) -> str:
    """``ort:cpu:O3`` -> ``ort_cpu_O3`` (target names as file names)."""
    return target.replace(":", "_")


def read_meta(directory: Path) -> dict[str, Any]:
    """Parse and check ``directory/meta.json``; raises CaseError saying what is wrong."""
    directory = Path(directory)
    if directory.name.startswith(".tmp-"):
        raise CaseError(f"{directory} is a half-written case (a store's staging folder)")
    path = directory / "meta.json"
    if not path.is_file():
        raise CaseError(f"{directory} has no meta.json (not a bug case, or half-written)")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CaseError(f"{path} is not valid JSON ({error})") from error
    if not isinstance(meta, dict):
        raise CaseError(f"{path} does not hold a JSON object")
    missing = [key for key in REQUIRED_KEYS if key not in meta]
    if missing:
        raise CaseError(f"{path} lacks {', '.join(missing)}")
    version = meta["format_version"]
    if not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
        raise CaseError(f"{path} has format version {version!r}; this HiGen reads 1 to {FORMAT_VERSION}")
    return meta


def pickled_arrays(path: Path) -> list[str]:
    """Names of the arrays in an ``.npz`` whose dtype needs pickle, read from headers only."""
    found = []
    try:
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                with archive.open(member) as handle:
                    version = np.lib.format.read_magic(handle)
                    reader = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                              else np.lib.format.read_array_header_2_0)
                    _, _, dtype = reader(handle)
                    if dtype.hasobject:
                        found.append(member.removesuffix(".npy"))
    except (zipfile.BadZipFile, ValueError, OSError) as error:
        raise CaseError(f"{path} is not a readable .npz ({error})") from error
    return found


def refuse_pickles(directory: Path) -> None:
    """Raise CaseError when any ``.npz`` of the case holds an object array."""
    for path in sorted(Path(directory).glob("*.npz")) + sorted(Path(directory).glob("outputs/*.npz")):
        names = pickled_arrays(path)
        if names:
            raise CaseError(f"refusing {path}: array {names[0]!r} is a pickled object array, and HiGen never "
                            "unpickles (it could run code); regenerate the case with plain numeric arrays")


def load_outputs(directory: Path, meta: dict[str, Any]) -> dict[str, Tensors]:
    """Saved outputs by target, the reference included (call :func:`refuse_pickles` first for foreign cases)."""
    outputs = {REFERENCE: load_tensors(directory / meta.get("reference_file", REFERENCE_FILE))}
    for target in meta.get("targets") or meta.get("outcomes", {}):
        path = directory / "outputs" / f"{file_name(target)}.npz"
        if target != REFERENCE and path.is_file():
            outputs[target] = load_tensors(path)
    return outputs


@dataclass
class BugCase(ModelFiles):
    path: Path
    meta: dict[str, Any]

    @property
    def directory(self) -> Path:
        return self.path

    @property
    def reference_file(self) -> str:
        return self.meta.get("reference_file", REFERENCE_FILE)

    @property
    def signature(self) -> str:
        return self.meta["signature"]

    @property
    def targets(self) -> list[str]:
        """Every target the test ran on (the reference excluded), in recorded order."""
        return [t for t in self.meta.get("targets") or list(self.meta["outcomes"]) if t != REFERENCE]

    @property
    def pairs(self) -> list[tuple[str, str]]:
        recorded = self.meta.get("oracle", {}).get("pairs")
        return [tuple(p) for p in recorded] if recorded else diff_pairs(self.targets)  # format 1 recorded no pairs

    @property
    def tolerances(self) -> dict[str, Tolerance]:
        return {dtype: Tolerance(**tol) for dtype, tol in self.meta.get("oracle", {}).get("tolerances", {}).items()}

    @property
    def nan_policy(self) -> str:
        return self.meta.get("oracle", {}).get("nan_policy", "skip-unstable")

    def finding(self, signature: str | None = None) -> dict[str, Any]:
        """The recorded finding with ``signature`` (default: the case's own signature)."""
        wanted = signature or self.signature
        for finding in self.meta["findings"]:
            if finding.get("signature") == wanted:
                return finding
        raise CaseError(f"{self.path} has no finding with signature {wanted!r}")


def load_case(directory: Path | str) -> BugCase:
    """Read a case folder for replay or reduction: meta.json valid, files present, no pickles."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CaseError(f"{directory} is not a folder: pass a bug case folder (bug_cases/<case>)")
    case = BugCase(directory, read_meta(directory))
    for needed in (case.model_path, case.inputs_path, case.reference_path):
        if not needed.is_file():
            raise CaseError(f"{directory} lacks {needed.relative_to(directory)}")
    refuse_pickles(directory)
    return case
