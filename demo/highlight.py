"""Homophone spans of a transcription, as (text, label) segments for `gr.HighlightedText`.

A heuristic for display, not the data pipeline's `ambiguous_spans` (that needs two ASR outputs; the
demo has one transcription): a run of 2-4 CJK characters whose toneless pinyin is shared by other
words of the lexicon (`avcot.phonetics.homophones`) is marked, labelled with those other words.
Without a word segmenter a span can straddle two words ("次实" in "这次实验" sounds like 磁石), so
spans that are lexicon words themselves are chosen first, then longer ones, then those with more
candidates. The lexicon is pypinyin's phrase list, so common words it lacks (实验, 视频) are found only
through their homophones and have fewer candidates than a full dictionary would give. Single characters
are not marked: nearly every Mandarin syllable has dozens of homophone characters, so marking them
would mark everything.
"""
from __future__ import annotations

from dataclasses import dataclass

from avcot.text import is_cjk

MAX_WORD = 4
MAX_CANDIDATES = 5


@dataclass(frozen=True)
class HomophoneMark:
    """A span of the transcription that sounds like other words."""

    start: int
    end: int
    text: str
    candidates: tuple[str, ...]
    """Other words with the same toneless pinyin (sorted, at most MAX_CANDIDATES)."""


def _candidates(word: str) -> tuple[str, ...]:
    from avcot.phonetics import homophones

    return tuple(sorted(homophones(word) - {word}))[:MAX_CANDIDATES]


def _in_lexicon(word: str, others: tuple[str, ...]) -> bool:
    """True if `word` is itself a lexicon word: then it is among the homophones of its homophones."""
    from avcot.phonetics import homophones

    return bool(others) and word in homophones(others[0])


def _all_spans(text: str) -> list[tuple[bool, HomophoneMark]]:
    """Every 2-4 character CJK span with homophones, flagged when it is a lexicon word."""
    found = []
    for i in range(len(text)):
        for size in range(2, MAX_WORD + 1):
            word = text[i:i + size]
            if len(word) < size or not all(is_cjk(c) for c in word):
                break
            others = _candidates(word)
            if others:
                found.append((_in_lexicon(word, others), HomophoneMark(i, i + size, word, others)))
    return found


def _rank(flagged: tuple[bool, HomophoneMark]) -> tuple:
    known, mark = flagged
    return (not known, -(mark.end - mark.start), -len(mark.candidates), mark.start)


def homophone_marks(text: str) -> list[HomophoneMark]:
    """Non-overlapping homophone spans of `text`, in order.

    Lexicon words win over spans that merely sound like one (those often straddle two words), then
    longer spans, then spans with more candidates (a real word's reading is shared more often), then
    earlier ones.
    """
    ranked = sorted(_all_spans(text), key=_rank)
    taken = [False] * len(text)
    chosen: list[HomophoneMark] = []
    for _, mark in ranked:
        if not any(taken[mark.start:mark.end]):
            taken[mark.start:mark.end] = [True] * (mark.end - mark.start)
            chosen.append(mark)
    return sorted(chosen, key=lambda m: m.start)


def highlight_segments(text: str) -> list[tuple[str, str | None]]:
    """`text` cut into (segment, label) pairs; label is "sounds like: a / b" on homophone spans."""
    segments: list[tuple[str, str | None]] = []
    pos = 0
    for mark in homophone_marks(text):
        if mark.start > pos:
            segments.append((text[pos:mark.start], None))
        segments.append((mark.text, "sounds like: " + " / ".join(mark.candidates)))
        pos = mark.end
    if pos < len(text):
        segments.append((text[pos:], None))
    return segments
