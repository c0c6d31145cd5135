"""Reward functions (higen.rewards) against hand-computed values, and their configuration."""

from __future__ import annotations

import json
import math
from collections import Counter
from types import SimpleNamespace

import pytest

from higen.rewards import (HighWeights, LowWeights, RewardConfig, RewardConfigError, coverage_gain, diversity,
                           high_level_terms, load_reward_config, low_level_terms, novelty, repeats_value,
                           time_factor, unseen_tokens)


def test_novelty_counts_unseen_tokens_with_diminishing_value():
    seen = {"op:Add": 3, "edge:Add>Relu": 1}
    assert unseen_tokens(["op:Add", "op:Relu", "op:Relu", "rank:Relu:2"], seen) == 2
    assert unseen_tokens([], seen) == 0
    assert novelty(0) == 0.0
    assert novelty(1) == pytest.approx(math.log(2))
    assert novelty(7) == pytest.approx(math.log(8))
    assert novelty(2) - novelty(1) < novelty(1) - novelty(0)  # each further new token is worth less


def test_low_level_reward_by_hand():
    w = LowWeights()  # new 10, repeated 10 / hits, invalid 0.2, novelty 0, coverage 1.0, time 0, time_norm 1
    quiet = low_level_terms(new_bugs=0, valid=True, unseen=5)
    assert quiet.total == 0.0  # new structure alone earns nothing by default
    new_bug = low_level_terms(new_bugs=1, repeat_hits=[4], valid=True, unseen=3, coverage_gain=0.25,
                              weights=LowWeights(novelty=0.5))
    assert new_bug.as_dict() == {"new_bug": 10.0, "repeated_bug": 2.5, "invalid": 0.0,
                                 "novelty": round(0.5 * math.log(4), 6), "coverage": 0.25, "time": 0.0,
                                 "total": round(10 + 2.5 + 0.5 * math.log(4) + 0.25, 6)}
    invalid = low_level_terms(new_bugs=0, valid=False, unseen=0, seconds=3.0, typical_seconds=1.0, weights=w)
    assert invalid.total == pytest.approx(-0.2)  # time costs nothing by default
    slow = low_level_terms(new_bugs=0, valid=True, unseen=1, seconds=4.0,
                           weights=LowWeights(time=0.25, novelty=0.5))
    assert slow.total == pytest.approx(0.5 * math.log(2) - 1.0)


def test_repeats_are_discounted_by_their_hits():
    assert repeats_value([]) == 0.0
    assert repeats_value([2, 4, 10]) == pytest.approx(0.5 + 0.25 + 0.1)
    second, tenth = (low_level_terms(new_bugs=0, repeat_hits=[n], valid=True, unseen=0) for n in (2, 10))
    assert second.as_dict()["repeated_bug"] == 5.0 and tenth.as_dict()["repeated_bug"] == 1.0
    old = low_level_terms(new_bugs=0, repeat_hits=[10], valid=True, unseen=0, weights=LowWeights(repeated_bug=0.2))
    assert old.total == pytest.approx(0.02)


def test_hits_count_per_unit_of_time_and_time_alone_costs_nothing():
    fast = low_level_terms(new_bugs=1, valid=True, unseen=0, seconds=0.5, typical_seconds=1.0)
    slow = low_level_terms(new_bugs=1, valid=True, unseen=0, seconds=4.0, typical_seconds=1.0)
    assert fast.total == pytest.approx(20.0) and slow.total == pytest.approx(2.5)
    assert time_factor(1e-6, 1.0, 1.0) == 10.0 and time_factor(1e6, 1.0, 1.0) == pytest.approx(0.1)  # capped
    assert time_factor(0.5, 1.0, 0.0) == time_factor(0.5, 0.0, 1.0) == 1.0  # off, or no typical time yet
    per_test = low_level_terms(new_bugs=1, valid=True, unseen=0, seconds=0.5, typical_seconds=1.0,
                               weights=LowWeights(time_norm=0.0))
    assert per_test.total == 10.0
    for seconds in (0.01, 1.0, 50.0):  # a test without a hit earns 0 however fast or slow
        assert low_level_terms(new_bugs=0, valid=True, unseen=0, seconds=seconds, typical_seconds=1.0).total == 0.0


def test_a_crash_is_a_finding_never_a_penalty():
    crash = low_level_terms(new_bugs=1, valid=True, unseen=0)
    repeated_crash = low_level_terms(new_bugs=0, repeat_hits=[3], valid=True, unseen=0)
    ok = low_level_terms(new_bugs=0, valid=True, unseen=0)
    assert crash.total == 10.0 and repeated_crash.total == pytest.approx(10 / 3) and ok.total == 0.0
    assert crash.total > repeated_crash.total > ok.total
    assert all(value >= 0 for _, value in crash.parts)


def test_coverage_is_zero_until_it_is_measured():
    without = low_level_terms(new_bugs=0, valid=True, unseen=2)
    with_zero = low_level_terms(new_bugs=0, valid=True, unseen=2, coverage_gain=0.0)
    assert without == with_zero
    weighted = low_level_terms(new_bugs=0, valid=True, unseen=0, coverage_gain=3.0,
                               weights=LowWeights(coverage=2.0))
    assert weighted.total == 6.0


