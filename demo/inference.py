"""What the demo runs, without any UI: load a clip, stream an AV-CoT transcription or an MCQ answer.

Generation runs `avcot.rollout.generate_ids` in a worker thread feeding a transformers
`TextIteratorStreamer`; each stream yields a new frozen result every time the text grows, with the
partial text parsed so far, so the UI can fill the fields while tokens arrive. The last result of a
stream is the final one (`transcribe` / `answer_mcq` return only that).

The "audio-only" run replaces every frame with black (the paper's black-video ablation) so the
difference between the two transcriptions is what the visual context changed.

Clips are decoded by `avcot.data.clips.load_clip`, the loader training and eval use, with each task's
`MediaSettings` (`DemoSettings`: the tasks' defaults, flags over them).
"""
from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from avcot.chat import Prompt, collate, encode_example
from avcot.data.clips import CAVSR_MEDIA, MCQ_MEDIA, ClipMedia, MediaSettings
from avcot.prompts import SYSTEM_PROMPT, mcq_student_prompt, student_prompt
from avcot.traces import AVCoTTrace, extract_transcription, parse_avcot, split_think_answer
from demo.runtime import LoadedModel

_PENDING = "\u2026"  # closes a partial trace so parse_avcot returns the sections seen so far


class ClipError(ValueError):
    """A clip that passed the upload checks still cannot be used (e.g. no audio track)."""


@dataclass(frozen=True)
class DemoSettings:
    """How each tab decodes its clips and how long an answer may be."""

    cavsr: MediaSettings = CAVSR_MEDIA
    """Transcription tab: the CAVSR default unless a flag changes it."""
    mcq: MediaSettings = MCQ_MEDIA
    """Question tab: the MCQ default unless a flag changes it."""
    max_new_tokens: int = 160
    """Generation budget per answer."""

    @classmethod
    def from_flags(cls, *, num_frames: int | None = None, frame_size: int | None = None,
                   max_seconds: float | None = None, max_new_tokens: int = 160) -> DemoSettings:
        """Each task's default with the given (not None) values over it."""
        given = {k: v for k, v in (("num_frames", num_frames), ("frame_size", frame_size),
                                   ("max_seconds", max_seconds)) if v is not None}
        return cls(replace(CAVSR_MEDIA, **given), replace(MCQ_MEDIA, **given), max_new_tokens)


@dataclass(frozen=True)
class TranscriptionResult:
    """A (possibly partial) AV-CoT answer split into its fields."""

    raw: str
    visual_cues: str
    pinyin: str
    reasoning: str
    transcription: str
    done: bool
    """True on the last result of a stream."""
    well_formed: bool
    """The text parsed as a full AV-CoT trace; if False and done, `transcription` is the last line."""
    cer: float | None = None
    """CER of `transcription` against the reference, when one was given (set once done)."""


@dataclass(frozen=True)
class QaResult:
    """A (possibly partial) MCQ answer: the <think> reasoning and the chosen letter."""

    raw: str
    reasoning: str
    answer: str | None
    """Option letter A-D, None until an <answer> tag with a letter appears."""
    done: bool


def load_clip(video: Path | None, settings: MediaSettings, *, audio: Path | None = None,
              image: Path | None = None, need_audio: bool = True) -> ClipMedia:
    """Decode frames and audio (from `audio` if given, else the video's own track) with `avcot.data.clips.load_clip`;
    `ClipError` with a message for the user when the clip cannot be used."""
    from avcot.data.clips import load_clip as decode
    from avcot.media import MediaError

    if need_audio and audio is None and video is None:
        raise ClipError("this task needs audio: the clip has none")
    try:
        media = decode(video, audio, settings, image=image, audio_required=False)
    except MediaError as e:
        raise ClipError(f"cannot decode {_name(video or audio or image)}: {e}") from None
    if need_audio and media.audio is None:
        raise ClipError(f"{_name(audio or video)} has no readable audio track; speech recognition needs audio")
    if media.frames is None and media.audio is None and media.image is None:
        raise ClipError("nothing to run on: give a video, or an image and an audio file")
    return media


def _name(path: Path | None) -> str:
    return repr(Path(path).name) if path is not None else "the input"


def black_out(media: ClipMedia) -> ClipMedia:
    """The same clip with every frame (and image) black: the audio-only ablation."""
    from avcot.media import black_video

    frames = None if media.frames is None else black_video(media.frames)
    image = None if media.image is None else black_video(media.image)
    return replace(media, frames=frames, image=image)


