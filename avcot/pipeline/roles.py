"""Pipeline roles (judge, trace writer, teachers, merger) and their typed requests/replies.

A role is what a stage needs done; a backend is who does it. Every role has an offline rule
implementation (``rules``) and a chat-model implementation (``chat_roles``) behind the same
Protocol, so a config switches between them without touching the stages.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from avcot.filters import Judgement
from avcot.records import McqItem


@dataclass(frozen=True)
class OcrText:
    """One OCR box after the subtitle/background split, as stored in a pipeline row."""

    text: str
    label: str
    """subtitle | background"""
    box: tuple[float, float, float, float]
    frame: int = 0
    score: float = 1.0


@dataclass(frozen=True)
class OcrSplit:
    """On-screen text already sorted by a vision-language model (no boxes: the model reads whole frames)."""

    subtitles: tuple[str, ...]
    """Text that shows what is being said."""
    background: tuple[str, ...]
    """Watermarks, logos, signs, text on objects."""


@dataclass(frozen=True)
class HomophoneCandidates:
    """One ambiguous stretch: what was heard and the words that read that way."""

    pinyin: str
    """Toneless pinyin of the stretch, space-separated."""
    options: tuple[str, ...]
    """Candidate words (the two ASR readings first, then lexicon homophones)."""


@dataclass(frozen=True)
class AnnotationRequest:
    """Everything the AV-CoT trace writer sees for one clip (all of it is untrusted data).

    `reference` is "" for a raw clip: the writer's transcription then becomes the training target.
    """

    row_id: str
    reference: str
    pinyin: str
    caption: str
    ocr: tuple[OcrText, ...]
    candidates: tuple[HomophoneCandidates, ...]
    asr_a: str = ""
    asr_b: str = ""
    audio: str | None = None
    """Media file whose audio track the writer may hear (the clip's audio, else its video)."""
    video: str | None = None
    """Video file the writer may sample frames from (only when its settings ask for frames)."""

    def texts(self, label: str) -> tuple[str, ...]:
        """Distinct OCR texts with the given label, in first-seen order."""
        seen: dict[str, None] = {}
        for o in self.ocr:
            if o.label == label:
                seen.setdefault(o.text, None)
        return tuple(seen)


@dataclass(frozen=True)
class TeacherReply:
    """One teacher's reasoning and the letter it chose (None when it could not decide)."""

    reasoning: str
    answer: str | None


@runtime_checkable
class AmbiguityJudge(Protocol):
    """Decides whether two ASR outputs disagree because of linguistic ambiguity."""

    identity: str

    def judge(self, asr_a: str, asr_b: str) -> Judgement: ...


@runtime_checkable
class VisualTextReader(Protocol):
    """Reads and sorts on-screen text in one step (a VLM); the rapidocr path is ``backends.OcrBackend``."""

    identity: str

    def split(self, frames: np.ndarray) -> OcrSplit: ...


@runtime_checkable
class TraceWriter(Protocol):
    """Writes the AV-CoT trace text (perception, reasoning, transcription) for one clip."""

    identity: str

    def write(self, request: AnnotationRequest) -> str: ...


@runtime_checkable
class VisualTeacher(Protocol):
    """Answers an MCQ from uniformly sampled frames only."""

    identity: str

    def answer(self, item: McqItem, frames: np.ndarray) -> TeacherReply: ...


@runtime_checkable
class AudioTeacher(Protocol):
    """Answers an MCQ from the audio only."""

    identity: str

    def answer(self, item: McqItem, audio: np.ndarray, sr: int) -> TeacherReply: ...


@runtime_checkable
class Merger(Protocol):
    """Merges the two teachers' traces into ``<think>…</think><answer>X</answer>``."""

    identity: str

    def merge(self, item: McqItem, visual: TeacherReply, audio: TeacherReply) -> str: ...
