"""Action decoding (higen.generation.decoder) and the random baseline built on it: monotone, every value of
every dimension reachable, only free dimensions read. Pure functions, the real operator catalogue."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from higen.generation.decoder import DIMENSIONS, ActionDecoder, describe_config, dimension_mask, free_names
from higen.generation.config import DTYPES, METHODS, RANKS, GenConfig
from higen.generation.nnsmith_build import CATALOGUE
from higen.strategies import RandomStrategy

OPS = sorted(CATALOGUE)
ALL = DIMENSIONS


@pytest.fixture(scope="module")
def decoder() -> ActionDecoder:
    return ActionDecoder(OPS, GenConfig(max_nodes=10))


def one_hot(decoder: ActionDecoder, block: str, index: int) -> np.ndarray:
    """Every score low except one: that item alone wins its block."""
    action = -np.ones(decoder.size)
    action[decoder.blocks[block].start + index] = 1.0
    return action


def test_layout_covers_every_dimension(decoder):
    assert decoder.size == len(OPS) + len(DTYPES) + len(RANKS) + 1 + 1 + len(METHODS) + 1 + 1
    starts = [decoder.blocks[name].start for name in DIMENSIONS]
    assert starts == sorted(starts) and starts[0] == 0 and decoder.blocks["input_search"].stop == decoder.size
    assert free_names(dimension_mask(["method", "ops"])) == ("ops", "method")
    with pytest.raises(ValueError, match="unknown dimensions"):
        free_names(["colour"])


def test_fixed_dimensions_keep_the_defaults(decoder):
    rng = np.random.default_rng(0)
    for _ in range(50):
        action = rng.uniform(-1, 1, decoder.size)
        assert replace(decoder.decode(action, [], seed=7), extra={}) == replace(decoder.base, seed=7)
        free = [name for name in DIMENSIONS if rng.random() < 0.5]
        config = decoder.decode(action, free, seed=7)
        for name in set(DIMENSIONS) - set(free):
            assert getattr(config, name) == getattr(decoder.base, name), name
        assert config.seed == 7 and config.z3_timeout_ms == decoder.base.z3_timeout_ms
        assert describe_config(config)["free"] == list(free_names(free))


def test_decoding_is_a_function_of_the_action_not_of_a_hidden_generator(decoder):
    action = np.random.default_rng(1).uniform(-1, 1, decoder.size)
    assert decoder.decode(action, ALL, 1) == decoder.decode(action.copy(), ALL, 1)
    assert replace(decoder.decode(action, ALL, 1), seed=2) == decoder.decode(action, ALL, 2)  # seed is separate


def test_every_operator_dtype_rank_and_method_is_reachable(decoder):
    for block, items in (("ops", OPS), ("dtypes", DTYPES), ("ranks", RANKS)):
        for index, item in enumerate(items):
            assert getattr(decoder.decode(one_hot(decoder, block, index), ALL, 0), block) == (item,)
    for index, method in enumerate(METHODS):
        assert decoder.decode(one_hot(decoder, "method", index), ALL, 0).method == method
    everything = decoder.decode(np.ones(decoder.size), ALL, 0)
    assert everything.ops == tuple(OPS) and everything.dtypes == DTYPES and everything.ranks == RANKS
    assert decoder.decode(-np.ones(decoder.size), ALL, 0).ops == (OPS[0],)  # never empty


@pytest.mark.parametrize("block, field", [("vulnerable_ops", "vulnerable_ops"), ("input_search", "input_search")])
def test_booleans_by_sign(decoder, block, field):
    action = np.zeros(decoder.size)
    for value, expected in ((-0.3, False), (0.0, False), (0.01, True), (1.0, True)):
        action[decoder.blocks[block]] = value
        assert getattr(decoder.decode(action, [block], 0), field) is expected


def test_numbers_are_monotone_and_cover_their_range(decoder):
    sweep = np.linspace(-1, 1, 2001)
    action = np.zeros(decoder.size)
    nodes, elems = [], []
    for value in sweep:
        action[decoder.blocks["max_nodes"]] = value
        action[decoder.blocks["max_elems"]] = value
        config = decoder.decode(action, ["max_nodes", "max_elems"], 0)
        nodes.append(config.max_nodes)
        elems.append(config.max_elems)
    assert nodes == sorted(nodes) and elems == sorted(elems)  # larger action value, never smaller
    low, high = decoder.nodes_range
    assert (low, high) == (2, 18) and sorted(set(nodes)) == list(range(low, high + 1))
    assert sorted(set(elems)) == [1 << e for e in range(8, 17)]
    counts = np.bincount(nodes)[low:]  # equal-width bins: a uniform action gives uniform sizes
    assert counts.max() - counts.min() <= 2


def test_raising_a_score_never_removes_its_item(decoder):
    rng = np.random.default_rng(2)
    for _ in range(300):
        action = rng.uniform(-1, 1, decoder.size)
        block = ("ops", "dtypes", "ranks")[rng.integers(3)]
        before = decoder.decode(action, ALL, 0)
        chosen = getattr(before, block)
        items = OPS if block == "ops" else DTYPES if block == "dtypes" else RANKS
        index = items.index(chosen[rng.integers(len(chosen))])
        raised = action.copy()
        raised[decoder.blocks[block].start + index] = rng.uniform(raised[decoder.blocks[block].start + index], 1)
        assert items[index] in getattr(decoder.decode(raised, ALL, 0), block)
        # and raising a method's score never takes the method away from the winner
        winner = METHODS.index(before.method)
        raised[decoder.blocks["method"].start + winner] = 1.0
        assert decoder.decode(raised, ALL, 0).method == before.method


def test_small_typical_sizes_stay_valid():
    for max_nodes in (1, 2, 3, 64):
        decoder = ActionDecoder(OPS, GenConfig(max_nodes=max_nodes))
        low, high = decoder.nodes_range
        assert low <= max_nodes <= high <= 64
        for value in (-1.0, 0.0, 1.0):
            action = np.full(decoder.size, value)
            assert low <= decoder.decode(action, ALL, 0).max_nodes <= high


def test_random_baseline_uses_the_decoder_with_random_free_dimensions():
    base = GenConfig(max_nodes=6)
    strategy = RandomStrategy(3, OPS, base, small_epochs=5)
    configs = [strategy.propose() for _ in range(40)]
    masks = [tuple(c.extra["free"]) for c in configs]
    for epoch in range(8):  # one free set per big epoch, drawn again at the next
        assert len(set(masks[epoch * 5:(epoch + 1) * 5])) == 1
    assert len(set(masks)) > 1
    decoder = ActionDecoder(OPS, base)
    for config in configs:
        for name in set(DIMENSIONS) - set(config.extra["free"]):
            assert getattr(config, name) == getattr(base, name)
        assert decoder.nodes_range[0] <= config.max_nodes <= decoder.nodes_range[1]
    assert len({c.seed for c in configs}) == 40
    again = RandomStrategy(3, OPS, base, small_epochs=5)
    assert [again.propose() for _ in range(40)] == configs  # seeded


def test_nnsmith_default_strategy_changes_only_the_seed():
    """The second baseline: every proposal is the base config (NNSmith's defaults), seeds differ and
    follow from the strategy's own seed."""
    from higen.strategies import DefaultStrategy

    ops = ["core.ReLU", "core.Add", "core.Sin"]
    base = GenConfig(max_nodes=7)
    first = [DefaultStrategy(11, ops, base).propose() for _ in range(1)]
    strategy = DefaultStrategy(11, ops, base)
    configs = [strategy.propose() for _ in range(6)]
    assert configs[0] == first[0]  # seeded
    assert len({c.seed for c in configs}) == 6
    plain = {json.dumps({k: v for k, v in c.to_json().items() if k not in ("seed", "extra")}, sort_keys=True)
             for c in configs}
    assert len(plain) == 1 and json.loads(plain.pop())["max_nodes"] == base.max_nodes


def test_the_policy_learns_a_small_action_and_the_rest_is_drawn_as_the_baseline_draws_it(decoder):
    """SAC's action covers the learned dimensions only (7 numbers instead of ~100); every other block
    is a uniform draw in [-1, 1] from a generator seeded like the random baseline's, so what the
    policy leaves to chance (operators, dtypes, ranks, sizes) has the baseline's distribution."""
    from higen.generation.decoder import LEARNED, PartialAction

    partial = PartialAction(decoder, LEARNED, seed=4)
    assert partial.learned == ("max_nodes", "method", "vulnerable_ops", "input_search")
    assert partial.size == 1 + len(METHODS) + 1 + 1 == 7
    high = np.ones(partial.size)
    config = partial.decode(high, ALL, seed=1)  # the learned blocks come from the action
    assert (config.max_nodes, config.method, config.vulnerable_ops, config.input_search) == \
           (decoder.nodes_range[1], METHODS[0], True, True)
    uniform = np.setdiff1d(np.arange(decoder.size), partial.positions)
    full = PartialAction(decoder, LEARNED, seed=4).full(high)
    assert np.array_equal(full[partial.positions], high)
    assert np.array_equal(full[uniform], np.random.default_rng(4).uniform(-1.0, 1.0, decoder.size)[uniform])
    with pytest.raises(ValueError, match="learns 7"):
        partial.full(np.ones(decoder.size))

    # the same distribution of operator sets as the random baseline's (which decodes a uniform vector)
    random = RandomStrategy(4, OPS, decoder.base)
    ours = [len(partial.decode(high, ["ops"], seed=0).ops) for _ in range(300)]
    theirs = [len(decoder.decode(random.rng.uniform(-1.0, 1.0, decoder.size), ["ops"], seed=0).ops)
              for _ in range(300)]
    assert abs(np.mean(ours) - np.mean(theirs)) < 0.05 * len(OPS)
    assert abs(np.mean(ours) - len(OPS) / 2) < 0.05 * len(OPS) and np.std(ours) > 1

    everything = PartialAction(decoder, ALL, seed=4)  # learning every dimension: the decoder itself, no draw
    action = np.random.default_rng(2).uniform(-1, 1, decoder.size)
    state = everything.rng.bit_generator.state
    assert everything.decode(action, ALL, 3) == decoder.decode(action, ALL, 3)
    assert everything.rng.bit_generator.state == state
    with pytest.raises(ValueError, match="at least one dimension"):
        PartialAction(decoder, [], seed=0)
