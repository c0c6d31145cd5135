"""Identify the saved findings of finished runs again with the current code: old root cause vs new.

    python experiments/reidentify.py runs/rc-normal/rl-1 runs/rc-normal/rl-2 [--csv out.csv]

Each saved case (model, inputs, the saved PyTorch reference, the case's pairs and tolerances) runs
again on its targets through ``higen.bugs.capture`` (real workers, the analyst, the node check)
into a scratch bug store. Prints per case and finding the recorded root cause and the new one, and
per run how many credible root causes each classification leaves. For judging changes to the noise
gate on the same findings (a hand audit before and after), not for counting a campaign's bugs: a
case is one example of its root cause, and the tests that were never saved are not replayed.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import onnx

from common import console, print_table, write_csv
from higen.bugs.capture import capture
from higen.bugs.case import CaseError, load_case
from higen.bugs.store import BugStore, case_dirs
from higen.tensors import load_tensors

COLUMNS = ["run", "case", "signature", "recorded", "recorded_noise", "now", "now_noise"]


def reidentify(run: Path, scratch: Path) -> list[dict]:
    rows = []
    for directory in case_dirs(run):
        try:
            case = load_case(directory)
        except CaseError:
            continue
        store = BugStore(scratch / directory.name / "bug_cases", run_root=scratch / directory.name)
        targets = [t for t in case.targets if t != case.meta.get("reference")]
        judgement, _ = capture(onnx.load(str(case.model_path)), load_tensors(case.inputs_path), targets, store,
                               reference=load_tensors(case.reference_path), pairs=case.pairs,
                               tolerances=case.tolerances, nan_policy=case.nan_policy)
        now = {f.signature: f.root_cause or {} for f in judgement.findings}
        for finding in case.meta["findings"]:
            recorded = finding.get("root_cause") or {}
            again = now.get(finding["signature"], {})
            rows.append({"run": str(run), "case": directory.name, "signature": finding["signature"],
                         "recorded": recorded.get("key", ""), "recorded_noise": recorded.get("noise"),
                         "now": again.get("key", "(not reproduced)"), "now_noise": again.get("noise")})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--csv", type=Path)
    args = parser.parse_args()
    out = console()
    scratch = Path(tempfile.mkdtemp(prefix="higen-reidentify-"))
    try:
        rows = [row for run in args.runs for row in reidentify(run, scratch)]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print_table("Root causes recorded and now", rows, COLUMNS, out)
    for run in args.runs:
        mine = [r for r in rows if r["run"] == str(run)]
        before = {r["recorded"] for r in mine if r["recorded_noise"] is False}
        after = {r["now"] for r in mine if r["now_noise"] is False}
        out.print(f"{run}: credible root causes recorded {len(before)}, now {len(after)}")
    if args.csv:
        write_csv(args.csv, rows, COLUMNS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
