"""Pinyin, homophone candidate sets and homophone spans between two ASR outputs.

The homophone lexicon is inverted from pypinyin's own data (``pinyin_dict``: every reading of every
character; ``phrases_dict``: ~47k phrases with their reading), built once per tone setting and
cached. A word's lookup key is its syllable tuple from ``pypinyin.lazy_pinyin`` (context-aware
for heteronyms). Syllables are spelled the pypinyin way: "lv" for lü, tone digits 1-5 with 5 for the
neutral tone, so every toned syllable ends in a digit.

Candidate sets are word-level: H("差拨") holds lexicon words read "chai bo" plus the word itself
(and any caller-supplied words with that reading); pypinyin's phrase data is not a complete
lexicon (about 47k phrases: 北京 and 食言 are in it, 实验 and 试验 are not), so sets can be small;
combinations of per-character homophones are not generated (they would explode combinatorially).
"""
from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from pypinyin import Style, lazy_pinyin
from pypinyin.contrib.tone_convert import to_normal, to_tone3

from avcot.text import align_tokens, is_cjk, join_tokens, tokenize_zh

PinyinStyle = Literal["digits", "marks"]

# Initials longest first so "zh" wins over "z".
_INITIALS = ("zh", "ch", "sh", "b", "p", "m", "f", "d", "t", "n", "l", "g", "k", "h", "j", "q", "x", "r",
             "z", "c", "s", "y", "w")
# Common Mandarin confusions (southern accents, fast speech): flat/retroflex, n/l, f/h, front/back nasals.
_FUZZY_INITIALS = {"zh": "z", "ch": "c", "sh": "s", "l": "n", "h": "f"}
_FUZZY_FINALS = {"iang": "ian", "uang": "uan", "ang": "an", "eng": "en", "ing": "in"}


@dataclass(frozen=True)
class Span:
    """A stretch where two ASR outputs differ but read the same (toneless) pinyin.

    Offsets are character offsets into ``normalize_zh`` of each input (end exclusive), so
    ``normalize_zh(hyp_a)[start_a:end_a] == text_a``.
    """

    start_a: int
    end_a: int
    start_b: int
    end_b: int
    text_a: str
    text_b: str
    pinyin: str
    """Shared toneless pinyin, space-separated."""


def _style(tones: bool, style: PinyinStyle) -> Style:
    """pypinyin Style for a tones/style choice."""
    if style not in ("digits", "marks"):
        raise ValueError(f"pinyin style must be 'digits' or 'marks', got {style!r}")
    if not tones:
        return Style.NORMAL
    return Style.TONE3 if style == "digits" else Style.TONE


def token_syllables(tokens: Sequence[str], tones: bool, style: PinyinStyle = "digits") -> list[str]:
    """One syllable per token; CJK runs go through pypinyin together so heteronyms get context."""
    pstyle = _style(tones, style)
    out: list[str] = []
    run: list[str] = []

    def flush() -> None:
        if not run:
            return
        syl = lazy_pinyin("".join(run), style=pstyle, neutral_tone_with_five=True, errors=list)
        out.extend(syl if len(syl) == len(run) else list(run))  # never misalign tokens and syllables
        run.clear()

    for tok in tokens:
        if len(tok) == 1 and is_cjk(tok):
            run.append(tok)
        else:
            flush()
            out.append(tok)
    flush()
    return out


def syllables(s: str, tones: bool = True, style: PinyinStyle = "digits") -> tuple[str, ...]:
    """Pinyin syllables of the normalised text; Latin words and numbers pass through as tokens."""
    return tuple(token_syllables(tokenize_zh(s), tones, style))


def pinyin(s: str, tones: bool = True, style: PinyinStyle = "digits") -> str:
    """Space-separated pinyin of `s` ("差拨" -> "chai1 bo1"; style="marks" -> "chāi bō")."""
    return " ".join(syllables(s, tones, style))


@functools.cache
def _convert_syllable(mark: str, tones: bool) -> str:
    """Tone-mark syllable from pypinyin's data -> the key spelling used by `syllables`."""
    return to_tone3(mark, neutral_tone_with_five=True) if tones else to_normal(mark)


@functools.cache
def _lexicon(tones: bool) -> dict[tuple[str, ...], frozenset[str]]:
    """Inverted lexicon: syllable tuple -> words with that reading (built once per tone setting)."""
    from pypinyin.phrases_dict import phrases_dict
    from pypinyin.pinyin_dict import pinyin_dict

    inverted: dict[tuple[str, ...], set[str]] = defaultdict(set)
    for code, readings in pinyin_dict.items():
        for reading in readings.split(","):
            inverted[(_convert_syllable(reading, tones),)].add(chr(code))
    for phrase, readings in phrases_dict.items():
        if len(readings) == len(phrase) and all(readings):
            inverted[tuple(_convert_syllable(r[0], tones) for r in readings)].add(phrase)
    return {key: frozenset(words) for key, words in inverted.items()}


