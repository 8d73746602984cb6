"""Render/parse round trips and lenient parsing of model output (avcot.traces)."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from avcot.traces import (
    AVCoTTrace,
    extract_transcription,
    merge_traces,
    parse_answer,
    parse_avcot,
    render_avcot,
    render_think_answer,
    split_think_answer,
)

TRACE = AVCoTTrace(
    visual_cues="古装剧场景；背景招牌写着“差拨”。",
    acoustic_pinyin="lin2 chong1 dui4 chai1 bo1 shuo1",
    reasoning="chai bo 可能是“柴伯”或“差拨”，招牌支持“差拨”。",
    transcription="林冲对差拨说",
)


def test_render_layout() -> None:
    text = render_avcot(TRACE)
    assert text.splitlines() == [
        "Multimodal Perceive:", "Visual Cues:", TRACE.visual_cues, "Acoustic Analysis:",
        TRACE.acoustic_pinyin, "Disambiguation Reasoning:", TRACE.reasoning, "Transcription:",
        TRACE.transcription,
    ]


def test_round_trip() -> None:
    assert parse_avcot(render_avcot(TRACE)) == TRACE


def test_parse_markdown_and_fullwidth_colon() -> None:
    text = ("**Visual Cues**: 招牌\n### Acoustic Analysis：chai1 bo1\n- Disambiguation Reasoning: 选差拨\n"
            "**Transcription:** “林冲对差拨说”\n")
    parsed = parse_avcot(text)
    assert parsed == AVCoTTrace("招牌", "chai1 bo1", "选差拨", "林冲对差拨说")


def test_repeated_transcription_header_takes_last() -> None:
    assert extract_transcription("Transcription: 草稿\nTranscription:\n定稿") == "定稿"


def test_parse_without_transcription_is_none() -> None:
    assert parse_avcot("Visual Cues: 只有画面") is None
    assert parse_avcot("Transcription:\n   \n") is None
    assert parse_avcot(None) is None  # type: ignore[arg-type]


def test_extract_transcription_fallback_last_line() -> None:
    assert extract_transcription("我想了想。\n\n林冲对差拨说\n  \n") == "林冲对差拨说"
    assert extract_transcription("") == ""
    assert extract_transcription("<answer>你好</answer>") == "你好"
    assert extract_transcription(123) == ""  # type: ignore[arg-type]


def test_render_think_answer() -> None:
    assert render_think_answer(" 先看后听 ", "B") == "<think>\n先看后听\n</think>\n<answer>B</answer>"
    with pytest.raises(ValueError, match="think/answer tag"):
        render_think_answer("x </think> y", "B")
    with pytest.raises(ValueError, match="empty answer"):
        render_think_answer("x", " ")


@pytest.mark.parametrize(("text", "letter"), [
    ("<think>x</think><answer>B</answer>", "B"),
    ("<answer> (C) </answer>", "C"),
    ("<answer>D. 一只猫</answer>", "D"),
    ("<answer>Answer: A</answer>", "A"),
    ("<answer>选项B</answer>", "B"),
    ("<answer>b</answer>", "B"),
    ("<answer>【A】</answer>", "A"),
    ("<answer>A</answer> then <answer>C</answer>", "C"),
    ("<answer>a cat</answer>", None),
    ("<answer>E</answer>", None),
    ("<answer>Both</answer>", None),
    ("The answer is B", None),
    ("<answer>B", None),
    ("", None),
])
def test_parse_answer(text: str, letter: str | None) -> None:
    assert parse_answer(text) == letter


def test_split_think_answer() -> None:
    assert split_think_answer("<think> 看到猫 </think><answer>A</answer>") == ("看到猫", "A")
    assert split_think_answer("no tags <answer>B</answer>") == ("no tags", "B")


def test_split_think_answer_keeps_every_think_block() -> None:
    two = "<think>先看画面：招牌写着实验</think>\n<think> 再听：shi yan </think><answer>B</answer>"
    assert split_think_answer(two) == ("先看画面：招牌写着实验\n\n再听：shi yan", "B")
    assert split_think_answer("<think> </think><think>x</think><answer>A</answer>") == ("x", "A")  # empty block
    assert split_think_answer("<THINK>大写</THINK><ANSWER>c</ANSWER>") == ("大写", "C")


def test_split_think_answer_drops_stray_tags_from_the_reasoning() -> None:
    assert split_think_answer("<think>a<think>b</think><answer>C</answer>") == ("a b", "C")  # nested opening
    assert split_think_answer("<think>没有闭合 <answer>A</answer>") == ("没有闭合", "A")  # unclosed think
    assert split_think_answer("reason </answer> <answer>D</answer>") == ("reason", "D")


@pytest.mark.parametrize("value", [None, b"<think>x</think><answer>A</answer>", 7, ["<answer>A</answer>"]])
def test_split_think_answer_non_str(value: object) -> None:
    assert split_think_answer(value) == ("", None)  # type: ignore[arg-type]


@pytest.mark.parametrize(("text", "letter"), [
    ("<answer>x<answer>B</answer>", "B"),  # the last opening tag that is closed
    ("<answer>A</answer><answer>C", "A"),  # an unclosed last tag is no answer
    ("<answer>A</answer></answer>", "A"),
    ("<Answer>answer is (C)</Answer>", "C"),
    ("<answer>Answer  is ：  D</answer>", "D"),
    ("<answer>optional</answer>", None),
    ("<answer>answer" + " " * 5000 + "x</answer>", None),  # backtracked cubically in the old regex
])
def test_parse_answer_edges(text: str, letter: str | None) -> None:
    assert parse_answer(text) == letter


def test_clean_line_strips_quotes_and_markdown_in_any_order() -> None:
    assert extract_transcription("Transcription: * “林冲对差拨说” *") == "林冲对差拨说"
    assert extract_transcription("想一想\n` 林冲 `\n**\n\n") == "林冲"
    assert extract_transcription("<ANSWER>你好</ANSWER>") == "你好"


def test_merge_traces_fills_answers_from_teacher_outputs() -> None:
    prompt = merge_traces("什么动物？", ["猫", "狗"], "<think>画面里有猫</think><answer>A</answer>",
                          "<think>听到喵喵叫</think><answer>A</answer>")
    assert '<data name="visual_reasoning">\n画面里有猫\n</data>' in prompt
    assert '<data name="audio_answer">\nA\n</data>' in prompt
    unparsed = merge_traces("q", ["x", "y"], "看不出", "听不出", audio_answer="B")
    assert '<data name="visual_answer">\n(none)\n</data>' in unparsed
    assert '<data name="audio_answer">\nB\n</data>' in unparsed


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="林冲对差拨说abcXYZ 123\t", min_size=1, max_size=30).filter(str.strip))
def test_round_trip_any_single_line_transcription(line: str) -> None:
    assert extract_transcription(render_avcot(AVCoTTrace("v", "p", "r", line))) == line.strip()
