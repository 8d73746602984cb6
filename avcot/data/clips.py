"""How a clip is decoded for the model: one settings record, one default per task, one loader.

`MediaSettings` is what training (the DataModules), evaluation (`avcot.eval`) and the demo decode clips
with. Each task has one documented default, defined here and nowhere else:

- `CAVSR_MEDIA`: 4 frames of 112 px over at most 30 s (Whisper's features cover 30 s).
- `MCQ_MEDIA`: 8 frames (what the AVRT teachers see) of 112 px over at most 30 s.

A checkpoint's `training_settings.json` (`avcot.training_settings`) overrides them in eval.

`load_clip(video, audio, settings, ...)`: frames (uniformly sampled, size a multiple of 28, even count),
16 kHz audio (the audio file, else the video's own soundtrack), an optional still image, and fps =
frames / clip duration, which sets the temporal M-RoPE positions. The video ablations are "true" |
"black" | "random" (another clip's frames) | "none" (audio only).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from avcot.chat import PATCH_FACTOR

VideoMode = Literal["true", "black", "random", "none"]
SAMPLE_RATE = 16000
NO_VIDEO_FPS = 2.0
"""fps of a clip without frames (no temporal positions depend on it)."""


@dataclass(frozen=True)
class MediaSettings:
    """How clips are decoded for the model (defaults: `CAVSR_MEDIA`; `MCQ_MEDIA` for multiple choice)."""

    num_frames: int = 4
    """Frames sampled uniformly over the clip (even: Qwen's temporal patch is 2)."""
    frame_size: int = 112
    """Square frame side in pixels (multiple of 28)."""
    max_seconds: float = 30.0
    """Clip length cap for both streams (Whisper features cover 30 s)."""
    video: VideoMode = "true"
    """'true' real frames; 'black' all-zero frames; 'random' another clip's frames; 'none' audio only."""

    def __post_init__(self):
        if self.num_frames < 2 or self.num_frames % 2:
            raise ValueError(f"num_frames must be even and >= 2, got {self.num_frames}")
        if self.frame_size % PATCH_FACTOR or self.frame_size <= 0:
            raise ValueError(f"frame_size must be a positive multiple of {PATCH_FACTOR}, got {self.frame_size}")
        if self.max_seconds <= 0:
            raise ValueError(f"max_seconds must be positive, got {self.max_seconds}")
        if self.video not in ("true", "black", "random", "none"):
            raise ValueError(f"video must be one of true|black|random|none, got {self.video!r}")


CAVSR_MEDIA = MediaSettings(num_frames=4, frame_size=112, max_seconds=30.0)
"""CAVSR default: DataModule, `python -m avcot.eval cavsr` and the demo's transcription tab."""
MCQ_MEDIA = MediaSettings(num_frames=8, frame_size=112, max_seconds=30.0)
"""MCQ (AVRT) default: DataModule, `python -m avcot.eval mcq` and the demo's question tab."""


@dataclass(frozen=True)
class ClipMedia:
    """Decoded model inputs of one clip."""

    frames: np.ndarray | None
    """[T, S, S, 3] uint8, or None (no video, or the 'none' ablation)."""
    audio: np.ndarray | None
    """[N] float32 at 16 kHz, or None."""
    image: np.ndarray | None = None
    """[S, S, 3] uint8 still image, or None."""
    fps: float = NO_VIDEO_FPS


def load_image(path: str | Path, size: int) -> np.ndarray:
    """uint8 [size, size, 3] RGB image (resized square, size a multiple of 28), writable for torch."""
    from PIL import Image

    with Image.open(path) as im:
        return np.array(im.convert("RGB").resize((size, size)), dtype=np.uint8)


def load_clip(video: str | Path | None, audio: str | Path | None, settings: MediaSettings, *,
              image: str | Path | None = None, other_video: str | Path | None = None,
              audio_required: bool = True) -> ClipMedia:
    """Frames, waveform, image and fps of one clip, decoded per `settings` (see the module docstring).

    `other_video`: the clip whose frames replace this one's under video='random' (chosen by the caller).
    `audio_required=False`: a soundtrack that cannot be read is no audio instead of an error (a silent video
    asked a question). Raises `avcot.media.MediaError` naming the file.
    """
    from avcot import media

    s = settings
    waveform = _audio(audio or video, s.max_seconds, audio_required)
    picture = load_image(image, s.frame_size) if image is not None else None
    if video is None or s.video == "none":
        return ClipMedia(None, waveform, picture, NO_VIDEO_FPS)
    size = (s.frame_size, s.frame_size)
    frames = media.load_frames(video, num_frames=s.num_frames, size=size, max_seconds=s.max_seconds)
    duration = min(media.probe(video).duration_s, s.max_seconds)
    if duration <= 0 and waveform is not None:
        duration = len(waveform) / SAMPLE_RATE
    fps = len(frames) / duration if duration > 0 else NO_VIDEO_FPS
    if s.video == "true":
        return ClipMedia(frames, waveform, picture, fps)
    other = None
    if s.video == "random":
        if other_video is None:
            raise ValueError("video='random' needs another clip's video (other_video)")
        other = media.load_frames(other_video, num_frames=s.num_frames, size=size, max_seconds=s.max_seconds)
    # avcot.media names the no-ablation mode "none"; here "none" means no video at all (handled above).
    return ClipMedia(media.ablate_video(frames, s.video, other), waveform, picture, fps)


def _audio(source: str | Path | None, max_seconds: float, required: bool) -> np.ndarray | None:
    from avcot import media

    if not source:
        return None
    try:
        return media.load_audio(source, sr=SAMPLE_RATE, max_seconds=max_seconds)
    except media.MediaError:
        if required:
            raise
        return None


def audio_seconds(audio: str | None, video: str | None) -> float:
    """Seconds of audio the model hears (the audio file, else the video's own soundtrack), from the headers.

    Only orders batches by length (`group_by_length`); a file that cannot be probed counts 0 s here and
    is rejected, with its reason, when its row is decoded.
    """
    from avcot import media

    for path in (audio, video):
        if not path:
            continue
        try:
            info = media.probe(path)
        except Exception:  # noqa: BLE001 - see the docstring: the decode step reports it
            return 0.0
        if info.has_audio:
            return info.duration_s
    return 0.0
