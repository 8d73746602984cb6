"""Edges of avcot.rewards that a miscounted suffix or a missing check would change (found by tests/tools/mutate.py)."""
from __future__ import annotations

import functools
import math

import pytest

from avcot.rewards import (
    accuracy_reward,
    cer_reward,
    combine_rewards,
    count_words,
    format_reward,
    resolve_reward,
    length_reward,
    reward_name,
)

GOOD = "<think>看到猫</think><answer>A</answer>"


def test_three_rewards_with_one_name_get_numbered_keys() -> None:
    # the same reward three times with weights 1, 2, 4: keys name, name_2, name_3; total = 7 * value
    total, per = combine_rewards([(format_reward, 1.0), (format_reward, 2.0), (format_reward, 4.0)],
                                 [GOOD, "no tags"])
    assert list(per) == ["format_reward", "format_reward_2", "format_reward_3"]
    assert all(values == [1.0, 0.0] for values in per.values())
    assert total == [7.0, 0.0]


def test_combine_rewards_with_no_rewards_is_all_zero() -> None:
    assert combine_rewards([], ["a", "b"]) == ([0.0, 0.0], {})


def test_combine_rewards_negative_weight_subtracts() -> None:
    total, _ = combine_rewards([(format_reward, 1.0), (format_reward, -0.25)], [GOOD])
    assert total == [0.75]


def test_reward_name_through_nested_partials() -> None:
    assert reward_name(functools.partial(functools.partial(length_reward, min_words=1), max_words=3)) == "length_reward"


def test_cer_reward_length_mismatch_is_clear() -> None:
    with pytest.raises(ValueError, match="cer_reward: 2 completions but 1 references"):
        cer_reward(["a", "b"], references=["a"])


def test_cer_reward_is_floored_at_zero() -> None:
    # 4 insertions against a 1-token reference: CER 4 -> 1 - 4 < 0 -> 0.0; an exact match -> 1.0
    assert cer_reward(["你好世界啊", "差拨"], references=["啊", "差拨"]) == [0.0, 1.0]


def test_length_reward_at_the_bounds_is_one() -> None:
    # exactly min_words and exactly max_words are inside the band; one word outside is at distance 1
    values = length_reward(["字" * 4, "字" * 6, "字" * 3, "字" * 7], min_words=4, max_words=6, sigma=1.0)
    assert values == pytest.approx([1.0, 1.0, math.exp(-0.5), math.exp(-0.5)])


def test_length_reward_accepts_min_equal_to_max_and_zero_min() -> None:
    assert length_reward(["字"], min_words=1, max_words=1) == [1.0]
    assert length_reward([""], min_words=0, max_words=0) == [1.0]
    with pytest.raises(ValueError, match="min_words"):
        length_reward(["x"], min_words=-1)


def test_scoring_limit_is_200_000_characters() -> None:
    # one Latin word of exactly 200,000 letters is still tokenised and scored (1 token, exact match);
    # one letter more is past the limit and scores 0.0 untokenised, even against itself
    at, past = "a" * 200_000, "a" * 200_001
    assert cer_reward([at, past], references=[at, past]) == [1.0, 0.0]
    assert length_reward([at, past], min_words=1, max_words=1) == [1.0, 0.0]


def test_format_rejects_a_think_block_that_opens_with_a_second_think_tag() -> None:
    assert format_reward(["<think><think></think><answer>A</answer>"]) == [0.0]
    assert format_reward(["<think><answer></think><answer>A</answer>"]) == [0.0]


def test_accuracy_reward_length_mismatch_names_the_reward() -> None:
    with pytest.raises(ValueError, match="^accuracy_reward: 2 completions but 1 answers$"):
        accuracy_reward([GOOD, GOOD], answers=["A"])


def test_tags_separate_words() -> None:
    # a tag between two Latin words is a word break: abc and def count as two words, not one "abcdef"
    assert count_words("abc</think>def") == 2
    assert count_words("<answer>abc</answer>") == 1


def test_length_reward_defaults_are_16_512_and_64() -> None:
    # 16 and 512 words are inside; 15 and 513 are one word outside: exp(-(1/64)^2 / 2);
    # an empty completion is 16 words short: exp(-(16/64)^2 / 2) = exp(-1/32)
    values = length_reward(["字" * 16, "字" * 512, "字" * 15, "字" * 513, ""])
    edge = math.exp(-0.5 * (1 / 64) ** 2)
    assert values[:2] == [1.0, 1.0]
    assert values[2:4] == pytest.approx([edge, edge], rel=1e-12)
    assert values[2] < 1.0 and values[3] < 1.0
    assert values[4] == pytest.approx(math.exp(-1 / 32), rel=1e-12)


def test_resolve_reward_imports_a_dotted_path_and_names_what_is_wrong() -> None:
    assert resolve_reward("avcot.rewards.format_reward") is format_reward
    assert resolve_reward("functools.partial") is functools.partial  # any importable module.attribute
    with pytest.raises(ValueError, match="must be a dotted path"):
        resolve_reward("format_reward")
    with pytest.raises(ValueError, match="cannot import reward 'avcot.rewards.no_such_reward'"):
        resolve_reward("avcot.rewards.no_such_reward")
    with pytest.raises(ValueError, match="is not callable"):
        resolve_reward("avcot.rewards.MAX_SCORED_CHARS")
