"""Data filters of both methods: dual-ASR disagreement, offline ambiguity judge, OCR split, teacher checks.

Departures from the papers, on purpose:
- The CAVSR paper asks an LLM whether two ASR outputs disagree because of linguistic ambiguity.
  ``ambiguity_rule`` is an offline, deterministic stand-in: it keeps homophone / near-homophone /
  proper-noun (Latin or digit token) conflicts and discards punctuation-, filler- or length-only
  differences and unrelated substitutions. An LLM judge can replace it behind the same Judgement.
- ``classify_ocr`` is a scored heuristic (bottom band, horizontal centring, persistence, pinyin
  overlap with the speech) in place of the paper's model-based OCR split.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from avcot.phonetics import diff_blocks, near_homophone, syllables, token_syllables
from avcot.records import LETTERS, OcrBox
from avcot.text import align_tokens, cer, is_cjk, normalize_zh, tokenize_zh
from avcot.traces import parse_answer

OcrLabel = Literal["subtitle", "background"]
Difficulty = Literal["easy", "medium", "hard"]

# Disfluencies and particles whose insertion/deletion is not a linguistic ambiguity.
FILLERS = frozenset({
    "嗯", "啊", "呃", "额", "哦", "噢", "呀", "吧", "呢", "嘛", "哈", "唉", "诶", "欸", "哎", "了", "的",
    "那个", "这个", "就是", "然后", "um", "uh", "er", "ah", "oh", "hmm", "mm",
})
SUBTITLE_BAND = 0.7
"""A box whose vertical centre lies below this fraction of the frame height is in the subtitle band."""
SUBTITLE_SCORE = 1.5
"""Score at or above which a box is called a subtitle (see classify_ocr)."""


@dataclass(frozen=True)
class Judgement:
    """Keep/discard decision with a short machine-readable reason."""

    keep: bool
    reason: str


def dual_asr_keep(asr_a: str, asr_b: str) -> bool:
    """The paper's rule: keep iff 0 < CER(asr_a, asr_b) < 1 on normalised text."""
    rate = cer(asr_a, asr_b).cer
    return 0.0 < rate < 1.0


def _segment_texts(tok_a: list[str], tok_b: list[str]) -> list[tuple[str, str]]:
    """(text_a, text_b) of each differing block between two token lists."""
    rows = align_tokens(tok_a, tok_b)
    return [("".join(tok_a[i0:i1]), "".join(tok_b[j0:j1])) for i0, i1, j0, j1 in diff_blocks(
        len(tok_a), len(tok_b), rows)]


def _has_word_token(text: str) -> bool:
    """True when `text` holds a Latin word or number token (names, models, brands)."""
    return any(not is_cjk(t[0]) for t in tokenize_zh(text))


def _is_filler(text: str) -> bool:
    """True when `text` is a filler word or all its tokens are ('' counts as filler: nothing was said)."""
    return text in FILLERS or all(t in FILLERS for t in tokenize_zh(text))


def _classify_segment(a: str, b: str) -> str:
    """Label one differing segment: homophone, near-homophone, proper-noun, filler, length, unrelated."""
    if a and b:
        if syllables(a, tones=False) == syllables(b, tones=False):
            return "homophone"
        if near_homophone(a, b):
            return "near-homophone"
        if _has_word_token(a) or _has_word_token(b):
            return "proper-noun"
        return "unrelated"
    if _is_filler(a) and _is_filler(b):
        return "filler"
    return "length"


def ambiguity_rule(asr_a: str, asr_b: str) -> Judgement:
    """Offline Keep/Discard: keep disagreements that come from linguistic ambiguity only."""
    tok_a, tok_b = tokenize_zh(asr_a), tokenize_zh(asr_b)
    if tok_a == tok_b:
        return Judgement(False, "identical after normalization (punctuation/whitespace only)")
    labels = [_classify_segment(a, b) for a, b in _segment_texts(tok_a, tok_b)]
    for keep_label in ("homophone", "near-homophone", "proper-noun"):
        if keep_label in labels:
            return Judgement(True, f"{keep_label} conflict")
    if "unrelated" in labels:
        return Judgement(False, "unrelated substitution (recognition error, not ambiguity)")
    if all(label == "filler" for label in labels):
        return Judgement(False, "filler-only difference")
    return Judgement(False, "length-only difference (insertions/deletions)")


