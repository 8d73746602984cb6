"""Edges of avcot.rewards that a miscounted suffix or a missing check would change (found by tests/tools/mutate.py)."""
from __future__ import annotations

import functools
import math

import pytest

from avcot.rewards import cer_reward, combine_rewards, format_reward, length_reward, reward_name

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
