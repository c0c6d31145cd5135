"""Reward functions (higen.rewards) against hand-computed values, and their configuration."""

from __future__ import annotations

import math

import pytest

from higen.rewards import (HighWeights, LowWeights, RewardConfig, RewardConfigError, coverage_gain, diversity,
                           high_level_terms, load_reward_config, low_level_terms, novelty, unseen_tokens)


def test_novelty_counts_unseen_tokens_with_diminishing_value():
    seen = {"op:Add": 3, "edge:Add>Relu": 1}
    assert unseen_tokens(["op:Add", "op:Relu", "op:Relu", "rank:Relu:2"], seen) == 2
    assert unseen_tokens([], seen) == 0
    assert novelty(0) == 0.0
    assert novelty(1) == pytest.approx(math.log(2))
    assert novelty(7) == pytest.approx(math.log(8))
    assert novelty(2) - novelty(1) < novelty(1) - novelty(0)  # each further new token is worth less


def test_low_level_reward_by_hand():
    w = LowWeights()  # new 10, repeated 0.2, invalid 0.2, novelty 0.5, coverage 1.0
    quiet = low_level_terms(new_bugs=0, bugs=0, valid=True, unseen=0)
    assert quiet.total == 0.0
    new_bug = low_level_terms(new_bugs=1, bugs=2, valid=True, unseen=3, coverage_gain=0.25)
    assert new_bug.as_dict() == {"new_bug": 10.0, "repeated_bug": 0.2, "invalid": 0.0,
                                 "novelty": round(0.5 * math.log(4), 6), "coverage": 0.25, "time": 0.0,
                                 "total": round(10 + 0.2 + 0.5 * math.log(4) + 0.25, 6)}
    invalid = low_level_terms(new_bugs=0, bugs=0, valid=False, unseen=0, seconds=3.0, weights=w)
    assert invalid.total == pytest.approx(-0.2)  # time costs nothing by default
    slow = low_level_terms(new_bugs=0, bugs=0, valid=True, unseen=1, seconds=4.0,
                           weights=LowWeights(time=0.25))
    assert slow.total == pytest.approx(0.5 * math.log(2) - 1.0)


def test_a_crash_is_a_finding_never_a_penalty():
    crash = low_level_terms(new_bugs=1, bugs=1, valid=True, unseen=0)
    repeated_crash = low_level_terms(new_bugs=0, bugs=1, valid=True, unseen=0)
    ok = low_level_terms(new_bugs=0, bugs=0, valid=True, unseen=0)
    assert crash.total == 10.0 and repeated_crash.total == pytest.approx(0.2) and ok.total == 0.0
    assert crash.total > repeated_crash.total > ok.total
    assert all(value >= 0 for _, value in crash.parts)


def test_coverage_is_zero_until_it_is_measured():
    without = low_level_terms(new_bugs=0, bugs=0, valid=True, unseen=2)
    with_zero = low_level_terms(new_bugs=0, bugs=0, valid=True, unseen=2, coverage_gain=0.0)
    assert without == with_zero
    weighted = low_level_terms(new_bugs=0, bugs=0, valid=True, unseen=0, coverage_gain=3.0,
                               weights=LowWeights(coverage=2.0))
    assert weighted.total == 6.0


def test_high_level_reward_by_hand():
    terms = high_level_terms(new_bugs=2, validity_ratio=0.75, coverage_growth=0.5, new_tokens=9,
                             times_tried_before=3, tests_per_s=25.0)
    expected = {"new_bug": 20.0, "validity": 0.75, "coverage": 0.5, "new_tokens": 0.5 * math.log(10),
                "diversity": 0.5 * 0.5, "tests_per_s": 0.1 * 2.0}  # speed capped at 2 x speed_ref
    assert terms.as_dict() == {**{k: round(v, 6) for k, v in expected.items()},
                               "total": round(sum(expected.values()), 6)}
    assert diversity(0) == 1.0 and diversity(3) == 0.5
    slow = high_level_terms(new_bugs=0, validity_ratio=1.0, coverage_growth=0.0, new_tokens=0,
                            times_tried_before=0, tests_per_s=5.0, weights=HighWeights(tests_per_s=1.0))
    assert slow.as_dict()["tests_per_s"] == 0.5 and slow.total == 1.0 + 0.5 + 0.5


def test_weights_from_toml_and_flags(tmp_path):
    path = tmp_path / "rewards.toml"
    path.write_text("[low]\nnew_bug = 50\ninvalid = 1\n\n[high]\ndiversity = 0\n")
    config = load_reward_config(path, ["low.invalid=0.5", "high.tests_per_s = 0"])
    assert config.low == LowWeights(new_bug=50.0, invalid=0.5)
    assert config.high == HighWeights(diversity=0.0, tests_per_s=0.0)
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