def stream_text(loaded: LoadedModel, prompt: Prompt, max_new_tokens: int) -> Iterator[str]:
    """The generated text so far, yielded each time the streamer hands over new text."""
    from transformers import TextIteratorStreamer

    from avcot.rollout import generate_ids

    tok = loaded.processor.tokenizer
    batch = collate([encode_example(loaded.processor, prompt)], tok.pad_token_id, padding_side="left")
    streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True, timeout=600)
    failure: list[BaseException] = []

    def work() -> None:
        try:
            generate_ids(loaded.model, batch, max_new_tokens=max_new_tokens, streamer=streamer,
                         eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"), pad_token_id=tok.pad_token_id)
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread below
            failure.append(e)
            streamer.end()

    worker = threading.Thread(target=work, daemon=True, name="demo-generate")
    worker.start()
    text = ""
    for piece in streamer:
        if piece:
            text += piece
            yield text
    worker.join()
    if failure:
        raise failure[0]
    yield text


def partial_trace(text: str) -> tuple[AVCoTTrace, bool]:
    """(sections seen so far, complete?) of a growing AV-CoT answer."""
    full = parse_avcot(text)
    if full is not None:
        return full, True
    # Until "Transcription:" has content parse_avcot returns None; a placeholder section lets it
    # return the earlier sections, and is then dropped.
    head = parse_avcot(f"{text}\nTranscription: {_PENDING}")
    if head is None:
        return AVCoTTrace("", "", "", ""), False
    return replace(head, transcription=""), False


def transcription_result(text: str, *, done: bool, reference: str = "") -> TranscriptionResult:
    """Split an AV-CoT answer into fields; when done, fall back to the last line and score CER."""
    from avcot.text import cer

    trace, ok = partial_trace(text)
    final = trace.transcription if ok else (extract_transcription(text) if done else "")
    score = cer(reference, final).cer if done and reference.strip() else None
    return TranscriptionResult(raw=text, visual_cues=trace.visual_cues, pinyin=trace.acoustic_pinyin,
                               reasoning=trace.reasoning, transcription=final, done=done, well_formed=ok, cer=score)


def cavsr_prompt(media: ClipMedia) -> Prompt:
    """The student AV-CoT prompt over `media`."""
    return Prompt(student_prompt("avcot"), SYSTEM_PROMPT, video=media.frames, audio=media.audio,
                  image=media.image, fps=media.fps)


def stream_transcription(loaded: LoadedModel, media: ClipMedia, *, reference: str = "",
                         max_new_tokens: int = 160) -> Iterator[TranscriptionResult]:
    """Partial results while the AV-CoT answer is generated; the last one has done=True."""
    text = ""
    for text in stream_text(loaded, cavsr_prompt(media), max_new_tokens):
        yield transcription_result(text, done=False)
    yield transcription_result(text, done=True, reference=reference)


def transcribe(loaded: LoadedModel, media: ClipMedia, *, reference: str = "",
               max_new_tokens: int = 160) -> TranscriptionResult:
    """The final transcription result (the stream run to its end)."""
    return _last(stream_transcription(loaded, media, reference=reference, max_new_tokens=max_new_tokens))


def clean_options(options: Sequence[str]) -> tuple[str, ...]:
    """The four option texts stripped; `ValueError` naming the first empty one."""
    from avcot.records import LETTERS

    cleaned = tuple((o or "").strip() for o in options)
    if len(cleaned) != len(LETTERS):
        raise ValueError(f"give exactly {len(LETTERS)} options, got {len(cleaned)}")
    for letter, text in zip(LETTERS, cleaned):
        if not text:
            raise ValueError(f"option {letter} is empty")
    return cleaned


def qa_result(text: str, *, done: bool) -> QaResult:
    """Split a <think>/<answer> completion (possibly unfinished) into reasoning and letter."""
    reasoning, letter = split_think_answer(text)
    for tag in ("<think>", "</think>"):
        reasoning = reasoning.replace(tag, "")
    return QaResult(raw=text, reasoning=reasoning.strip(), answer=letter, done=done)


def stream_qa(loaded: LoadedModel, media: ClipMedia, question: str, options: Sequence[str], *,
              max_new_tokens: int = 160) -> Iterator[QaResult]:
    """Partial MCQ results while the answer is generated; the last one has done=True."""
    if not question.strip():
        raise ValueError("the question is empty")
    prompt = Prompt(mcq_student_prompt(question.strip(), clean_options(options)), SYSTEM_PROMPT,
                    video=media.frames, audio=media.audio, image=media.image, fps=media.fps)
    text = ""
    for text in stream_text(loaded, prompt, max_new_tokens):
        yield qa_result(text, done=False)
    yield qa_result(text, done=True)


def answer_mcq(loaded: LoadedModel, media: ClipMedia, question: str, options: Sequence[str], *,
               max_new_tokens: int = 160) -> QaResult:
    """The final MCQ result."""
    return _last(stream_qa(loaded, media, question, options, max_new_tokens=max_new_tokens))


def _last(stream: Iterator):
    """Run a stream to its end and return its final item (every stream here yields at least one)."""
    return deque(stream, maxlen=1)[0]