def homophones(word: str, tones: bool = False, extra_words: Iterable[str] = ()) -> frozenset[str]:
    """Candidate set H(p): lexicon words sharing `word`'s (toneless by default) pinyin, plus `word`.

    pypinyin's phrase data is not a full lexicon (common words such as 试验 are absent), so callers
    can pass `extra_words` seen elsewhere (the other ASR output, OCR text); those with the same key join.
    """
    word = word.strip()
    if not word:
        return frozenset()
    key = tuple(token_syllables(list(word), tones))
    extra = {w for w in (x.strip() for x in extra_words) if w and tuple(token_syllables(list(w), tones)) == key}
    return _lexicon(tones).get(key, frozenset()) | {word} | extra


def split_syllable(syllable: str) -> tuple[str, str]:
    """(initial, final) of a toneless syllable: "zhuang" -> ("zh", "uang"); "an" -> ("", "an")."""
    for ini in _INITIALS:
        if syllable.startswith(ini) and len(syllable) > len(ini):
            return ini, syllable[len(ini):]
    return "", syllable


def _fuzzy(syllable: str) -> str:
    """Collapse the usual near-homophone confusions (zh~z, n~l, an~ang ...) of a toneless syllable."""
    ini, fin = split_syllable(syllable)
    return _FUZZY_INITIALS.get(ini, ini) + _FUZZY_FINALS.get(fin, fin)


def near_homophone(a: str, b: str) -> bool:
    """True when two texts read alike up to tones and common confusions (zh/z, n/l, f/h, -n/-ng)."""
    sa, sb = syllables(a, tones=False), syllables(b, tones=False)
    return bool(sa) and len(sa) == len(sb) and all(_fuzzy(x) == _fuzzy(y) for x, y in zip(sa, sb))


def _offsets(tokens: Sequence[str]) -> list[tuple[int, int]]:
    """(start, end) of each token inside join_tokens(tokens)."""
    spans: list[tuple[int, int]] = []
    pos = 0
    for i, tok in enumerate(tokens):
        if i and not is_cjk(tok[0]) and not is_cjk(tokens[i - 1][0]):
            pos += 1  # the space join_tokens puts between two word tokens
        spans.append((pos, pos + len(tok)))
        pos += len(tok)
    return spans


def diff_blocks(n_a: int, n_b: int, rows: list[tuple[str, str, str]]) -> list[tuple[int, int, int, int]]:
    """Maximal runs of non-equal alignment rows as (i0, i1, j0, j1) token ranges."""
    blocks: list[tuple[int, int, int, int]] = []
    i = j = 0
    start: tuple[int, int] | None = None
    for _, _, op in rows:
        if op == "equal":
            if start is not None:
                blocks.append((start[0], i, start[1], j))
                start = None
            i, j = i + 1, j + 1
            continue
        if start is None:
            start = (i, j)
        i += op in ("sub", "del")
        j += op in ("sub", "ins")
    if start is not None:
        blocks.append((start[0], n_a, start[1], n_b))
    return blocks


def _homophone_runs(block: tuple[int, int, int, int], py_a: list[str], py_b: list[str]):
    """Sub-ranges of a diff block whose pinyin agree: runs of substitutions with equal pinyin."""
    i0, i1, j0, j1 = block
    if i1 - i0 != j1 - j0:
        return []  # one syllable per token: blocks of unequal length never read alike token by token
    runs, k = [], 0
    while k < i1 - i0:
        if py_a[i0 + k] != py_b[j0 + k]:
            k += 1
            continue
        end = k
        while end < i1 - i0 and py_a[i0 + end] == py_b[j0 + end]:
            end += 1
        runs.append((i0 + k, i0 + end, j0 + k, j0 + end))
        k = end
    return runs


def ambiguous_spans(hyp_a: str, hyp_b: str) -> list[Span]:
    """Spans where two ASR outputs differ in characters but share toneless pinyin."""
    tok_a, tok_b = tokenize_zh(hyp_a), tokenize_zh(hyp_b)
    py_a, py_b = token_syllables(tok_a, False), token_syllables(tok_b, False)
    off_a, off_b = _offsets(tok_a), _offsets(tok_b)
    norm_a, norm_b = join_tokens(tok_a), join_tokens(tok_b)
    spans: list[Span] = []
    for block in diff_blocks(len(tok_a), len(tok_b), align_tokens(tok_a, tok_b)):
        for i0, i1, j0, j1 in _homophone_runs(block, py_a, py_b):
            sa, ea, sb, eb = off_a[i0][0], off_a[i1 - 1][1], off_b[j0][0], off_b[j1 - 1][1]
            spans.append(Span(sa, ea, sb, eb, norm_a[sa:ea], norm_b[sb:eb], " ".join(py_a[i0:i1])))
    return spans