def test_high_level_reward_by_hand():
    terms = high_level_terms(new_bugs=2, repeats=0.75, validity_ratio=0.75, coverage_growth=0.5, new_tokens=9,
                             times_tried_before=3, tests_per_s=25.0)
    expected = {"new_bug": 20.0, "repeated_bug": 7.5, "validity": 0.0, "coverage": 0.5,
                "new_tokens": 0.5 * math.log(10), "diversity": 0.0,
                "tests_per_s": 0.1 * 2.0}  # no constant validity/diversity share; speed capped at 2 x speed_ref
    assert terms.as_dict() == {**{k: round(v, 6) for k, v in expected.items()},
                               "total": round(sum(expected.values()), 6)}
    assert diversity(0) == 1.0 and diversity(3) == 0.5
    slow = high_level_terms(new_bugs=0, validity_ratio=1.0, coverage_growth=0.0, new_tokens=0,
                            times_tried_before=3, tests_per_s=5.0,
                            weights=HighWeights(tests_per_s=1.0, validity=1.0, diversity=0.5))
    assert slow.as_dict()["tests_per_s"] == 0.5 and slow.total == 1.0 + 0.25 + 0.5


def test_weights_from_toml_and_flags(tmp_path):
    path = tmp_path / "rewards.toml"
    path.write_text("[low]\nnew_bug = 50\ninvalid = 1\ntime_norm = 0\n\n[high]\ndiversity = 0.5\n")
    config = load_reward_config(path, ["low.invalid=0.5", "high.tests_per_s = 0", "high.repeated_bug=2"])
    assert config.low == LowWeights(new_bug=50.0, invalid=0.5, time_norm=0.0)
    assert config.high == HighWeights(diversity=0.5, tests_per_s=0.0, repeated_bug=2.0)
    assert RewardConfig.from_json(config.to_json()) == config
    assert load_reward_config() == RewardConfig()


@pytest.mark.parametrize("text, override, message", [
    ("[low]\nnew_sig = 1\n", (), "unknown low-level weight 'new_sig'"),
    ("[medium]\nx = 1\n", (), "reward level 'medium' unknown"),
    ("[low]\nnovelty = 'lots'\n", (), "low.novelty must be a number"),
    ("[low\n", (), "not valid TOML"),
    ("", ("novelty=1",), "write LEVEL.KEY=VALUE"),
    ("", ("high.validity=nan",), "must be finite"),
])
def test_bad_weights_say_what_is_wrong(tmp_path, text, override, message):
    path = tmp_path / "rewards.toml"
    path.write_text(text)
    with pytest.raises(RewardConfigError, match=message):
        load_reward_config(path, override)
    with pytest.raises(RewardConfigError, match="cannot read it"):
        load_reward_config(tmp_path / "absent.toml")


def test_coverage_gain_from_the_collectors():
    assert coverage_gain({}) == 0.0
    assert coverage_gain({"structure": 40}) == 0.0  # already the novelty term
    assert coverage_gain({"structure": 40, "ort_transformers": 2, "tvm_py": 1}) == pytest.approx(math.log(4))


def test_the_campaign_state_counts_hits_per_root_cause_and_keeps_them_on_resume():
    """Every strategy's state books a root cause's hits: its first hit is new (full weight), each
    later one is worth 1/(hits so far); the counts survive a checkpoint and, on resume, come from the
    log (tests after the checkpoint included), as do the big epochs logged after it."""
    from higen.campaign_state import Budget, CampaignState
    from higen.coverage.manager import CoverageManager
    from higen.engine import TestResult
    from higen.generation.config import GenConfig
    from higen.oracle import Verdict
    from higen.run_dir import LogHistory

    def result(index: int, bugs: list[str], new: list[str]) -> TestResult:
        return TestResult(index, GenConfig(seed=index), Verdict.ERROR if bugs else Verdict.OK, bugs=bugs,
                          new_bugs=new, timings={"gen_s": 0.2, "exec_s": 0.05})

    engine = SimpleNamespace(coverage=CoverageManager())  # what restoring reads of an engine: the token union
    state = CampaignState(engine, RewardConfig(), 4, Budget(10))
    state.begin_epoch()
    totals = [state.account(result(i, bugs, new)).as_dict()
              for i, (bugs, new) in enumerate([(["A"], ["A"]), (["A"], []), ([], []), (["A", "B"], ["B"])], 1)]
    assert [(t["new_bug"], t["repeated_bug"]) for t in totals] == [(10.0, 0.0), (0.0, 5.0), (0.0, 0.0),
                                                                   (10.0, round(10 / 3, 6))]
    assert state.cause_hits == {"A": 3, "B": 1}
    terms, summary = state.end_epoch()
    assert terms.as_dict()["repeated_bug"] == pytest.approx(10 * (1 / 2 + 1 / 3))
    assert terms.as_dict()["new_bug"] == 20.0 and summary["bugs"] == 4

    saved = json.loads(json.dumps(state.to_json()))
    again = CampaignState(engine, RewardConfig(), 4, Budget(10))
    again.restore(saved)
    assert again.cause_hits == state.cause_hits and again.typical_seconds() == pytest.approx(0.25)
    logged = LogHistory(tests=9, last_index=9, bug_hits=Counter({"A": 5, "B": 1}), big_epochs=2)
    again.restore(saved, logged)
    assert again.cause_hits == {"A": 5, "B": 1} and (again.tests, again.big_epochs) == (9, 2)
    again.begin_epoch()
    assert again.account(result(10, ["A"], [])).as_dict()["repeated_bug"] == pytest.approx(10 / 6)
