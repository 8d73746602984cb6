"""Hand-computed rewards (avcot.rewards)."""
from __future__ import annotations

import functools
import math

import pytest

from avcot.rewards import (
    accuracy_reward,
    combine_rewards,
    completion_text,
    count_words,
    cer_reward,
    format_reward,
    length_reward,
)

GOOD = "<think>看到猫</think><answer>A</answer>"


@pytest.mark.parametrize(("text", "expected"), [
    (GOOD, 1.0),
    ("  \n<think>\nx\n</think>\n\n<answer> B </answer>\n", 1.0),
    ("<think></think><answer>A</answer>", 1.0),
    ("<think>x</think><answer> </answer>", 0.0),  # empty answer
    ("Sure! " + GOOD, 0.0),  # text before
    (GOOD + " done", 0.0),  # text after
    ("<think>x</think>between<answer>A</answer>", 0.0),
    ("<think>a<think>b</think><answer>A</answer>", 0.0),  # nested think
    ("<think>x</think><answer>A</answer><answer>B</answer>", 0.0),  # two answers
    ("<answer>A</answer>", 0.0),
    ("<think>x</think>", 0.0),
    ("", 0.0),
])
def test_format_reward(text: str, expected: float) -> None:
    assert format_reward([text]) == [expected]


def test_conversational_completions() -> None:
    convo = [{"role": "assistant", "content": GOOD}]
    assert format_reward([convo, {"content": GOOD}, None, 7]) == [1.0, 1.0, 0.0, 0.0]
    assert completion_text([]) == ""


def test_accuracy_reward() -> None:
    completions = [GOOD, "<think>x</think><answer>(B)</answer>", "<answer>C</answer>", "A"]
    assert accuracy_reward(completions, answers=["A", "A", "c", "A"]) == [1.0, 0.0, 1.0, 0.0]


def test_accuracy_reward_length_mismatch() -> None:
    with pytest.raises(ValueError, match="2 completions but 1 answers"):
        accuracy_reward([GOOD, GOOD], answers=["A"])


def test_cer_reward() -> None:
    avcot = "Visual Cues:\n招牌\nTranscription:\n林冲对柴伯说"  # 2 of 6 wrong -> 1 - 1/3
    completions = ["实验室", avcot, "完全不同的一句话啊", ""]
    references = ["试验室", "林冲对差拨说", "差拨", "你好"]
    assert cer_reward(completions, references=references) == pytest.approx([2 / 3, 2 / 3, 0.0, 0.0])


def test_count_words() -> None:
    assert count_words("<think>我用iPhone 13拍的</think><answer>A</answer>") == 7  # 我 用 iphone 13 拍 的 a


def test_length_reward_hand_values() -> None:
    inside, short, long_ = "字" * 5, "字" * 2, "字" * 10
    values = length_reward([inside, short, long_], min_words=4, max_words=6, sigma=2.0)
    # short: d = 2 -> exp(-(2/2)^2/2) = exp(-0.5); long: d = 4 -> exp(-(4/2)^2/2) = exp(-2)
    assert values == pytest.approx([1.0, math.exp(-0.5), math.exp(-2.0)])


def test_length_reward_bad_params() -> None:
    with pytest.raises(ValueError, match="min_words"):
        length_reward(["x"], min_words=5, max_words=2)
    with pytest.raises(ValueError, match="sigma"):
        length_reward(["x"], sigma=0)


def test_combine_rewards_weighted_sum_and_names() -> None:
    completions = [GOOD, "<answer>B</answer>"]
    total, per = combine_rewards(
        [(format_reward, 1.0), (accuracy_reward, 2.0), (functools.partial(format_reward), 0.5)],
        completions, answers=["A", "B"], references=["x", "y"],
    )
    assert per == {"format_reward": [1.0, 0.0], "accuracy_reward": [1.0, 1.0], "format_reward_2": [1.0, 0.0]}
    assert total == pytest.approx([1.0 + 2.0 + 0.5, 0.0 + 2.0 + 0.0])


def test_combine_rewards_checks_lengths() -> None:
    def broken(completions, **kw):
        return [1.0]

    with pytest.raises(ValueError, match="broken returned 1 values for 2 completions"):
        combine_rewards([(broken, 1.0)], ["a", "b"])
