"""scoring="wenet": wenet tools/compute-cer.py --char=1 tokens and edit counts, derived by hand from its rules.

Rules used for the expected values (compute-cer.py, defaults --cs=0 --rt=1): its 17 marks
!,?、。！，；？：「」︰『』《》, spaces and Zs characters are skipped where a chunk would start; a Lo
character is a chunk; any other character starts a chunk that runs over ASCII up to whitespace or a
non-ASCII character; chunks are upper-cased, '<...>' removed, and an all-alphanumeric chunk is split
into its characters. Alignment ties go deletion, then insertion, then the diagonal.
"""
from __future__ import annotations

import jiwer
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from avcot.text import align, cer, scored_tokens, wenet_align_tokens, wenet_tokens

TOKENS = [
    # full-width parentheses are not among the 17 marks: each one is a chunk of its own
    ("（笑）你好", ["（", "笑", "）", "你", "好"]),
    ("你好，世界！", ["你", "好", "世", "界"]),  # ， and ！ are among the 17
    ("我用iPhone13拍的", ["我", "用", "I", "P", "H", "O", "N", "E", "1", "3", "拍", "的"]),
    ("3.14 don't", ["3.14", "DON'T"]),  # not alphanumeric: kept whole
    ("hello,world", ["HELLO,WORLD"]),  # ',' is skipped only where a chunk starts
    (",abc", ["A", "B", "C"]),
    ("ＡＢＣ１２", ["Ａ", "Ｂ", "Ｃ", "１", "２"]),  # no width folding; non-ASCII ends a chunk
    ("café", ["C", "A", "F", "É"]),  # 'é' is non-ASCII: "caf" and "é", both split
    ("“好”…", ["“", "好", "”", "…"]),
    ("<unk>你好<noise>", ["你", "好"]),  # tags removed, empty chunks dropped
    ("abc<unk>d", ["A", "B", "C", "D"]),  # one chunk "abc<unk>d", tag stripped inside it
    ("\u3000你 好\t", ["你", "好"]),  # ideographic space is Zs
    ("", []),
]


@pytest.mark.parametrize(("text", "expected"), TOKENS)
def test_wenet_tokens_table(text: str, expected: list[str]) -> None:
    assert wenet_tokens(text) == expected


def test_wenet_options_case_and_whitespace_chunks() -> None:
    assert wenet_tokens("iPad", case_sensitive=True) == ["i", "P", "a", "d"]
    # --char=0: chunks are whitespace-separated words; "你好，" is not alphanumeric, so one token
    assert wenet_tokens("你好， ab", tochar=False) == ["你好，", "A", "B"]
    assert wenet_tokens("<b>x</b>", remove_tags=False) == ["<B>", "X</B>"]


# (ref, hyp, (S, D, I), ref tokens)
EDITS = [
    # the case from the report: 3 deletions over 5 reference tokens here, 1 over 3 in avcot scoring
    ("（笑）你好", "你好", (0, 3, 0), 5),
    ("ＡＢＣ你好", "abc你好", (3, 0, 0), 5),  # Ａ vs A: full-width letters are other tokens
    ("3.14 don't", "3.14 dont", (1, 0, 3), 2),  # DON'T -> D, then O N T inserted
    ("我用iPhone13拍的", "我用iphone 13拍的", (0, 0, 0), 12),
    ("a a b", "a b", (0, 1, 0), 3),
    ("ab", "ba", (0, 1, 1), 2),  # tie: deletion first, so D+I rather than 2 S
    ("", "你好", (0, 0, 2), 0),
    ("你", "你好吗", (0, 0, 2), 1),  # two insertions after a hit: an insertion costs 1 in the cell it wins too
]


@pytest.mark.parametrize(("ref", "hyp", "sdi", "ref_len"), EDITS)
def test_wenet_edit_counts_table(ref: str, hyp: str, sdi: tuple[int, int, int], ref_len: int) -> None:
    r = cer(ref, hyp, scoring="wenet")
    assert (r.substitutions, r.deletions, r.insertions) == sdi
    assert r.ref_len == ref_len


def test_avcot_scoring_of_the_same_pair_is_unchanged() -> None:
    r = cer("（笑）你好", "你好")  # default: punctuation dropped, 笑 deleted
    assert (r.errors, r.ref_len) == (1, 3)
    assert cer("（笑）你好", "你好", scoring="avcot") == r
    assert cer("（笑）你好", "你好", scoring="wenet").cer == pytest.approx(3 / 5)


def test_align_under_wenet_scoring() -> None:
    assert align("（笑）你好", "你好", scoring="wenet") == [
        ("（", "", "del"), ("笑", "", "del"), ("）", "", "del"), ("你", "你", "equal"), ("好", "好", "equal")]


def test_wenet_alignment_prefers_an_insertion_to_a_tied_substitution() -> None:
    # last cell of 你 / 我们: insertion (1 + 1) ties the substitution (1 + 1); compute-cer.py's order takes the
    # insertion there, so the trace-back pairs 你 with 我 and inserts 们 (not: insert 我, substitute 你 -> 们)
    assert wenet_align_tokens(["你"], ["我", "们"]) == [("你", "我", "sub"), ("", "们", "ins")]


def test_unknown_scoring_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="scoring must be one of"):
        scored_tokens("你好", scoring="kaldi")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="expects str"):
        wenet_tokens(None)  # type: ignore[arg-type]


mixed = st.text(alphabet="你好世界差拨abcAB12 .,!?（）《》，。<>ＡＢé…", max_size=14)


def _edit_distance(a: list[str], b: list[str]) -> int:
    """Independent edit distance: jiwer over one placeholder word per distinct token."""
    if not a or not b:
        return len(a) + len(b)
    ids: dict[str, str] = {}
    words = [[ids.setdefault(t, f"w{len(ids)}") for t in side] for side in (a, b)]
    out = jiwer.process_words(" ".join(words[0]), " ".join(words[1]))
    return out.substitutions + out.deletions + out.insertions


@settings(max_examples=150, deadline=None)
@given(mixed, mixed)
def test_wenet_alignment_is_minimal_and_covers_both_sides(a: str, b: str) -> None:
    ta, tb = wenet_tokens(a), wenet_tokens(b)
    rows = wenet_align_tokens(ta, tb)
    assert [r for r, _, op in rows if op != "ins"] == ta
    assert [h for _, h, op in rows if op != "del"] == tb
    r = cer(a, b, scoring="wenet")
    assert r.errors == _edit_distance(ta, tb)
    assert r.hits + r.substitutions + r.deletions == r.ref_len == len(ta)
