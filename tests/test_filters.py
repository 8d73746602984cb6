"""Filters: dual-ASR rule, offline ambiguity judge, OCR split, teacher checks (avcot.filters)."""
from __future__ import annotations

import pytest

from avcot.filters import ambiguity_rule, both_teachers_correct, classify_ocr, difficulty, dual_asr_keep
from avcot.records import OcrBox


@pytest.mark.parametrize(("a", "b", "keep"), [
    ("我在实验室工作", "我在试验室工作", True),  # CER 1/7
    ("差拨", "柴伯", False),  # CER 1.0: total disagreement is discarded
    ("你好，世界！", "你好世界", False),  # CER 0 after normalisation
    ("", "", False),
    ("", "你好", False),  # empty reference: CER 1.0
])
def test_dual_asr_keep(a: str, b: str, keep: bool) -> None:
    assert dual_asr_keep(a, b) is keep


@pytest.mark.parametrize(("a", "b", "keep", "reason"), [
    ("我在实验室工作", "我在试验室工作", True, "homophone"),
    ("林冲对差拨说", "林冲对柴伯说", True, "homophone"),
    ("我知道了", "我资道了", True, "near-homophone"),
    ("我用iPhone拍的", "我用爱疯拍的", True, "proper-noun"),
    ("你好，世界", "你好世界。", False, "identical"),
    ("嗯我去北京", "我去北京", False, "filler"),
    ("我去北京", "我去北京吧", False, "filler"),
    ("我今天去北京", "我去北京", False, "length-only"),
    ("我去北京", "我去上海", False, "unrelated"),
])
def test_ambiguity_rule(a: str, b: str, keep: bool, reason: str) -> None:
    judgement = ambiguity_rule(a, b)
    assert judgement.keep is keep
    assert judgement.reason.startswith(reason)


def test_ambiguity_rule_keep_wins_over_noise() -> None:
    # a filler insertion beside a homophone conflict: still a linguistic ambiguity worth keeping
    assert ambiguity_rule("嗯林冲对差拨说", "林冲对柴伯说").keep


W, H = 640, 480


def _box(text: str, box: tuple[float, float, float, float], frame: int = 0) -> OcrBox:
    return OcrBox(text=text, box=box, frame=frame)


def _labels(boxes: list[OcrBox], transcript: str) -> list[str]:
    return [label for _, label in classify_ocr(boxes, (W, H), transcript)]


def test_subtitle_matching_speech_in_bottom_band() -> None:
    # band +1, speech match (ASR wrote 柴伯, pinyin still matches) +1, centred +0.5 = 2.5
    boxes = [_box("林冲对差拨说", (170, 420, 470, 460), f) for f in range(4)]
    assert _labels(boxes, "林冲对柴伯说") == ["subtitle"] * 4


def test_short_sign_with_the_key_word_is_background() -> None:
    # top-left sign "差拨": heard 100%, but shows only 2 of 6 speech syllables -> no match; score 0
    assert _labels([_box("差拨", (10, 10, 80, 40))], "林冲对柴伯说") == ["background"]


def test_persistent_bottom_logo_is_background() -> None:
    # centred bottom watermark on every frame, unrelated to speech: 1 + 0.5 - 1 = 0.5
    boxes = [_box("新闻频道", (270, 430, 370, 460), f) for f in range(4)]
    assert _labels(boxes, "林冲对柴伯说") == ["background"] * 4


def test_changing_bottom_caption_without_speech_match_is_subtitle() -> None:
    # centred bottom text seen on one frame only: 1 + 0.5 = 1.5 -> subtitle (speech may be garbled)
    boxes = [_box("今天天气很好", (220, 420, 420, 460), 0), _box("别的", (10, 10, 60, 40), 1),
             _box("别的", (10, 10, 60, 40), 2), _box("别的", (10, 10, 60, 40), 3)]
    assert _labels(boxes, "林冲对柴伯说") == ["subtitle", "background", "background", "background"]


def test_bottom_corner_text_is_background() -> None:
    # in band but not centred, no speech match, not persistent: score 1.0
    assert _labels([_box("出口", (10, 430, 80, 470))], "林冲对柴伯说") == ["background"]


def test_top_subtitle_matching_speech() -> None:
    # speech match + centred = 1.5 even outside the bottom band
    assert _labels([_box("林冲对差拨说", (170, 20, 470, 60))], "林冲对柴伯说") == ["subtitle"]


def test_classify_ocr_bad_frame_size() -> None:
    with pytest.raises(ValueError, match="frame_size"):
        classify_ocr([], (0, 480), "")


def test_classify_ocr_empty_transcript_and_no_boxes() -> None:
    assert classify_ocr([], (W, H), "你好") == []
    assert _labels([_box("你好", (10, 10, 60, 40))], "") == ["background"]


@pytest.mark.parametrize(("visual", "audio", "gold", "expected"), [
    ("B", "B", "B", True),
    ("<think>x</think><answer>(B)</answer>", " b ", "B", True),
    ("B", "C", "B", False),
    (None, "B", "B", False),
    ("<think>no tag</think>", "B", "B", False),
])
def test_both_teachers_correct(visual: str | None, audio: str, gold: str, expected: bool) -> None:
    assert both_teachers_correct(visual, audio, gold) is expected


def test_both_teachers_correct_bad_gold() -> None:
    with pytest.raises(ValueError, match="gold answer"):
        both_teachers_correct("A", "A", "E")


def test_difficulty() -> None:
    assert difficulty(True, True) == "easy"
    assert difficulty(True, False) == "medium"
    assert difficulty(False, True) == "medium"
    assert difficulty(False, False) == "hard"
