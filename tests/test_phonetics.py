"""Hand-checked pinyin, homophone sets and ambiguous spans (avcot.phonetics)."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from avcot.phonetics import Span, ambiguous_spans, homophones, near_homophone, pinyin, split_syllable, syllables
from avcot.text import normalize_zh


def test_pinyin_styles() -> None:
    assert pinyin("差拨") == "chai1 bo1"
    assert pinyin("差拨", style="marks") == "chāi bō"
    assert pinyin("差拨", tones=False) == "chai bo"
    assert pinyin("柴伯") == "chai2 bo2"


def test_pinyin_neutral_tone_is_five_and_lv() -> None:
    assert pinyin("绿了吧") == "lv4 le5 ba5"


def test_pinyin_uses_context_for_heteronyms() -> None:
    assert pinyin("银行") == "yin2 hang2"
    assert pinyin("行走") == "xing2 zou3"


def test_pinyin_keeps_latin_and_digits_and_drops_punctuation() -> None:
    assert pinyin("你好，iPhone 13！") == "ni3 hao3 iphone 13"


def test_pinyin_bad_style() -> None:
    with pytest.raises(ValueError, match="digits"):
        pinyin("你好", style="ipa")  # type: ignore[arg-type]


def test_homophones_include_lexicon_words_and_the_word() -> None:
    shiyan = homophones("实验")
    assert {"实验", "食言", "食盐"} <= shiyan  # all read "shi yan" in pypinyin's phrase data
    assert "食盐" in homophones("食言", tones=True)  # both shi2 yan2
    assert "实验" not in homophones("食言")  # not in pypinyin's phrase data, so not a candidate ...
    assert "实验" in homophones("食言", extra_words=["实验", "北京", " "])  # ... unless the caller saw it
    assert "北京" not in homophones("食言", extra_words=["北京"])  # bei jing is not shi yan
    assert homophones("柴伯") >= {"柴伯", "差拨"}  # 柴伯 is not in the lexicon; 差拨 reads chai bo


def test_homophones_tones_narrow_the_set() -> None:
    toneless, toned = homophones("差拨"), homophones("差拨", tones=True)
    assert toned <= toneless
    assert "差拨" not in homophones("柴伯", tones=True)  # chai1 bo1 vs chai2 bo2
    assert "事" in homophones("是", tones=True)  # both shi4
    assert "诗" in homophones("是") and "诗" not in homophones("是", tones=True)  # shi1 vs shi4


def test_homophones_empty_word() -> None:
    assert homophones("  ") == frozenset()


def test_split_syllable() -> None:
    assert split_syllable("zhuang") == ("zh", "uang")
    assert split_syllable("an") == ("", "an")
    assert split_syllable("shi") == ("sh", "i")


def test_near_homophone() -> None:
    assert near_homophone("知道", "资道")  # zh ~ z
    assert near_homophone("男", "蓝")  # n ~ l
    assert near_homophone("山", "伤")  # an ~ ang
    assert not near_homophone("北京", "南京")
    assert not near_homophone("", "")


def test_ambiguous_spans_single_char() -> None:
    assert ambiguous_spans("我在实验室工作", "我在试验室工作") == [Span(2, 3, 2, 3, "实", "试", "shi")]


def test_ambiguous_spans_word_and_offsets_in_normalised_text() -> None:
    spans = ambiguous_spans("林冲对《差拨》说", "林冲对柴伯说。")
    assert spans == [Span(3, 5, 3, 5, "差拨", "柴伯", "chai bo")]


def test_ambiguous_spans_skip_non_homophone_differences() -> None:
    assert ambiguous_spans("我去北京", "我去南京") == []
    assert ambiguous_spans("你好", "你好") == []
    assert ambiguous_spans("他说的话", "她说的") == [Span(0, 1, 0, 1, "他", "她", "ta")]


def test_ambiguous_spans_offsets_after_latin_tokens() -> None:
    spans = ambiguous_spans("用 iPhone 拍照片", "用iphone拍招片")
    assert spans == [Span(8, 9, 8, 9, "照", "招", "zhao")]


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet="实验室试验差拨柴伯他她是事诗我 ab", max_size=12),
       st.text(alphabet="实验室试验差拨柴伯他她是事诗我 ab", max_size=12))
def test_ambiguous_spans_properties(a: str, b: str) -> None:
    na, nb = normalize_zh(a), normalize_zh(b)
    for span in ambiguous_spans(a, b):
        assert na[span.start_a:span.end_a] == span.text_a
        assert nb[span.start_b:span.end_b] == span.text_b
        assert span.text_a != span.text_b
        assert " ".join(syllables(span.text_b, tones=False)) == span.pinyin
