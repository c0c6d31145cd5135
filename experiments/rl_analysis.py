"""Why does the RL not beat random? Tables from the training.log files of finished campaigns.

    python experiments/rl_analysis.py runs/rc-normal/rl-0 runs/rc-normal/random-0 ...
    python experiments/rl_analysis.py runs/rc-normal/*          # a folder's runs, grouped by strategy

Reads only files (training.log; for table 8, the RL's TensorBoard logs under tb/); runs nothing.
A run folder may hold its training.log directly or in a session subfolder (the first one found is
read). Runs are grouped by strategy (the ``start`` line), so pass the runs of one mode at a time
(normal or diff), e.g. both strategies' seeds of one campaign.

Tables:
  1  runs: tests, campaign seconds, tests/s, credible bugs, noise causes (first and second half)
  2  time per test (means): generation, waiting, execution per target, localization, the gap
     between two test lines, and the gap's unexplained part (the driver's own work: SAC updates,
     PPO steps, checkpoints), split into in-epoch tests and epoch-boundary tests
  3  sizes and config values per half: n_nodes, max_nodes, log2 max_elems, #ops, #dtypes, #ranks,
     method shares, vulnerable_ops, input_search (over all tests; in the free-only table, only
     tests where the dimension was free, i.e. what SAC / the uniform action chose)
  4  what the high level frees per quarter of the run, distinct masks, top mask share
  5  credible-bug and noise hit rates per dimension value (both strategies pooled), per 1,000
     tests and per CPU-minute (a test's gap counts as its cost), with a rarefaction of distinct
     causes; 5b each credible root cause; 5c the strongest conditions checked run by run
  6  the reward signal SAC sees: events per term, each term's share of the reward, correlations
  7  credible root causes first hit per quarter of each run
  8  whether the learners moved: SAC's entropy coefficient, critic loss and episode reward, PPO's
     entropy (8 ln 2 = 5.545 is the uniform mask) and explained variance, at five points of the run

Options: --SECTION (runs, timing, gaps, sizes, ops, free, curve, hits, lift, causes, reward, learning) prints
only those sections.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Callable, Iterable

DIMS = ("ops", "dtypes", "ranks", "max_nodes", "max_elems", "method", "vulnerable_ops", "input_search")
METHODS = ("symbolic", "symbolic-cinit", "concolic", "single-io")
DTYPES = ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool")
PPO_STEPS = 4  # big epochs per PPO update (AgentSettings.ppo_n_steps, the default the campaigns used)
KNOWN_PARTS = ("gen_wait_s", "exec_s", "judge_s", "locate_s", "coverage_s", "numerics_s", "store_s")


# -- loading ------------------------------------------------------------------------------------
class Run:
    """One run's events, with each test's inter-line gap and a few derived values."""

    def __init__(self, folder: Path):
        logs = sorted(folder.rglob("training.log"))
        if not logs:
            raise SystemExit(f"{folder}: no training.log in it or below: pass a run folder")
        self.folder, self.name = folder, folder.name
        self.tests: list[dict[str, Any]] = []
        self.epochs: list[dict[str, Any]] = []
        self.start: dict[str, Any] = {}
        self.end: dict[str, Any] = {}
        previous = None
        for line in logs[0].read_text().splitlines():
            event = json.loads(line)
            kind = event["event"]
            if kind in ("start", "resume"):
                self.start = self.start or event
                previous = event["time"]
            elif kind == "test":
                event["gap"] = event["time"] - previous
                event["first_in_epoch"] = bool(self.tests) and self.tests[-1].get("_epoch_end", False)
                event["epochs_before"] = len(self.epochs)
                previous = event["time"]
                self.tests.append(event)
            elif kind == "big_epoch":
                if "free" not in event:  # the random strategy logs the free dimensions per config only
                    event["free"] = (event.get("configs") or [{}])[0].get("free", [])
                if self.tests:
                    self.tests[-1]["_epoch_end"] = True
                self.epochs.append(event)
            elif kind == "end":
                self.end = event
        self.strategy = self.start.get("strategy", "?")
        self.mode = "diff" if any("tvm" in p or "ov" in p for p in self.start.get("plan", [])) else "normal"
        if self.tests:  # the first test's gap holds the policies' construction: use the second's start
            self.tests[0]["gap"] = float("nan")
        t0 = self.tests[0]["time"] if self.tests else 0.0
        span = (self.tests[-1]["time"] - t0) if self.tests else 0.0
        for test in self.tests:
            test["frac"] = (test["time"] - t0) / span if span else 0.0
            causes = list(zip(test.get("root_causes", []), test.get("noise", [])))
            test["credible"] = [rc for rc, noise in causes if not noise]
            test["noisy"] = [rc for rc, noise in causes if noise]
            timings = test.get("timings", {})
            test["known"] = sum(timings.get(k, 0.0) for k in KNOWN_PARTS)
            test["unexplained"] = test["gap"] - test["known"]
        self.span = span


def half(test: dict[str, Any]) -> str:
    return "1st" if test["frac"] < 0.5 else "2nd"


# -- small helpers ------------------------------------------------------------------------------
def mean(values: Iterable[float]) -> float:
    items = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return sum(items) / len(items) if items else float("nan")


def pct(values: Iterable[float], q: float) -> float:
    items = sorted(v for v in values if not math.isnan(v))
    return items[min(len(items) - 1, int(q * len(items)))] if items else float("nan")


def fmt(value: Any, digits: int = 3) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:.{digits}g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def table(title: str, header: list[str], rows: list[list[Any]]) -> None:
    cells = [header] + [[fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    print(f"\n## {title}\n")
    for n, row in enumerate(cells):
        print("| " + " | ".join(c.rjust(w) if n else c.ljust(w) for c, w in zip(row, widths)) + " |")
        if n == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")


def config_value(test: dict[str, Any], dim: str) -> Any:
    config = test["config"]
    if dim in ("ops", "dtypes", "ranks"):
        return len(config[dim])
    if dim == "max_elems":
        return math.log2(config["max_elems"])
    return config[dim]


# -- tables -------------------------------------------------------------------------------------
def runs_table(runs: list[Run]) -> None:
    rows = []
    for run in runs:
        first = [t for t in run.tests if half(t) == "1st"]
        second = [t for t in run.tests if half(t) == "2nd"]
        bugs = {rc for t in run.tests for rc in t["credible"]}
        noise = {rc for t in run.tests for rc in t["noisy"]}
        rows.append([run.name, run.strategy, len(run.tests), run.span, len(run.tests) / max(run.span, 1e-9),
                     len(first) / max(run.span / 2, 1e-9), len(second) / max(run.span / 2, 1e-9),
                     len(bugs), run.end.get("bugs", "-"), len(noise), len(run.epochs)])
    table("1. runs", ["run", "strategy", "tests", "span s", "tests/s", "1st half", "2nd half",
                      "credible RCs", "end.bugs", "noise RCs", "epochs"], rows)


def by_strategy(runs: list[Run]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        groups[run.strategy].extend(run.tests)
    return dict(sorted(groups.items()))


def timing_table(runs: list[Run]) -> None:
    targets = sorted({k for run in runs for t in run.tests for k in t["timings"] if k.endswith("_s")
                      and ":" in k})
    keys = ["gen_s", "gen_wait_s", "exec_s"] + targets + ["judge_s", "locate_s", "store_s", "coverage_s"]
    rows = []
    for strategy, tests in by_strategy(runs).items():
        for part in ("1st", "2nd", "all"):
            chosen = [t for t in tests if part == "all" or half(t) == part]
            row = [strategy, part, len(chosen)]
            row += [1000 * mean(t["timings"].get(k, 0.0) for t in chosen) for k in keys]
            row += [1000 * mean(t["gap"] for t in chosen), 1000 * pct((t["gap"] for t in chosen), 0.5),
                    1000 * mean(t["unexplained"] for t in chosen), mean(t["n_nodes"] for t in chosen)]
            rows.append(row)
    table("2. time per test (ms, means; gap = time between test lines; unexplained = gap - known parts)",
          ["strategy", "half", "tests"] + [k.removesuffix("_s") for k in keys]
          + ["gap", "gap p50", "unexplained", "n_nodes"], rows)
    rows = []
    for strategy, tests in by_strategy(runs).items():
        inner = [t for t in tests if not t["first_in_epoch"]]
        edge = [t for t in tests if t["first_in_epoch"]]
        updated = [t for t in edge if t["epochs_before"] % PPO_STEPS == 0]
        total_unexpl = sum(t["unexplained"] for t in tests if not math.isnan(t["unexplained"]))
        total_gap = sum(t["gap"] for t in tests if not math.isnan(t["gap"]))
        hidden = [t["timings"].get("gen_s", 0) - t["timings"].get("gen_wait_s", 0) for t in tests]
        rows.append([strategy, 1000 * mean(t["unexplained"] for t in inner), len(edge),
                     1000 * mean(t["unexplained"] for t in edge if t not in updated),
                     1000 * mean(t["unexplained"] for t in updated),
                     100 * total_unexpl / max(total_gap, 1e-9), 1000 * mean(hidden),
                     100 * sum(t["gap"] for t in tests if t["gap"] > 1.0) / max(total_gap, 1e-9),
                     sum(t["gap"] > 1.0 for t in tests)])
    table("2b. the driver's own time (ms per test): in-epoch tests vs the first test of a big epoch "
          "(checkpoint, PPO step/update); gen hidden = gen_s - gen_wait_s (generation overlapped with "
          "SAC's update or with prefetch)",
          ["strategy", "unexpl. in-epoch", "epoch starts", "unexpl. at epoch start",
           f"... after a PPO update (every {PPO_STEPS})", "unexpl. % of wall",
           "gen hidden", "% wall in gaps > 1 s", "gaps > 1 s"], rows)


def size_table(runs: list[Run]) -> None:
    rows = []
    for strategy, tests in by_strategy(runs).items():
        for part in ("1st", "2nd"):
            chosen = [t for t in tests if half(t) == part]
            methods = Counter(t["config"]["method"] for t in chosen)
            rows.append([strategy, part, mean(t["n_nodes"] for t in chosen)]
                        + [mean(config_value(t, d) for t in chosen) for d in ("max_nodes", "max_elems", "ops",
                                                                              "dtypes", "ranks")]
                        + [100 * methods[m] / len(chosen) for m in METHODS]
                        + [100 * mean(float(t["config"][d]) for t in chosen) for d in ("vulnerable_ops",
                                                                                      "input_search")])
    header = ["strategy", "half", "n_nodes", "max_nodes", "log2 elems", "#ops", "#dtypes", "#ranks"] \
        + [f"% {m}" for m in METHODS] + ["% vuln", "% insearch"]
    table("3a. the configs that ran (all tests; a dimension that is not free has its default)", header, rows)
    rows = []
    for strategy, tests in by_strategy(runs).items():
        for part in ("1st", "2nd"):
            chosen = [t for t in tests if half(t) == part]
            row = [strategy, part]
            for dim in ("max_nodes", "max_elems", "ops", "dtypes", "ranks"):
                row.append(mean(config_value(t, dim) for t in chosen if dim in t["free"]))
            for m in METHODS:
                free = [t for t in chosen if "method" in t["free"]]
                row.append(100 * sum(t["config"]["method"] == m for t in free) / max(1, len(free)))
            for dim in ("vulnerable_ops", "input_search"):
                row.append(100 * mean(float(t["config"][dim]) for t in chosen if dim in t["free"]))
            rows.append(row)
    table("3b. what the low level emits (only tests where that dimension is free)", header[:2] + header[3:], rows)
    rows = []
    for strategy, tests in by_strategy(runs).items():
        for part in ("1st", "2nd"):
            free = [t for t in tests if half(t) == part and "dtypes" in t["free"]]
            rows.append([strategy, part, len(free)] + [100 * mean(float(d in t["config"]["dtypes"]) for t in free)
                                                       for d in DTYPES])
    table("3c. share of tests (%) whose dtypes include each dtype, when dtypes is free",
          ["strategy", "half", "tests"] + list(DTYPES), rows)


def free_table(runs: list[Run]) -> None:
    rows = []
    for run in runs:
        epochs = run.epochs
        n = len(epochs)
        for q in range(4):
            part = epochs[q * n // 4:(q + 1) * n // 4]
            masks = Counter(tuple(e["free"]) for e in part)
            top = masks.most_common(1)[0][1] if masks else 0
            rows.append([run.name, run.strategy, q + 1, len(part)]
                        + [100 * mean(float(d in e["free"]) for e in part) for d in DIMS]
                        + [mean(len(e["free"]) for e in part), len(masks), 100 * top / max(1, len(part))])
    table("4. share of big epochs (%) in which each dimension is free, per quarter of the run",
          ["run", "strategy", "quarter", "epochs"] + list(DIMS) + ["#free", "masks", "top mask %"], rows)


def _bucket(test: dict[str, Any], dim: str) -> list[str]:
    """The values a test falls under for ``dim`` (several for set dimensions)."""
    config = test["config"]
    if dim == "n_nodes":
        n = test["n_nodes"]
        return [f"{4 * (n // 4)}-{4 * (n // 4) + 3}"]
    if dim == "max_elems":
        return [f"2^{int(math.log2(config['max_elems']))}"]
    if dim == "#dtypes":
        return [str(len(config["dtypes"]))]
    if dim == "#ops":
        k = len(config["ops"])
        return ["all" if k == 0 else f"{10 * (k // 10)}-{10 * (k // 10) + 9}"]
    if dim in ("dtypes", "ranks"):
        return [str(v) for v in config[dim]]
    return [str(config[dim])]


def expected_distinct(n: int, total: int, hits_per_cause: Iterable[int]) -> float:
    """Rarefaction: the expected number of distinct causes among ``n`` tests drawn without
    replacement from ``total`` tests, a cause hit by k of them: sum of 1 - C(total-k, n)/C(total, n)."""
    def log_choose(a: int, b: int) -> float:
        return math.lgamma(a + 1) - math.lgamma(b + 1) - math.lgamma(a - b + 1) if 0 <= b <= a else -math.inf
    base = log_choose(total, n)
    return sum(1.0 - math.exp(log_choose(total - k, n) - base) for k in hits_per_cause)


def hit_table(runs: list[Run]) -> None:
    tests = [t for run in runs for t in run.tests]
    per_cause = Counter(rc for t in tests for rc in set(t["credible"]))
    top = per_cause.most_common(1)[0][0] if per_cause else None
    mean_gap = mean(t["gap"] for t in tests)
    for dim in ("method", "max_nodes", "n_nodes", "max_elems", "#dtypes", "dtypes", "ranks", "#ops",
                "vulnerable_ops", "input_search"):
        groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for t in tests:
            for value in _bucket(t, dim):
                groups[value].append(t)
        rows = []
        for value in sorted(groups, key=lambda v: (len(v), v)):
            group = groups[value]
            cost = sum(t["gap"] for t in group if not math.isnan(t["gap"])) / 60
            credible = sum(bool(t["credible"]) for t in group)
            new = sum(len(t["new_bugs"]) for t in group)
            kinds = len({rc for t in group for rc in t["credible"]})
            noisy = sum(bool(t["noisy"]) for t in group)
            others = sum(bool(set(t["credible"]) - {top}) for t in group)
            expected = expected_distinct(len(group), len(tests), per_cause.values())
            gap = mean(t["gap"] for t in group)
            rows.append([value, len(group), 1000 * gap, credible, 1000 * credible / len(group),
                         1000 * others / len(group), credible / max(cost, 1e-9), new, kinds, expected,
                         kinds / max(expected, 1e-9) * mean_gap / gap, 1000 * noisy / len(group)])
        table(f"5. hits per value of {dim} (strategies pooled; 'w/o top': tests hitting a credible cause other "
              f"than the most frequent one; 'exp. distinct': distinct causes expected in that many tests drawn "
              f"at random from all; 'richness/s': distinct / expected x (mean cost / cost here))",
              [dim, "tests", "ms/test", "w/ credible", "per 1k", "per 1k w/o top", "per CPU-min", "new bugs",
               "distinct", "exp. distinct", "richness/s", "noise per 1k"], rows)


#: conditions whose effect table 5c checks run by run (name -> predicate on a test)
CONDITIONS: dict[str, Callable[[dict[str, Any]], bool]] = {
    "vulnerable_ops": lambda t: t["config"]["vulnerable_ops"],
    "no input_search": lambda t: not t["config"]["input_search"],
    "max_nodes <= 3": lambda t: t["config"]["max_nodes"] <= 3,
    "max_nodes >= 12": lambda t: t["config"]["max_nodes"] >= 12,
    "ops free": lambda t: bool(t["config"]["ops"]),
    "float16 allowed": lambda t: "float16" in t["config"]["dtypes"],
    "symbolic-cinit": lambda t: t["config"]["method"] == "symbolic-cinit",
}


def lift_table(runs: list[Run]) -> None:
    """Per run: credible hits per 1k tests with and without each condition, and the cost ratio."""
    rows = []
    for name, condition in CONDITIONS.items():
        ratios = []
        for run in runs:
            inside = [t for t in run.tests if condition(t)]
            outside = [t for t in run.tests if not condition(t)]
            if not inside or not outside:
                continue
            rate_in = 1000 * sum(bool(t["credible"]) for t in inside) / len(inside)
            rate_out = 1000 * sum(bool(t["credible"]) for t in outside) / len(outside)
            cost = mean(t["gap"] for t in inside) / mean(t["gap"] for t in outside)
            ratios.append(f"{rate_in:.1f}/{rate_out:.1f}")
            rows.append([name, run.name, len(inside), rate_in, rate_out, rate_in / max(rate_out, 1e-9), cost,
                         sum(len(t["new_bugs"]) for t in inside), sum(len(t["new_bugs"]) for t in outside)])
    table("5c. per run: credible hits per 1k tests with / without a condition, their ratio, the cost ratio "
          "(ms/test with / without), new bugs with / without", ["condition", "run", "tests with", "per 1k with",
                                                                "per 1k without", "ratio", "cost ratio",
                                                                "new with", "new without"], rows)


def cause_table(runs: list[Run]) -> None:
    """Each credible root cause: how often, by which strategy, and what its hits' configs share."""
    causes: dict[str, list[tuple[Run, dict[str, Any]]]] = defaultdict(list)
    for run in runs:
        for t in run.tests:
            for rc in set(t["credible"]):
                causes[rc].append((run, t))
    rows = []
    for rc, hits in sorted(causes.items(), key=lambda kv: -len(kv[1])):
        found_by = Counter(run.strategy for run in {run.name: run for run, _ in hits}.values())
        dtypes = Counter(d for _, t in hits for d in t["config"]["dtypes"])
        always = ",".join(d for d, c in dtypes.items() if c == len(hits))
        methods = Counter(t["config"]["method"] for _, t in hits).most_common(2)
        rows.append([rc[:70], len(hits), " ".join(f"{k}:{v}" for k, v in sorted(found_by.items())),
                     min(t["frac"] for _, t in hits), mean(t["n_nodes"] for _, t in hits),
                     100 * mean(float(t["config"]["vulnerable_ops"]) for _, t in hits), always or "-",
                     ";".join(f"{m}:{c}" for m, c in methods)])
    table("5b. credible root causes: tests hitting them, runs finding them, earliest hit (share of run), mean "
          "n_nodes, % with vulnerable_ops, dtypes in every hitting config, methods",
          ["root cause", "tests", "runs", "first", "n_nodes", "% vuln", "dtypes always", "methods"], rows)


