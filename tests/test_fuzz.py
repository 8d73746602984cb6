"""Fuzz: parsers and rewards never raise and stay in range on >= 10,000 generated strings.

Strings are built from random text mixed with the fragments the parsers look for (headers,
tags, letters, colons), so the fuzzing reaches the parsing branches, not only the fallbacks.
Budget: 3000 + 2500 + 2500 + 1500 + 1000 + 1500 = 12,000 examples.
"""
from __future__ import annotations

import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from avcot.filters import Judgement
from avcot.phonetics import ambiguous_spans
from avcot.pipeline.chat_roles import parse_verdict
from avcot.records import LETTERS
from avcot.rewards import (
    RewardInputs,
    accuracy_reward,
    cer_reward,
    combine_rewards,
    format_reward,
    length_reward,
)
from avcot.text import cer, normalize_zh
from avcot.traces import AVCoTTrace, extract_transcription, parse_answer, parse_avcot, split_think_answer

FRAGMENTS = [
    "Multimodal Perceive:", "Visual Cues:", "Acoustic Analysis：", "Disambiguation Reasoning:", "Transcription:",
    "**Transcription**:", "### transcription :", "<think>", "</think>", "<answer>", "</answer>", "<ANSWER>",
    "A", "B", "c", "D", "(B)", "B.", "Answer: ", "选项", "\n", "\n\n", " ", "：", "“", "”", "*", "`",
    "差拨", "柴伯", "实验室", "iPhone 13", "，", "。", "\u0301", "\u200b", "\x00", "\ud7ff", "\ud800", "😀",
    "VERDICT: ", "KEEP", "discard", "<THINK>",
]
fuzz_text = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=12)), max_size=10).map("".join)
FUZZ = settings(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


@settings(FUZZ, max_examples=3000)
@given(fuzz_text)
def test_trace_parsers_never_raise(text: str) -> None:
    parsed = parse_avcot(text)
    assert parsed is None or (isinstance(parsed, AVCoTTrace) and parsed.transcription.strip())
    extracted = extract_transcription(text)
    assert isinstance(extracted, str) and "\n" not in extracted
    if parsed is not None:
        assert extracted == parsed.transcription


@settings(FUZZ, max_examples=2500)
@given(fuzz_text)
def test_parse_answer_in_range(text: str) -> None:
    letter = parse_answer(text)
    assert letter is None or letter in LETTERS
    if "<answer>" not in text.lower():
        assert letter is None


@settings(FUZZ, max_examples=2500)
@given(fuzz_text, st.sampled_from(LETTERS), fuzz_text)
def test_rewards_in_range(completion: str, gold: str, reference: str) -> None:
    batch = [completion, [{"role": "assistant", "content": completion}]]
    for values in (
        format_reward(batch),
        accuracy_reward(batch, answers=[gold, gold]),
        cer_reward(batch, references=[reference, reference]),
        length_reward(batch, min_words=2, max_words=20, sigma=5.0),
    ):
        assert len(values) == 2 and values[0] == values[1]
        assert all(0.0 <= v <= 1.0 and not math.isnan(v) for v in values)
    total, per = combine_rewards([(format_reward, 1.0), (accuracy_reward, 1.0)], batch,
                                 RewardInputs(references=(gold, gold), answers=(gold, gold)))
    assert all(0.0 <= t <= 2.0 for t in total) and set(per) == {"format_reward", "accuracy_reward"}
    if format_reward([completion]) == [1.0]:
        assert completion.strip().startswith("<think>") and completion.strip().endswith("</answer>")


@settings(FUZZ, max_examples=1500)
@given(fuzz_text, fuzz_text)
def test_text_metrics_never_raise(a: str, b: str) -> None:
    result = cer(a, b)
    assert result.cer >= 0.0 and result.errors >= 0
    assert normalize_zh(normalize_zh(a)) == normalize_zh(a)


@settings(FUZZ, max_examples=1000)
@given(fuzz_text, fuzz_text)
def test_ambiguous_spans_never_raise(a: str, b: str) -> None:
    for span in ambiguous_spans(a, b):
        assert span.text_a != span.text_b and span.pinyin


@settings(FUZZ, max_examples=1500)
@given(fuzz_text)
def test_think_answer_split_and_judge_verdict_never_raise(text: str) -> None:
    reasoning, letter = split_think_answer(text)
    assert letter == parse_answer(text)
    assert isinstance(reasoning, str) and reasoning == reasoning.strip()
    assert not any(tag in reasoning.lower() for tag in ("<think>", "</think>", "<answer>", "</answer>"))
    try:
        verdict = parse_verdict(text)
    except ValueError as exc:  # the intended reject, which quotes the reply
        assert "judge reply" in str(exc)
    else:
        assert isinstance(verdict, Judgement) and verdict.reason.startswith("llm: ")
