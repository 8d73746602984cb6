"""Edges of avcot.traces' parsers that a one-token change would alter (found by tests/tools/mutate.py)."""
from __future__ import annotations

import pytest

from avcot.traces import (
    extract_transcription,
    merge_traces,
    parse_answer,
    parse_avcot,
    render_think_answer,
    split_think_answer,
)


def test_multimodal_perceive_is_a_header_that_ends_the_section_before_it() -> None:
    trace = parse_avcot("Visual Cues: 招牌写着实验\nMultimodal Perceive: 总结一下\nTranscription: 你好")
    assert trace is not None
    assert trace.visual_cues == "招牌写着实验"
    assert trace.transcription == "你好"


def test_transcription_lines_are_joined_with_a_space() -> None:
    trace = parse_avcot("Transcription:\nhello\nworld")
    assert trace is not None and trace.transcription == "hello world"


def test_stray_tags_in_a_transcription_separate_words() -> None:
    trace = parse_avcot("Transcription: iPhone</answer>13")
    assert trace is not None and trace.transcription == "iPhone 13"
    # the last-line fallback treats a stray tag the same way
    assert extract_transcription("想一想\nabc</think>def") == "abc def"


@pytest.mark.parametrize(("text", "letter"), [
    ('<answer>"B"</answer>', "B"),  # wrapping quotes
    ("<answer>**B**</answer>", "B"),  # markdown bold
    ("<answer>( B )</answer>", "B"),  # bracket then space
    ("<answer>答案：C</answer>", "C"),  # the Chinese keyword
    ("<answer>**Answer: D**</answer>", "D"),  # markdown before the keyword
    ("<answer>Answer:A</answer>", "A"),  # no space after the colon
    ("<answer>选项：B</answer>", "B"),
])
def test_parse_answer_skips_decoration_and_keywords(text: str, letter: str) -> None:
    assert parse_answer(text) == letter


def test_render_think_answer_names_the_part_with_a_tag() -> None:
    with pytest.raises(ValueError, match="render_think_answer: think text contains"):
        render_think_answer("x <answer> y", "B")
    with pytest.raises(ValueError, match="render_think_answer: answer text contains"):
        render_think_answer("x", "<think>B")


@pytest.mark.parametrize(("text", "letter"), [
    ("<answer>答案：（B）</answer>", "B"),  # full-width bracket after a keyword
    ("<answer>Answer: [C]</answer>", "C"),
    ("<answer>Answer: 【D】</answer>", "D"),
    ("<answer>Both of them</answer>", None),  # a word starting with B is not option B
    ("<answer>Be it so</answer>", None),
    ("<answer>B, because</answer>", "B"),
])
def test_parse_answer_letter_then_what_follows(text: str, letter: str | None) -> None:
    assert parse_answer(text) == letter


def test_split_think_answer_without_think_removes_only_the_answer_block() -> None:
    assert split_think_answer("先想<answer>B</answer>再想") == ("先想再想", "B")


def test_merge_traces_without_letters_says_none_for_both() -> None:
    # neither teacher output has an <answer>: both answers are "(none)"
    prompt = merge_traces("Q?", ["x", "y"], "visual reasoning", "audio reasoning")
    assert '<data name="visual_answer">\n(none)\n</data>' in prompt
    assert '<data name="audio_answer">\n(none)\n</data>' in prompt


@pytest.mark.parametrize(("text", "letter"), [
    ("<answer>答案：选项B</answer>", "B"),  # 'answer: option B': one keyword after another
    ("<answer>Answer is option C</answer>", "C"),
    ("<answer>The answer: option (D)</answer>", None),  # 'The' is no keyword, so nothing is skipped
    ("<answer>answer: Option: [A]</answer>", "A"),
])
def test_parse_answer_reads_the_letter_after_consecutive_keywords(text: str, letter: str | None) -> None:
    assert parse_answer(text) == letter


@pytest.mark.parametrize(("text", "letter"), [
    ("<answer>Answer isB</answer>", "B"),  # only whitespace may follow 'is', and none is needed
    ("<answer>answer is-B</answer>", None),  # a dash is not skipped: '-' is no option letter
])
def test_parse_answer_after_is(text: str, letter: str | None) -> None:
    assert parse_answer(text) == letter
