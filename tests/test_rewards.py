"""Hand-computed rewards (avcot.rewards)."""
from __future__ import annotations

import functools
import math
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from avcot.rewards import (
    MAX_SCORED_CHARS,
    RewardInputs,
    accuracy_reward,
    avcot_format_reward,
    combine_rewards,
    completion_text,
    count_words,
    cer_reward,
    format_reward,
    format_valid_rate,
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


def test_avcot_format_reward_wants_every_section_filled() -> None:
    from avcot.traces import AVCoTTrace, render_avcot

    whole = render_avcot(AVCoTTrace(visual_cues="字幕：他的发言", acoustic_pinyin="ta1 de5 fa1 yan2",
                                    reasoning="画面显示“发言”。", transcription="他的发言"))
    no_reasoning = whole.replace("画面显示“发言”。", "")
    no_transcription = whole.rsplit("\n", 1)[0]  # the Transcription header, nothing after it
    completions = [whole, no_reasoning, no_transcription, "他的发言", None, [{"role": "assistant", "content": whole}]]
    assert avcot_format_reward(completions) == [1.0, 0.0, 0.0, 0.0, 0.0, 1.0]


def test_format_valid_rate_counts_the_runs_own_format() -> None:
    from avcot.traces import AVCoTTrace, render_avcot

    trace = render_avcot(AVCoTTrace(visual_cues="字幕：他的发言", acoustic_pinyin="ta1 de5 fa1 yan2",
                                    reasoning="画面显示“发言”。", transcription="他的发言"))
    texts = [trace, trace, "他的发言"]
    _, per_func = combine_rewards([(cer_reward, 1.0), (avcot_format_reward, 1.0)], texts,
                                  RewardInputs(references=("他的发言",) * 3))
    assert format_valid_rate(texts, per_func) == 2 / 3  # AV-CoT traces, not <think>/<answer> (none here)
    _, per_func = combine_rewards([(cer_reward, 1.0)], texts, RewardInputs(references=("他的发言",) * 3))
    assert format_valid_rate(texts, per_func) == 0.0  # no format reward: the <think>/<answer> format
    assert format_valid_rate([GOOD, "x"], {"accuracy_reward": [1.0, 0.0]}) == 0.5


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
        completions, RewardInputs(references=("x", "y"), answers=("A", "B")),
    )
    assert per == {"format_reward": [1.0, 0.0], "accuracy_reward": [1.0, 1.0], "format_reward_2": [1.0, 0.0]}
    assert total == pytest.approx([1.0 + 2.0 + 0.5, 0.0 + 2.0 + 0.0])


def test_combine_rewards_checks_lengths() -> None:
    def broken(completions, **kw):
        return [1.0]

    with pytest.raises(ValueError, match="broken returned 1 values for 2 completions"):
        combine_rewards([(broken, 1.0)], ["a", "b"])


def test_combine_rewards_passes_only_the_reward_fields() -> None:
    seen: list[dict] = []

    def spy(completions, **kw):
        seen.append(kw)
        return [0.0] * len(completions)

    combine_rewards([(spy, 1.0)], ["a", "b"], RewardInputs(references=("r", "s")))
    combine_rewards([(spy, 1.0)], ["a", "b"], RewardInputs(references=("r", "s"), answers=("A", "B")))
    combine_rewards([(spy, 1.0)], ["a"])
    assert seen == [{"references": ("r", "s")}, {"references": ("r", "s"), "answers": ("A", "B")}, {}]
    with pytest.raises(ValueError, match="2 completions but reward inputs for 1"):
        combine_rewards([(spy, 1.0)], ["a", "b"], RewardInputs(references=("r",)))


def test_reward_inputs_repeat_per_completion() -> None:
    inputs = RewardInputs(references=("x", "y"), answers=("A", "C")).repeat(3)
    assert inputs.answers == ("A", "A", "A", "C", "C", "C") and inputs.references == ("x",) * 3 + ("y",) * 3
    assert RewardInputs(references=("x",)).repeat(2) == RewardInputs(references=("x", "x"), answers=None)


def test_accuracy_reward_without_answers_says_it_needs_mcq() -> None:
    with pytest.raises(ValueError, match="accuracy_reward: no answers"):
        combine_rewards([(accuracy_reward, 1.0)], [GOOD], RewardInputs(references=("差拨",)))


# The format check as it was written first, a lazy two-block regex: fine on short strings, the
# oracle for the string-scanning rewrite (which must agree on every input).
_FORMAT_ORACLE = re.compile(r"\s*<think>(.*?)</think>\s*<answer>(.*?)</answer>\s*", re.DOTALL)
_TAG_ORACLE = re.compile(r"</?(?:think|answer)>")


def _oracle_format_ok(text: str) -> bool:
    m = _FORMAT_ORACLE.fullmatch(text)
    return (m is not None and not _TAG_ORACLE.search(m.group(1)) and not _TAG_ORACLE.search(m.group(2))
            and bool(m.group(2).strip()))


FORMAT_PIECES = ["<think>", "</think>", "<answer>", "</answer>", "<ANSWER>", "A", "想", " ", "\n", "\u3000", "x"]


@settings(max_examples=1000, deadline=None, database=None)
@given(st.lists(st.sampled_from(FORMAT_PIECES), max_size=12).map("".join))
def test_format_reward_agrees_with_the_regex_oracle(text: str) -> None:
    assert format_reward([text]) == [float(_oracle_format_ok(text))]


def test_completion_text_never_raises_on_odd_completions() -> None:
    deep: list = [{"content": GOOD}]
    for _ in range(100_000):  # the old recursive unwrap hit the recursion limit here
        deep = [deep]
    assert completion_text(deep) == ""
    assert completion_text([[{"content": GOOD}]]) == ""  # only a flat message list is a completion
    assert completion_text(({"role": "user", "content": "q"}, {"content": GOOD})) == GOOD
    assert completion_text(b"<answer>A</answer>") == "" and count_words(None) == 0  # type: ignore[arg-type]


def test_cer_and_length_rewards_skip_overlong_completions() -> None:
    """Past MAX_SCORED_CHARS non-blank characters the two tokenising rewards give 0.0 (documented)."""
    words = "字" * 20  # 20 words: inside [16, 512], so the length reward is 1.0 when scored
    fits, over = words + "。" * (MAX_SCORED_CHARS - len(words)), words + "。" * (MAX_SCORED_CHARS + 1)
    assert length_reward([fits, over]) == [1.0, 0.0]
    assert cer_reward([fits, over], references=[words, words]) == [1.0, 0.0]


def test_whitespace_floods_are_still_scored_exactly() -> None:
    flood = "字" * 10 + " \n\t\u3000" * MAX_SCORED_CHARS + "字" * 10
    assert count_words(flood) == 20 and length_reward([flood]) == [1.0]
    one_line = flood.replace("\n", " ")  # the transcription fallback is the last line
    assert cer_reward([one_line], references=["字" * 20]) == [1.0]


def test_cer_reward_rejects_a_reference_that_is_not_text() -> None:
    with pytest.raises(TypeError, match=r"references\[1\] is NoneType, expected str"):
        cer_reward(["a", "b"], references=["a", None])
