"""Hand-computed cases and properties for avcot.text (normalisation, tokens, CER, alignment)."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from avcot.text import CerResult, align, cer, corpus_cer, normalize_zh, to_simplified, tokenize_zh

zh_text = st.text(alphabet="实验室试验差拨柴伯我你他她的了 ，。！？abcAB12", max_size=20)


@pytest.mark.parametrize(("raw", "expected"), [
    ("《差拨》说：“好！”", "差拨说好"),
    ("ＡＢＣ１２３，你好～…", "abc123你好"),
    ("我用 iPhone，13 拍的！", "我用iphone 13拍的"),
    ("Hello   World!!", "hello world"),
    ("3.14 don't 1,000 e-mail", "314 dont 1000 email"),
    ("a,b", "a b"),
    (" \t\n", ""),
    ("你好😀世界", "你好世界"),
])
def test_normalize_zh_cases(raw: str, expected: str) -> None:
    assert normalize_zh(raw) == expected


def test_tokens_one_per_cjk_char_one_per_latin_word() -> None:
    assert tokenize_zh("我用iPhone 13拍的") == ["我", "用", "iphone", "13", "拍", "的"]


def test_t2s_converts_common_traditional() -> None:
    assert normalize_zh("這是我們的學校。", t2s=True) == "这是我们的学校"
    assert normalize_zh("這是", t2s=False) == "這是"
    assert to_simplified("說話") == "说话"


def test_cer_homophone_pair_is_fully_wrong() -> None:
    result = cer("差拨", "柴伯")
    assert (result.errors, result.ref_len, result.substitutions) == (2, 2, 2)
    assert result.cer == 1.0


def test_cer_one_char_of_three() -> None:
    assert cer("实验室", "试验室").cer == pytest.approx(1 / 3)


def test_sdi_counts_hand_example() -> None:
    # ref 我爱北京天安门 / hyp 啊我爱被京天门: equal lengths, so insertions == deletions; with none the
    # position-wise alignment costs 6, with one of each: 啊 inserted (I), 北->被 (S), 安 deleted (D) = 3.
    result = cer("我爱北京天安门", "啊我爱被京天门")
    assert result == CerResult(errors=3, ref_len=7, substitutions=1, deletions=1, insertions=1, hits=5)
    assert result.cer == pytest.approx(3 / 7)


def test_cer_ignores_punctuation_and_case() -> None:
    assert cer("你好，World！", "你好world").cer == 0.0


def test_latin_word_is_one_token() -> None:
    result = cer("我用iphone拍", "我用ipad拍")
    assert (result.ref_len, result.substitutions) == (4, 1)


def test_empty_reference_rules() -> None:
    assert cer("", "").cer == 0.0
    empty_vs_text = cer("", "你好")
    assert (empty_vs_text.insertions, empty_vs_text.cer) == (2, 1.0)
    assert cer("，。", "").cer == 0.0


def test_corpus_cer_is_total_errors_over_total_length() -> None:
    result = corpus_cer(["差拨", "实验室"], ["柴伯", "试验室"])
    assert (result.errors, result.ref_len) == (3, 5)
    assert result.cer == pytest.approx(3 / 5)  # not the mean of 1.0 and 1/3


def test_corpus_cer_length_mismatch_is_clear() -> None:
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        corpus_cer(["a", "b"], ["a"])


def test_align_rows() -> None:
    assert align("我爱北京天安门", "我爱被京天门") == [
        ("我", "我", "equal"), ("爱", "爱", "equal"), ("北", "被", "sub"), ("京", "京", "equal"),
        ("天", "天", "equal"), ("安", "", "del"), ("门", "门", "equal"),
    ]
    assert align("", "啊") == [("", "啊", "ins")]


def test_tokenize_rejects_non_str() -> None:
    with pytest.raises(TypeError, match="expects str"):
        tokenize_zh(None)  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_normalize_idempotent(s: str) -> None:
    once = normalize_zh(s)
    assert normalize_zh(once) == once
    assert tokenize_zh(once) == tokenize_zh(s)


@settings(max_examples=200, deadline=None)
@given(zh_text, zh_text)
def test_cer_bounds_and_symmetric_edit_distance(a: str, b: str) -> None:
    ab, ba = cer(a, b), cer(b, a)
    assert ab.errors == ba.errors  # edit distance is symmetric
    assert ab.deletions - ab.insertions == ba.insertions - ba.deletions  # = len(a) - len(b) in tokens
    assert ab.hits + ab.substitutions + ab.deletions == ab.ref_len
    assert ab.hits + ab.substitutions + ab.insertions == len(tokenize_zh(b))
    assert 0.0 <= ab.cer
    if ab.ref_len:
        assert ab.cer <= max(ab.ref_len, len(tokenize_zh(b))) / ab.ref_len
    assert (ab.cer == 0.0) == (normalize_zh(a) == normalize_zh(b))


@settings(max_examples=100, deadline=None)
@given(zh_text, zh_text)
def test_align_reconstructs_both_sides(a: str, b: str) -> None:
    rows = align(a, b)
    assert [r for r, _, op in rows if op != "ins"] == tokenize_zh(a)
    assert [h for _, h, op in rows if op != "del"] == tokenize_zh(b)


def test_bench_core_smoke() -> None:
    """bench/bench_core.py runs end to end on 200 rows and prints one line per stage."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).parents[1] / "bench" / "bench_core.py"
    out = subprocess.run([sys.executable, str(script), "--rows", "200"], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    for stage in ("normalize+cer", "pinyin", "homophones", "parse_avcot", "parse_answer"):
        line = next(row for row in out.splitlines() if row.startswith(stage))
        assert line.split()[1] == "200" and float(line.split()[-1].replace(",", "")) > 0
