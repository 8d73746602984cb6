"""Thresholds and branches of avcot.filters pinned at their edges (found by tests/tools/mutate.py).

Frame 640 x 480: the subtitle band starts at 0.7 * 480 = 336, "centred" means |centre x - 320| <= 0.15 * 640 = 96.
Scores: band +1, speech match +1, centred +0.5, persistent non-speech -1; subtitle at >= 1.5.
"""
from __future__ import annotations

import pytest

from avcot.filters import ambiguity_rule, both_teachers_correct, classify_ocr
from avcot.records import OcrBox

W, H = 640, 480
SPEECH = "林冲对柴伯说"  # lin chong dui chai bo shuo: 6 syllables


def _label(boxes: list[OcrBox], transcript: str = SPEECH, index: int = 0) -> str:
    return classify_ocr(boxes, (W, H), transcript)[index][1]


def test_box_centred_exactly_on_the_band_edge_is_in_the_band() -> None:
    # vertical centre (316 + 356) / 2 = 336 = 0.7 * 480: in band (+1) + centred (+0.5) = 1.5 -> subtitle
    assert _label([OcrBox("出口", (270, 316, 370, 356), 0)]) == "subtitle"
    # one pixel higher, centre 335: out of the band, 0.5 -> background
    assert _label([OcrBox("出口", (270, 315, 370, 355), 0)]) == "background"


def test_box_centre_exactly_96_px_off_the_middle_is_centred() -> None:
    # centre x (376 + 456) / 2 = 416 = 320 + 96: centred (+0.5) + band (+1) = 1.5 -> subtitle
    assert _label([OcrBox("出口", (376, 430, 456, 470), 0)]) == "subtitle"
    # centre 417: not centred, band only = 1.0 -> background
    assert _label([OcrBox("出口", (378, 430, 456, 470), 0)]) == "background"
    # the same distance to the left: centre 224 = 320 - 96 -> centred
    assert _label([OcrBox("出口", (184, 430, 264, 470), 0)]) == "subtitle"


def test_speech_match_at_exactly_60_percent_heard_and_50_percent_shown() -> None:
    # 林冲对天气: 3 of its 5 syllables heard (0.6), 3 of the 6 speech syllables shown (0.5): a match.
    # top, centred: match +1 + centred +0.5 = 1.5 -> subtitle; without the match it would be 0.5
    assert _label([OcrBox("林冲对天气", (220, 20, 420, 60), 0)]) == "subtitle"
    # 林冲天气好: 2 of 5 heard (0.4) -> no match -> 0.5 -> background
    assert _label([OcrBox("林冲天气好", (220, 20, 420, 60), 0)]) == "background"
    # 林冲对: all 3 heard; it shows 3 of 6 speech syllables (0.5, a match) but only 3 of 7 of 林冲对柴伯说话
    assert _label([OcrBox("林冲对", (220, 20, 420, 60), 0)]) == "subtitle"
    assert _label([OcrBox("林冲对", (220, 20, 420, 60), 0)], "林冲对柴伯说话") == "background"


def test_repeated_syllables_are_counted_once_per_occurrence() -> None:
    # box 对对对对对: 5 syllables "dui"; speech has one "dui": 1 of 5 heard (0.2) -> no match (multiset, not set)
    assert _label([OcrBox("对对对对对", (220, 20, 420, 60), 0)]) == "background"


def _logo_on(frames: list[int], total_frames: int) -> str:
    """Label of a centred bottom logo (unrelated to speech) shown on `frames` of `total_frames` sampled frames."""
    boxes = [OcrBox("新闻频道", (270, 430, 370, 460), f) for f in frames]
    boxes += [OcrBox("别的", (10, 10, 60, 40), f) for f in range(total_frames) if f not in frames]
    return _label(boxes)