def _matches_speech(box_syl: Sequence[str], speech_syl: Sequence[str]) -> bool:
    """>= 60% of the box's syllables are heard and >= 50% of the speech's syllables are shown (as multisets)."""
    if not box_syl or not speech_syl:
        return False
    shared = sum((Counter(box_syl) & Counter(speech_syl)).values())
    return shared / len(box_syl) >= 0.6 and shared / len(speech_syl) >= 0.5


def _persistent(box: OcrBox, boxes: Sequence[OcrBox], n_frames: int) -> bool:
    """Same text on >= 3 frames and >= 75% of the sampled frames: static scene text or a logo."""
    key = normalize_zh(box.text)
    frames = {b.frame for b in boxes if normalize_zh(b.text) == key}
    return len(frames) >= 3 and len(frames) >= 0.75 * n_frames


def _box_score(box: OcrBox, boxes: Sequence[OcrBox], frame_size: tuple[int, int],
               speech: Sequence[str], n_frames: int) -> float:
    """Subtitle score: band +1, matches speech +1, centred +0.5, persistent non-speech -1."""
    width, height = frame_size
    x0, y0, x1, y1 = box.box
    speech_match = _matches_speech(token_syllables(tokenize_zh(box.text), False), speech)
    score = 1.0 * ((y0 + y1) / 2 >= SUBTITLE_BAND * height)
    score += 1.0 * speech_match
    score += 0.5 * (abs((x0 + x1) / 2 - width / 2) <= 0.15 * width)
    score -= 1.0 * (_persistent(box, boxes, n_frames) and not speech_match)
    return score


def classify_ocr(boxes: Sequence[OcrBox], frame_size: tuple[int, int],
                 transcript: str) -> list[tuple[OcrBox, OcrLabel]]:
    """Split OCR boxes into spoken subtitles and background text.

    frame_size is (width, height) in pixels. A box is a subtitle when its score reaches
    SUBTITLE_SCORE: +1 in the bottom band, +1 when its pinyin matches the speech (>= 60% of its
    syllables heard and >= 50% of the speech shown), +0.5 when horizontally centred, -1 when the
    same text persists over most frames without matching the speech (logos, static signs).
    """
    width, height = frame_size
    if width <= 0 or height <= 0:
        raise ValueError(f"classify_ocr: frame_size must be positive (width, height), got {frame_size}")
    speech = syllables(transcript, tones=False)
    n_frames = len({b.frame for b in boxes})
    return [(box, "subtitle" if _box_score(box, boxes, frame_size, speech, n_frames) >= SUBTITLE_SCORE
             else "background") for box in boxes]


def _letter(answer: str | None) -> str | None:
    """A bare letter, or the letter parsed from a completion; None when there is none."""
    if answer is None:
        return None
    bare = answer.strip().strip("().").upper()
    return bare if bare in LETTERS else parse_answer(answer)


def both_teachers_correct(visual_answer: str | None, audio_answer: str | None, gold: str) -> bool:
    """AVRT keep rule: both teachers' answers (letters or full completions) equal the gold letter."""
    if gold not in LETTERS:
        raise ValueError(f"gold answer must be one of {LETTERS}, got {gold!r}")
    return _letter(visual_answer) == gold and _letter(audio_answer) == gold


def difficulty(visual_ok: bool, audio_ok: bool) -> Difficulty:
    """easy: both teachers right; medium: exactly one; hard: neither."""
    right = int(bool(visual_ok)) + int(bool(audio_ok))
    return ("hard", "medium", "easy")[right]