def reward_table(runs: list[Run]) -> None:
    rows = []
    rl = [run for run in runs if any("reward" in t for t in run.tests)]
    for run in rl:
        terms: dict[str, float] = defaultdict(float)
        events: Counter[str] = Counter()
        for t in run.tests:
            for k, v in t.get("reward", {}).items():
                if k != "total":
                    terms[k] += abs(v)
                    events[k] += v != 0
        total = sum(terms.values())
        rows.append([run.name, len(run.tests), events["new_bug"], events["repeated_bug"], events["invalid"],
                     events["novelty"], events["coverage"]]
                    + [100 * terms[k] / max(total, 1e-9) for k in ("new_bug", "repeated_bug", "invalid", "novelty",
                                                                  "coverage")])
    table("6a. low-level reward: tests with a nonzero term, and each term's share of |reward| (%)",
          ["run", "tests", "new_bug", "repeated", "invalid", "novelty", "coverage", "% new_bug", "% repeated",
           "% invalid", "% novelty", "% coverage"], rows)
    rows = []
    for run in rl:
        series = [t for t in run.tests if "reward" in t and not math.isnan(t["gap"])]
        reward = [t["reward"]["total"] for t in series]
        for name, values in (("gap s", [t["gap"] for t in series]), ("gen_s", [t["timings"]["gen_s"] for t in series]),
                             ("n_nodes", [t["n_nodes"] for t in series]),
                             ("#dtypes", [len(t["config"]["dtypes"]) for t in series]),
                             ("#ops(all=76)", [len(t["config"]["ops"]) or 76 for t in series]),
                             ("credible", [float(bool(t["credible"])) for t in series]),
                             ("noise", [float(bool(t["noisy"])) for t in series])):
            rows.append([run.name, name, corr(reward, values),
                         corr([t["reward"]["novelty"] + t["reward"]["coverage"] for t in series], values)])
    table("6b. Pearson correlation of a test's reward (total; novelty+coverage) with its cost and outcome",
          ["run", "with", "r(total)", "r(novelty+coverage)"], rows)
    rows = []
    for run in rl:
        for part in ("1st", "2nd"):
            chosen = [t for t in run.tests if "reward" in t and half(t) == part]
            rows.append([run.name, part, mean(t["reward"]["total"] for t in chosen),
                         mean(t["reward"]["novelty"] for t in chosen), mean(t["reward"]["coverage"] for t in chosen),
                         sum(t["reward"]["new_bug"] for t in chosen)])
    table("6c. mean low-level reward terms per half", ["run", "half", "total", "novelty", "coverage",
                                                        "sum new_bug"], rows)
    rows = []
    for run in rl:
        terms: dict[str, float] = defaultdict(float)
        for e in run.epochs:
            for k, v in e.get("high_reward", {}).items():
                if k != "total":
                    terms[k] += v
        total = sum(terms.values())
        bug_epochs = sum(e.get("new_bugs", 0) > 0 for e in run.epochs)
        updates = (run.epochs[-1].get("ppo_steps", 0) // 4) if run.epochs else 0
        rows.append([run.name, len(run.epochs), updates, bug_epochs]
                    + [100 * terms[k] / max(total, 1e-9) for k in ("new_bug", "validity", "coverage", "new_tokens",
                                                                  "diversity", "tests_per_s")])
    table("6d. high-level reward: epochs, PPO updates (4 epochs each), epochs with a new bug, each term's "
          "share of the summed reward (%)", ["run", "epochs", "PPO updates", "epochs w/ new bug", "% new_bug",
                                             "% validity", "% coverage", "% new_tokens", "% diversity",
                                             "% speed"], rows)


def gap_table(runs: list[Run]) -> None:
    """Tests whose line came more than 1 s after the previous one: what the time went to."""
    rows = []
    for strategy, tests in by_strategy(runs).items():
        wall = sum(t["gap"] for t in tests if not math.isnan(t["gap"]))
        for low, high in ((0, 0.2), (0.2, 1.0), (1.0, 5.0), (5.0, 1e9)):
            chosen = [t for t in tests if low <= t["gap"] < high]
            if not chosen:
                continue
            total = sum(t["gap"] for t in chosen)
            parts = [sum(t["timings"].get(k, 0.0) for t in chosen) / total * 100
                     for k in ("gen_wait_s", "exec_s", "locate_s")]
            rows.append([strategy, f"{low:g}-{high:g}" if high < 1e9 else f">{low:g}", len(chosen),
                         100 * total / wall, *parts, 100 * sum(t["unexplained"] for t in chosen) / total,
                         mean(t["n_nodes"] for t in chosen), mean(t["config"]["max_nodes"] for t in chosen),
                         100 * mean(float(t["verdict"] in ("invalid", "unsupported")) for t in chosen),
                         1000 * mean(float(bool(t["credible"])) for t in chosen)])
    table("2c. tests by their gap: share of wall time, what it went to (% of those gaps), sizes, invalid share, "
          "credible hits per 1k", ["strategy", "gap s", "tests", "% wall", "% gen_wait", "% exec", "% locate",
                                  "% unexplained", "n_nodes", "max_nodes", "% invalid", "credible/1k"], rows)


def curve_table(runs: list[Run]) -> None:
    """New credible root causes (first hit in the run) per quarter of the run."""
    rows = []
    for run in runs:
        seen: set[str] = set()
        quarters = [0, 0, 0, 0]
        for t in run.tests:
            for rc in t["credible"]:
                if rc not in seen:
                    seen.add(rc)
                    quarters[min(3, int(4 * t["frac"]))] += 1
        rows.append([run.name, run.strategy, *quarters, len(seen)])
    table("7. credible root causes first hit in each quarter of the run", ["run", "strategy", "Q1", "Q2", "Q3",
                                                                          "Q4", "total"], rows)


def ops_table(runs: list[Run]) -> None:
    """How far the emitted operator sets are from 'each operator with probability 1/2'."""
    rows = []
    for strategy, tests in by_strategy(runs).items():
        for part in ("1st", "2nd"):
            free = [t for t in tests if half(t) == part and "ops" in t["free"]]
            counts = Counter(op for t in free for op in t["config"]["ops"])
            if not free:
                continue
            shares = [counts[op] / len(free) for op in counts]
            sd = math.sqrt(0.25 / len(free))
            worst = max(counts, key=lambda op: abs(counts[op] / len(free) - 0.5))
            rows.append([strategy, part, len(free), len(counts), 100 * mean(abs(x - 0.5) for x in shares),
                         100 * sd, f"{worst} {100 * counts[worst] / len(free):.1f}%"])
    table("3d. operator inclusion when ops is free: mean |share - 50%| vs a binomial SD", ["strategy", "half",
                                                                                       "tests", "ops", "mean |dev| %",
                                                                                       "binomial SD %",
                                                                                       "largest"], rows)


LEARNING_TAGS = (("sac_low", "train/ent_coef"), ("sac_low", "train/critic_loss"), ("sac_low", "rollout/ep_rew_mean"),
                 ("ppo_high", "train/entropy_loss"), ("ppo_high", "train/explained_variance"))


def learning_table(runs: list[Run]) -> None:
    """SB3's own scalars of the RL runs, at 0, 25, 50, 75 and 100% of their steps."""
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        print("\n## 8. skipped: the tensorboard package is not installed (pip install tensorboard)")
        return
    rows = []
    for run in runs:
        for level, tag in LEARNING_TAGS:
            folder = next(iter(sorted(run.folder.rglob(f"tb/{level}"))), None)
            if folder is None:
                continue
            events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
            events.Reload()
            if tag not in events.Tags()["scalars"]:
                continue
            points = events.Scalars(tag)
            picked = [points[int(q * (len(points) - 1))].value for q in (0, 0.25, 0.5, 0.75, 1)]
            rows.append([run.name, f"{level}:{tag}", len(points), *picked])
    table("8. the learners' own scalars at 0/25/50/75/100% of their logged steps",
          ["run", "scalar", "points", "0%", "25%", "50%", "75%", "100%"], rows)


def corr(xs: list[float], ys: list[float]) -> float:
    if len(xs) < 3 or statistics.pstdev(xs) == 0 or statistics.pstdev(ys) == 0:
        return float("nan")
    return statistics.correlation(xs, ys)


SECTIONS: dict[str, Callable[[list[Run]], None]] = {
    "runs": runs_table, "timing": timing_table, "gaps": gap_table, "sizes": size_table, "ops": ops_table,
    "free": free_table, "curve": curve_table,
    "hits": hit_table, "lift": lift_table, "causes": cause_table, "reward": reward_table,
    "learning": learning_table}


def main(argv: list[str]) -> None:
    folders = [Path(a) for a in argv if not a.startswith("--")]
    only = [a.removeprefix("--") for a in argv if a.startswith("--")]
    if not folders:
        raise SystemExit(__doc__)
    unknown = set(only) - set(SECTIONS)
    if unknown:
        raise SystemExit(f"unknown section(s) {sorted(unknown)}: choose from {', '.join('--' + s for s in SECTIONS)}")
    missing = [str(f) for f in folders if not f.is_dir()]
    if missing:
        raise SystemExit(f"not a run folder: {', '.join(missing)} (pass folders that hold a training.log)")
    runs = [Run(f) for f in folders]
    for name, section in SECTIONS.items():
        if not only or name in only:
            section(runs)


if __name__ == "__main__":
    main(sys.argv[1:])