def test_persistence_needs_three_frames_and_three_quarters_of_them() -> None:
    # persistent: band +1 + centred +0.5 - 1 = 0.5 -> background; otherwise 1.5 -> subtitle
    assert _logo_on([0, 1, 2], 4) == "background"  # 3 frames, 3 >= 0.75 * 4
    assert _logo_on([0, 1], 2) == "subtitle"  # 100% of the frames, but only 2
    assert _logo_on([0, 1, 2], 5) == "subtitle"  # 3 frames, 3 < 0.75 * 5 = 3.75
    assert _logo_on([0, 1, 2, 3], 5) == "background"  # 4 >= 3.75


def test_persistent_text_that_matches_speech_is_not_penalised() -> None:
    # the spoken line repeated on 4 of 4 frames: band 1 + match 1 + centred 0.5 = 2.5, no -1 (it is speech)
    boxes = [OcrBox(SPEECH, (170, 420, 470, 460), f) for f in range(4)]
    assert [label for _, label in classify_ocr(boxes, (W, H), SPEECH)] == ["subtitle"] * 4


def test_persistence_compares_normalised_text() -> None:
    # "新闻频道" and "新闻 频道！" normalise alike: 3 of 4 frames -> persistent -> background
    boxes = [OcrBox("新闻频道", (270, 430, 370, 460), 0), OcrBox("新闻 频道！", (270, 430, 370, 460), 1),
             OcrBox("新闻频道", (270, 430, 370, 460), 2), OcrBox("别的", (10, 10, 60, 40), 3)]
    assert _label(boxes) == "background"


def test_matching_text_in_a_top_corner_is_background() -> None:
    # the whole spoken sentence, but top-left: speech match alone scores 1.0 < 1.5
    assert _label([OcrBox("林冲对差拨说", (10, 10, 200, 40), 0)]) == "background"


def test_a_long_box_that_shows_all_the_speech_but_is_mostly_unheard_is_no_match() -> None:
    # box 林冲对天气很好啊: 3 of its 8 syllables heard (0.375 < 0.6) although all 3 speech syllables are shown
    assert _label([OcrBox("林冲对天气很好啊", (220, 20, 420, 60), 0)], "林冲对") == "background"


def test_no_transcript_means_no_speech_match() -> None:
    # top, centred: 0.5 without a match; an empty transcript cannot match anything
    assert _label([OcrBox("你好", (270, 20, 370, 60), 0)], "") == "background"
    assert _label([OcrBox("，。", (270, 20, 370, 60), 0)], "你好") == "background"  # a box with no syllable


@pytest.mark.parametrize(("a", "b"), [
    ("那个我去北京", "我去北京"),  # a two-character filler word (its characters alone are not fillers)
    ("嗯啊我去北京", "我去北京"),  # two one-character fillers in a row
    ("我去北京um", "我去北京"),  # a Latin filler
])
def test_filler_insertions_are_discarded_as_filler_only(a: str, b: str) -> None:
    judgement = ambiguity_rule(a, b)
    assert (judgement.keep, judgement.reason) == (False, "filler-only difference")


@pytest.mark.parametrize("size", [(0, 480), (640, 0), (-640, 480), (640, -1)])
def test_classify_ocr_rejects_a_frame_without_area(size: tuple[int, int]) -> None:
    with pytest.raises(ValueError, match="frame_size"):
        classify_ocr([], size, "")


def test_classify_ocr_accepts_a_one_pixel_frame() -> None:
    # 1 x 1 is valid: a box covering it is centred (+0.5) but its centre y 0.5 is above the band (0.7) -> 0.5
    assert classify_ocr([OcrBox("字", (0, 0, 1, 1), 0)], (1, 1), "")[0][1] == "background"


@pytest.mark.parametrize(("visual", "audio"), [
    ("(B)", "B."),  # bare letters wrapped in brackets or followed by a period
    ("(b).", " b "),  # lower case and spaces
])
def test_both_teachers_correct_accepts_decorated_bare_letters(visual: str, audio: str) -> None:
    assert both_teachers_correct(visual, audio, "B")
    assert not both_teachers_correct(visual, audio, "C")
