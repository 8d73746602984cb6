"""Backend interfaces shared by every pipeline stage, and the chat message format.

Four low-level interfaces (``typing.Protocol``), each with a stable ``identity`` string that
goes into the resume hash (never a secret):

- ``AsrBackend.transcribe(audio, sr, *, hint=None) -> str``
- ``ChatBackend.chat(messages) -> str``; a message's parts are text, PNG images or WAV audio.
- ``OcrBackend.read(frames) -> list[OcrBox]``
- ``CaptionBackend.caption(frames) -> str``

Implementations live in ``openai_compat`` (HTTP), ``local`` (transformers / faster-whisper /
rapidocr) and ``rules`` (offline rules). ``hint`` exists only for the *simulated* ASR of
synthetic clips (it carries the reference and the homophone pair); real ASR backends ignore it.
"""
from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import numpy as np

from avcot.records import OcrBox

Role = Literal["system", "user", "assistant"]


class BackendError(RuntimeError):
    """A backend could not be built or failed to answer; the message names what and where."""


class TransientError(BackendError):
    """A call failed for a reason that may go away by itself (server down, timeout, 429, 5xx).

    Raised once the backend's own retries are used up. The runner does not store such a row's
    outcome: the row stays pending and the next run retries it. Every other exception a stage
    raises is a permanent reject and is stored.
    """

    def __init__(self, message: str, *, kind: str, endpoint: str = "") -> None:
        super().__init__(message)
        self.kind = kind  # short reason for grouping: 'connection failed', 'timeout', 'HTTP 503', ...
        self.endpoint = endpoint  # where the call went (no credentials); '' for a local backend

    def __reduce__(self):
        # keyword-only fields must survive pickling (Ray ships exceptions between processes)
        return (_transient, (str(self), self.kind, self.endpoint))


def _transient(message: str, kind: str, endpoint: str) -> TransientError:
    return TransientError(message, kind=kind, endpoint=endpoint)


@dataclass(frozen=True)
class TextPart:
    """Plain text content."""

    text: str


@dataclass(frozen=True)
class ImagePart:
    """One image as PNG bytes (a video frame is sent as one image)."""

    png: bytes


@dataclass(frozen=True)
class AudioPart:
    """One audio clip as WAV bytes (16-bit PCM)."""

    wav: bytes


Part = TextPart | ImagePart | AudioPart


@dataclass(frozen=True)
class Message:
    """One chat message: a role and ordered content parts."""

    role: Role
    parts: tuple[Part, ...]

    def text(self) -> str:
        """Concatenated text parts (media parts are skipped)."""
        return "".join(p.text for p in self.parts if isinstance(p, TextPart))


@dataclass(frozen=True)
class AsrHint:
    """Oracle information, read only by the simulated ASR of synthetic clips."""

    reference: str
    target: str = ""
    """Homophone word the clip's visual cue supports (synthetic manifests carry it)."""
    competitor: str = ""
    """Homophone the acoustics alone cannot rule out."""


def text_message(role: Role, text: str) -> Message:
    """A message with a single text part."""
    return Message(role=role, parts=(TextPart(text),))


def png_bytes(frame: np.ndarray) -> bytes:
    """Encode one uint8 [H, W, 3] frame as PNG."""
    from PIL import Image

    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[-1] != 3:
        raise ValueError(f"png_bytes expects uint8 [H, W, 3], got {frame.dtype} {frame.shape}")
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="PNG")
    return buf.getvalue()


def frame_parts(frames: np.ndarray) -> tuple[ImagePart, ...]:
    """One ImagePart per frame of a uint8 [T, H, W, 3] array."""
    if frames.ndim != 4:
        raise ValueError(f"frame_parts expects [T, H, W, 3] frames, got shape {frames.shape}")
    return tuple(ImagePart(png_bytes(f)) for f in frames)


def wav_bytes(audio: np.ndarray, sr: int) -> bytes:
    """Encode mono float audio in [-1, 1] as 16-bit PCM WAV."""
    import soundfile as sf

    if audio.ndim != 1:
        raise ValueError(f"wav_bytes expects mono audio [N], got shape {audio.shape}")
    buf = io.BytesIO()
    sf.write(buf, np.clip(audio, -1.0, 1.0), sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


@runtime_checkable
class AsrBackend(Protocol):
    """Speech recognition: mono float32 audio at `sr` Hz -> transcript."""

    identity: str

    def transcribe(self, audio: np.ndarray, sr: int, *, hint: AsrHint | None = None) -> str: ...


@runtime_checkable
class ChatBackend(Protocol):
    """A chat model: ordered messages (text / image / audio parts) -> reply text."""

    identity: str

    def chat(self, messages: Sequence[Message]) -> str: ...


@runtime_checkable
class OcrBackend(Protocol):
    """Text detection + recognition over uint8 [T, H, W, 3] frames; boxes carry their frame index."""

    identity: str

    def read(self, frames: np.ndarray) -> list[OcrBox]: ...


@runtime_checkable
class CaptionBackend(Protocol):
    """A one-sentence scene description of uint8 [T, H, W, 3] frames."""

    identity: str

    def caption(self, frames: np.ndarray) -> str: ...
