"""Typed records that cross module boundaries (manifests, pipeline stages, training, eval).

Every record is a frozen dataclass: stages return new records instead of mutating rows,
and no loose dicts travel between modules.
"""
from __future__ import annotations

from dataclasses import dataclass, field

LETTERS = ("A", "B", "C", "D")


@dataclass(frozen=True)
class Clip:
    """One CAVSR manifest row: a clip with its reference transcript."""

    id: str
    video: str | None
    """Path to the video (mp4); None for audio-only rows."""
    audio: str | None
    """Path to a 16 kHz wav; None means: take the audio stream of `video`."""
    text: str
    """Reference transcript (Mandarin)."""
    pinyin: str = ""
    """Tone-digit pinyin of `text` (synthetic clips carry it; may be empty)."""
    cue: str = ""
    """Which visual cue decides the homophone: background | subtitle | scene | conflict | none."""
    trace: str | None = None
    """Rendered AV-CoT trace used as the SFT target; None trains on the plain transcript."""


@dataclass(frozen=True)
class McqItem:
    """One multiple-choice audio-visual question (AVRT)."""

    id: str
    question: str
    options: tuple[str, ...]
    """Option texts in letter order (A, B, C, D)."""
    answer: str
    """Correct letter, one of LETTERS."""
    video: str | None = None
    audio: str | None = None
    image: str | None = None
    trace: str | None = None
    """Merged `<think>…</think><answer>X</answer>` target for the SFT cold start."""
    modality: str = "av"
    """Which streams the question needs: a | v | av."""
    difficulty: str | None = None
    """easy | medium | hard, from teacher correctness (None when unknown)."""


@dataclass(frozen=True)
class OcrBox:
    """One text box found by OCR on one sampled frame."""

    text: str
    box: tuple[float, float, float, float]
    """(x0, y0, x1, y1) in pixels, origin top-left."""
    frame: int = 0
    """Index of the sampled frame the box was found on."""
    score: float = 1.0


@dataclass(frozen=True)
class Reject:
    """A row that a batch job refused, with where and why; written to a rejects table."""

    row_id: str
    stage: str
    reason: str
    source: str = ""
    """File (manifest, media) the row came from."""


@dataclass(frozen=True)
class Generation:
    """One generated output for one input row (predict, eval, demo)."""

    id: str
    text: str
    extracted: str = ""
    """Parsed transcription (CAVSR) or answer letter (MCQ); empty when nothing parsed."""
    extra: dict = field(default_factory=dict, hash=False, compare=False)
