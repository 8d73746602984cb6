"""Result -> display values for the demo's fields (plain data, no Gradio import), and the bundled examples."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from avcot.records import LETTERS
from demo.highlight import highlight_segments
from demo.inference import QaResult, TranscriptionResult

Segments = list[tuple[str, str | None]]


@dataclass(frozen=True)
class TranscriptionView:
    """What the Transcribe tab shows for one (partial) result."""

    status: str
    visual_cues: str
    pinyin: str
    reasoning: str
    transcription: str
    homophones: Segments
    cer: str


@dataclass(frozen=True)
class Example:
    """One bundled example clip (paths inside the examples dir)."""

    video: Path
    reference: str
    question: str = ""
    options: tuple[str, ...] = ()


def cer_text(result: TranscriptionResult) -> str:
    """'12.5%' when a reference was scored, else an empty string."""
    return "" if result.cer is None else f"{100 * result.cer:.1f}%"


def transcription_view(result: TranscriptionResult, label: str = "") -> TranscriptionView:
    """Fields for `result`; homophones are marked once the transcription is final."""
    if not result.done:
        status = f"{label}generating… ({len(result.raw)} characters so far)"
    elif result.well_formed:
        status = f"{label}done."
    else:
        status = (f"{label}done, but the output does not follow the AV-CoT format; the transcription "
                  "shown is its last line.")
    marks = highlight_segments(result.transcription) if result.done else []
    return TranscriptionView(status, result.visual_cues, result.pinyin, result.reasoning, result.transcription,
                             marks, cer_text(result))


def change_segments(audio_only: str, with_video: str) -> Segments:
    """`with_video` cut into segments, those differing from the audio-only transcription marked.

    Compared token by token after `normalize_zh` (punctuation dropped), as CER is.
    """
    from avcot.text import align

    segments: Segments = []
    for ref_tok, hyp_tok, op in align(audio_only, with_video):
        if op == "equal":
            segments.append((hyp_tok, None))
        elif op in ("sub", "ins"):
            segments.append((hyp_tok, "changed by the video"))
        else:  # deletion: the audio-only run had a token the video run dropped
            segments.append((f"[-{ref_tok}]", "dropped with the video"))
    return segments


def answer_segments(options: tuple[str, ...], answer: str | None) -> Segments:
    """One 'A. text' line per option; the chosen one labelled 'answer'."""
    segments: Segments = []
    for letter, text in zip(LETTERS, options):
        segments.append((f"{letter}. {text}\n", "answer" if letter == answer else None))
    return segments


def qa_status(result: QaResult) -> str:
    """Progress / outcome line for the QA tab."""
    if not result.done:
        return f"generating… ({len(result.raw)} characters so far)"
    if result.answer is None:
        return "done, but no <answer>A-D</answer> was found in the output."
    return f"done: the model answers {result.answer}."


def load_examples(examples_dir: Path | None, limit: int = 4) -> list[Example]:
    """Clips listed in `examples_dir/manifest.jsonl` (+ first MCQ per video from mcq.jsonl); [] if absent."""
    if examples_dir is None or not (examples_dir / "manifest.jsonl").is_file():
        return []
    questions = _mcq_by_video(examples_dir / "mcq.jsonl")
    out: list[Example] = []
    for line in (examples_dir / "manifest.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line) if line.strip() else {}
        video = row.get("video")
        if not video or not (examples_dir / video).is_file():
            continue
        question, options = questions.get(video, ("", ()))
        out.append(Example(examples_dir / video, row.get("text", ""), question, options))
        if len(out) >= limit:
            break
    return out


def _mcq_by_video(path: Path) -> dict[str, tuple[str, tuple[str, ...]]]:
    found: dict[str, tuple[str, tuple[str, ...]]] = {}
    if not path.is_file():
        return found
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line) if line.strip() else {}
        video, options = row.get("video"), tuple(row.get("options") or ())
        if video and len(options) == len(LETTERS) and video not in found:
            found[video] = (row.get("question", ""), options)
    return found
