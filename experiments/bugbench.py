"""HiGen's real-bug benchmark (experiments/bugbench/, see its README.md).

    python experiments/bugbench.py --validate [--entries ID,...] [--no-install]
        every entry on its affected and its fixed release: the bug must show on the first and not on
        the second (its own repro, judged by the same credit function that judges fuzzer cases)
    python experiments/bugbench.py --credit CASE_DIR [--entries ID,...]
        which benchmark bugs a saved HiGen case exposes, by replay
    python experiments/bugbench.py --strategies rl,random,nnsmith-default --budget-min 20 --seeds 0,1,2 \
            [--split heldout] [--entries ...]
        HiGen campaigns per strategy and seed on each entry's affected release; saved cases are
        credited by replay; per bug: found in k of S, median time and tests to the first credited case
    python experiments/bugbench.py --report OUT [OUT ...] --budget-min 20 [--out DIR] [--entries ...]
        the tables, summary.json and bugs_over_time.png again from the OUTs' results.json, into the
        first OUT or --out (several OUTs: campaigns of other seeds run side by side, merged)
    python experiments/bugbench.py --install ort@1.20.1      a release into the runtime cache
    python experiments/bugbench.py --probe ID --versions 2025.2.0,2025.3.0
        an entry's repro on many releases (to find its affected and fixed releases)

Releases live in HiGen's runtime cache (``higen runtimes``, ~/.cache/higen/runtimes;
``HIGEN_RUNTIME_CACHE`` moves it); missing ones are installed with pip unless --no-install.
Exit status of --validate and --credit: 0 all entries valid / some bug credited, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from bugbench import campaigns, releases
from bugbench.credit import Credit, Creditor
from bugbench.entries import SPLITS, Entry, EntryError, load_entries, load_entry, write_repro
from bugbench.probe import probe
from common import console, machine_note, print_table
from higen.backends.base import BackendMissing
from higen.runtimes import RuntimeInstallError
from higen.workers import WorkerStartError

CHECKS = ("ops", "affected shows bug", "fixed clean", "localized")


def ensure_releases(entries: list[Entry], install: bool) -> list[str]:
    """Install the releases the entries need; returns one line per release that is not available."""
    problems = []
    for runtime, version in sorted({(e.runtime, v) for e in entries for v in (e.affected, e.fixed)}):
        if releases.available(runtime, version):
            continue
        if not install:
            problems.append(f"{runtime}@{version} is not in the runtime cache (leave out --no-install to install it)")
            continue
        console().print(f"installing {releases.distribution(runtime)}=={version}")
        try:
            releases.install(runtime, version)
        except (RuntimeInstallError, ValueError) as error:
            problems.append(str(error))
    return problems


def mark(value: bool | None) -> str:
    return {True: "yes", False: "NO", None: "-"}[value]


def credit_row(entry: Entry, result: Credit) -> dict:
    return {"entry": entry.id, "tier": entry.tier, "symptom": entry.symptom, "affected": entry.affected,
            "fixed": entry.fixed, **{name: mark(result.checks.get(name)) for name in CHECKS},
            "OK": "OK" if result.credited else "FAIL", "detail": result.reason if not result.credited else ""}


def validate(entries: list[Entry], install: bool, timeout_s: float, json_out: Path | None) -> int:
    problems = ensure_releases(entries, install)
    usable = [e for e in entries if releases.available(e.runtime, e.affected) and releases.available(e.runtime, e.fixed)]
    rows, results = [], {}
    with Creditor(timeout_s=timeout_s) as creditor, tempfile.TemporaryDirectory(prefix="bugbench-repro-") as tmp:
        for entry in usable:
            case = write_repro(entry, Path(tmp) / entry.id)
            result = creditor.credit(case, entry)
            results[entry.id] = result.to_json()
            rows.append(credit_row(entry, result))
    print_table(f"bugbench --validate ({machine_note()})", rows,
                ["entry", "tier", "symptom", "affected", "fixed", *CHECKS, "OK", "detail"])
    for line in problems:
        console().print(f"[yellow]skipped:[/yellow] {line}")
    valid = sum(row["OK"] == "OK" for row in rows)
    console().print(f"{valid} of {len(entries)} entries valid "
                    f"({sum(e.tier == 'real' and results.get(e.id, {}).get('credited', False) for e in entries)} real)")
    if json_out:
        json_out.write_text(json.dumps(results, indent=2))
    return 0 if valid == len(entries) else 1


def credit_case(case: Path, entries: list[Entry], timeout_s: float, json_out: Path | None) -> int:
    if not (case / "model.onnx").is_file() or not (case / "inputs.npz").is_file():
        raise SystemExit(f"{case} is not a case folder: it needs model.onnx and inputs.npz")
    with Creditor(timeout_s=timeout_s) as creditor:
        results = [creditor.credit(case, entry) for entry in entries]
    print_table(f"bugbench --credit {case}", [credit_row(e, r) for e, r in zip(entries, results)],
                ["entry", "symptom", "affected", "fixed", *CHECKS, "OK", "detail"])
    if json_out:
        json_out.write_text(json.dumps([r.to_json() for r in results], indent=2))
    return 0 if any(r.credited for r in results) else 1


def run_campaigns(entries: list[Entry], strategies: list[str], seeds: list[int], budget_s: float, out: Path,
                  install: bool, timeout_s: float, extra: list[str]) -> int:
    unknown = sorted(set(strategies) - set(campaigns.STRATEGIES))
    if unknown:
        raise SystemExit(f"unknown strategy {', '.join(unknown)}: higen.main offers {', '.join(campaigns.STRATEGIES)}")
    problems = ensure_releases(entries, install)
    if problems:
        raise SystemExit("; ".join(problems))
    results = []
    with Creditor(out / "credit-work", timeout_s) as creditor:
        for group, members in campaigns.groups(entries).items():
            for seed in seeds:  # the strategies of one seed run back to back: they share the machine's load
                for strategy in strategies:
                    run_dir = out / group.name / f"{strategy}-{seed}"
                    console().print(f"campaign {group.name} {strategy} seed {seed} ({budget_s:.0f} s) -> {run_dir}")
                    if not (run_dir / "training.log").is_file():
                        campaigns.campaign(group, strategy, seed, budget_s, run_dir, extra)
                    found = campaigns.first_credits(run_dir, members, creditor)
                    results.append({"group": group.name, "strategy": strategy, "seed": seed, "found": found})
                    (out / "results.json").write_text(json.dumps(results, indent=2))
    report_campaigns(entries, results, seeds, budget_s, out)
    return 0


def report_campaigns(entries: list[Entry], results: list[dict], seeds: list[int], budget_s: float, out: Path) -> None:
    """Tables, summary.json and bugs_over_time.png of finished campaigns."""
    per_bug, overall = campaigns.summarize(entries, results, seeds, budget_s)
    print_table(f"bugbench campaigns: {budget_s:.0f} s per campaign ({machine_note()})", per_bug,
                ["entry", "strategy", "found", "median_s", "median_tests"])
    print_table("per strategy: mean over seeds, 95% interval; time to a bug counts a bug not found as the budget",
                overall, ["strategy", "bugs_per_cpu_hour", "bugs_per_cpu_hour_ci95", "mean_s_to_bug",
                          "mean_s_to_bug_ci95", "vs_random", "seeds"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps({"per_bug": per_bug, "overall": overall}, indent=2))
    campaigns.plot(results, seeds, budget_s, out / "bugs_over_time.png",
                   f"bugbench: {len(entries)} entries, {budget_s / 60:g} min per campaign")


def parse_seeds(text: str) -> list[int]:
    return [int(seed) for seed in text.split(",")]


def merged_results(folders: list[Path]) -> list[dict]:
    """The campaign results of several ``--out`` folders; a (group, strategy, seed) in two is an error."""
    results, seen = [], {}
    for folder in folders:
        path = folder / "results.json"
        if not path.is_file():
            raise SystemExit(f"{path} does not exist: give the --out folder of a finished --strategies run")
        for result in json.loads(path.read_text()):
            key = (result["group"], result["strategy"], result["seed"])
            if key in seen:
                raise SystemExit(f"{key} is in both {seen[key]} and {folder}: give each campaign once")
            seen[key] = folder
            results.append(result)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--validate", action="store_true", help="check every entry on its affected and fixed release")
    action.add_argument("--credit", type=Path, metavar="CASE", help="credit a saved case folder against the entries")
    action.add_argument("--install", metavar="RUNTIME@VERSION", help="install a release into the runtime cache")
    action.add_argument("--probe", metavar="ID", help="run an entry's repro on the releases of --versions")
    action.add_argument("--strategies", help="campaigns: comma-separated HiGen strategies (rl, random, nnsmith-default)")
    action.add_argument("--report", type=Path, nargs="+", metavar="OUT",
                        help="the tables and plot again from each OUT/results.json, merged (with the campaigns' "
                             "--budget-min; seeds: those of the results unless --seeds), into --out or the first OUT")
    parser.add_argument("--entries", help="comma-separated entry ids (default: all)")
    parser.add_argument("--split", choices=SPLITS, help="only the entries of one half: train (tune on it) or heldout "
                                                      "(report on it)")
    parser.add_argument("--versions", help="for --probe: comma-separated releases")
    parser.add_argument("--no-install", action="store_true", help="never install missing releases")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per run")
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    parser.add_argument("--budget-min", type=float, default=20.0, help="campaigns: minutes per campaign")
    parser.add_argument("--seeds", help="campaigns: comma-separated seeds (default 0,1,2)")
    parser.add_argument("--out", type=Path, help="campaigns: where runs and results go (default runs/bugbench)")
    parser.add_argument("extra", nargs="*", help="after --: more higen.main flags for every campaign")
    args = parser.parse_args(argv)
    try:
        if args.install:
            runtime, _, version = args.install.partition("@")
            console().print(f"installed in {releases.install(runtime, version)}")
            return 0
        if args.probe:
            if not args.versions:
                parser.error("--probe needs --versions")
            entry = load_entry(Path(__file__).resolve().parent / "bugbench" / args.probe)
            versions = args.versions.split(",")
            problems = ensure_releases([Entry(**{**entry.__dict__, "affected": v, "fixed": v}) for v in versions],
                                       not args.no_install)
            if problems:
                raise SystemExit("; ".join(problems))
            print_table(f"bugbench --probe {entry.id}", [dict(zip(("release", "target did", "vs reference"), row))
                                                         for row in probe(entry, versions, args.timeout)],
                        ["release", "target did", "vs reference"])
            return 0
        entries = load_entries(only=args.entries.split(",") if args.entries else None, split=args.split)
        if args.credit:
            return credit_case(args.credit, entries, args.timeout, args.json)
        if args.report:
            results = merged_results(args.report)
            seeds = parse_seeds(args.seeds) if args.seeds else sorted({r["seed"] for r in results})
            report_campaigns(entries, results, seeds, args.budget_min * 60, args.out or args.report[0])
            return 0
        if args.strategies:
            return run_campaigns(entries, args.strategies.split(","), parse_seeds(args.seeds or "0,1,2"),
                                 args.budget_min * 60, args.out or Path("runs/bugbench"), not args.no_install,
                                 args.timeout, args.extra)
        return validate(entries, not args.no_install, args.timeout, args.json)
    except (EntryError, RuntimeInstallError, BackendMissing, WorkerStartError, ValueError) as error:
        raise SystemExit(str(error)) from None


if __name__ == "__main__":
    sys.exit(main())
