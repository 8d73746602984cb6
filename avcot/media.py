"""Media loading for clips: probe, audio (16 kHz mono float32), uniformly sampled RGB frames, ablations.

Everything goes through PyAV (the most dependable reader here). Decoding stops as soon as the
requested window (`offset_s` .. `offset_s + max_seconds`) is covered, so a 20-minute file is never
loaded whole; frames of long videos are reached by seeking. Any unreadable input raises MediaError
whose message names the file and the problem.

Sampling: frame k of N is taken at the centre of the k-th of N equal segments (TSN-style), so a clip
shorter than N frames repeats frames instead of changing the output shape. `size` is (height, width)
and frames are stretched to it (no letterboxing), matching the fixed grid the model expects.

A source longer than the window is cut without a sound: `load_audio_window` / `load_frames_window`
return the data with a `Truncation` note (file, stream, declared and used seconds) so callers can
warn and count per row; `truncation_of` tells the same from the header alone (`probe`), without
decoding. `load_audio` / `load_frames` return the bare arrays.
"""
from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

import av
import numpy as np
import soxr

# Shortfall allowed between declared and decoded length before a file is called truncated
# (AAC priming and container rounding make them differ by a few percent on good files).
_TRUNCATION_TOLERANCE = 0.9
# A source longer than the window by less than this is not called truncated: declared lengths overshoot
# the content by container rounding and codec padding (AAC's last frame), and such a cut loses nothing.
_TRUNCATION_SLACK_S = 0.1
# Above this many frames in the window, sampled frames are reached by seeking instead of decoding all.
_SEEK_THRESHOLD = 300


class MediaError(Exception):
    """A media file is missing, unreadable, truncated or lacks the requested stream."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


@dataclass(frozen=True)
class MediaInfo:
    """What a container holds (fields of a missing stream are 0)."""

    duration_s: float
    has_audio: bool
    has_video: bool
    sample_rate: int
    channels: int
    fps: float
    width: int
    height: int


@dataclass(frozen=True)
class Truncation:
    """A stream longer than the window that was loaded: everything after `offset_s + used_s` was left out."""

    path: str
    stream: Literal["audio", "video"]
    source_s: float
    """Declared length of the stream (or of the container), in seconds."""
    used_s: float
    """Seconds of it that were loaded (the `max_seconds` window)."""
    offset_s: float = 0.0
    """Where the window started."""

    @property
    def dropped_s(self) -> float:
        """Seconds after the window that were not loaded."""
        return max(0.0, self.source_s - self.offset_s - self.used_s)

    @property
    def message(self) -> str:
        start = f" from {self.offset_s:.1f} s" if self.offset_s else ""
        return (f"{self.path}: {self.stream} is {self.source_s:.1f} s long but only {self.used_s:.1f} s{start} "
                f"were used ({self.dropped_s:.1f} s cut; raise max_seconds to keep more)")


@dataclass(frozen=True, eq=False)
class AudioWindow:
    """Decoded audio of one window and whether the source went on past it."""

    samples: np.ndarray
    """float32 [N] mono in [-1, 1]."""
    sample_rate: int
    truncation: Truncation | None = None


@dataclass(frozen=True, eq=False)
class FrameWindow:
    """Sampled frames of one window and whether the video went on past it."""

    frames: np.ndarray
    """uint8 [T, H, W, 3] RGB."""
    truncation: Truncation | None = None


def window_truncation(path: str | Path, stream: Literal["audio", "video"], source_s: float,
                      max_seconds: float | None, offset_s: float = 0.0) -> Truncation | None:
    """The `Truncation` of loading `offset_s .. offset_s + max_seconds` of a `source_s`-long stream, or None."""
    if max_seconds is None or source_s <= offset_s + max_seconds + _TRUNCATION_SLACK_S:
        return None
    return Truncation(str(path), stream, float(source_s), float(max_seconds), float(offset_s))


def truncation_of(path: str | Path, stream: Literal["audio", "video"], max_seconds: float | None,
                  offset_s: float = 0.0) -> Truncation | None:
    """Whether loading `stream` of `path` with this window would cut it, from the header (`probe`) alone.

    Uses the container's duration (a stream's own may differ by codec padding, within the slack).
    Raises MediaError like `probe` for an unreadable file.
    """
    return window_truncation(path, stream, probe(path).duration_s, max_seconds, offset_s)


def _open(path: str | Path) -> av.container.InputContainer:
    p = Path(path)
    if not p.is_file():
        raise MediaError(p, "file not found")
    if p.stat().st_size == 0:
        raise MediaError(p, "file is empty (0 bytes)")
    try:
        return av.open(str(p))
    except (av.error.FFmpegError, ValueError, OSError) as err:
        raise MediaError(p, f"cannot open as media ({err})") from err


def _stream_duration(container: av.container.InputContainer, stream: av.stream.Stream) -> float:
    """Seconds of one stream, falling back to the container's duration."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return 0.0


def probe(path: str | Path) -> MediaInfo:
    """Streams and duration of a media file, without decoding.

    Remembered per (file, size, modification time): manifest checks, batch length keys and every epoch's
    decode ask again about the same files, and only a changed file is opened again.
    """
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        return _probe(p)  # raises the MediaError naming the file
    return _probe_unchanged(str(p.resolve()), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=1 << 16)
def _probe_unchanged(path: str, size: int, mtime_ns: int) -> MediaInfo:
    return _probe(Path(path))  # size/mtime only key the cache; errors are raised, never cached


def _probe(path: Path) -> MediaInfo:
    with _open(path) as c:
        a = c.streams.audio[0] if c.streams.audio else None
        v = c.streams.video[0] if c.streams.video else None
        durations = [_stream_duration(c, s) for s in (a, v) if s is not None]
        duration = c.duration / av.time_base if c.duration is not None else max(durations, default=0.0)
        rate = v.average_rate or v.guessed_rate if v is not None else None
        return MediaInfo(
            duration_s=float(duration), has_audio=a is not None, has_video=v is not None,
            sample_rate=int(a.rate or 0) if a else 0, channels=int(a.channels or 0) if a else 0,
            fps=float(rate) if rate else 0.0,
            width=int(v.width or 0) if v else 0, height=int(v.height or 0) if v else 0)


# ---------------------------------------------------------------- audio


def _decode_audio(path: str | Path, c: av.container.InputContainer, start_s: float,
                  stop_s: float | None) -> tuple[np.ndarray, int]:
    """Mono float32 samples of the audio stream from start_s to stop_s (None = end), native rate."""
    stream = c.streams.audio[0]
    rate = int(stream.rate)
    # fltp keeps channels as rows whatever the source layout; channels are averaged afterwards.
    to_float = av.AudioResampler(format="fltp")
    if start_s > 0:
        c.seek(int(start_s / stream.time_base), stream=stream, backward=True)
    chunks: list[np.ndarray] = []
    origin = None  # sample index (at `rate`) of the first decoded sample, from the first frame's pts
    first, last = int(round(start_s * rate)), None if stop_s is None else int(round(stop_s * rate))
    n = 0
    try:
        for frame in c.decode(stream):
            if origin is None:
                origin = int(round(float(frame.pts * frame.time_base) * rate)) if frame.pts is not None else 0
            for out in to_float.resample(frame):
                chunks.append(out.to_ndarray().mean(axis=0))
                n += out.samples
            if last is not None and origin + n >= last:
                break
        chunks.extend(out.to_ndarray().mean(axis=0) for out in to_float.resample(None))
    except av.error.FFmpegError as err:
        raise MediaError(path, f"corrupt audio stream ({err})") from err
    if not chunks or origin is None:
        return np.zeros(0, np.float32), rate
    data = np.concatenate(chunks).astype(np.float32)
    lo = max(0, first - origin)
    hi = len(data) if last is None else max(lo, last - origin)
    return data[lo:hi], rate


def load_audio(path: str | Path, *, sr: int = 16000, max_seconds: float | None = None,
               offset_s: float = 0.0) -> np.ndarray:
    """Float32 mono audio in [-1, 1] at `sr` Hz (`load_audio_window` without the truncation note)."""
    return load_audio_window(path, sr=sr, max_seconds=max_seconds, offset_s=offset_s).samples


def load_audio_window(path: str | Path, *, sr: int = 16000, max_seconds: float | None = None,
                      offset_s: float = 0.0) -> AudioWindow:
    """Float32 mono audio in [-1, 1] at `sr` Hz, from a wav or a video's audio stream.

    Only `offset_s .. offset_s + max_seconds` is decoded; stereo is averaged; any rate is resampled.
    Silence is valid (zeros); an empty, truncated or missing audio stream raises MediaError. A stream
    that goes on past the window comes back with a `Truncation` note.
    """
    if offset_s < 0 or (max_seconds is not None and max_seconds <= 0):
        raise ValueError(f"need offset_s >= 0 and max_seconds > 0, got {offset_s}, {max_seconds}")
    with _open(path) as c:
        if not c.streams.audio:
            raise MediaError(path, "has no audio stream")
        declared = _stream_duration(c, c.streams.audio[0])
        stop = None if max_seconds is None else offset_s + max_seconds
        data, rate = _decode_audio(path, c, offset_s, stop)
    if data.size == 0:
        raise MediaError(path, f"audio stream is empty (no samples after {offset_s:.2f} s)")
    expected = (min(declared, stop) if stop is not None else declared) - offset_s
    if expected > 0 and len(data) / rate < _TRUNCATION_TOLERANCE * expected:
        raise MediaError(path, f"audio truncated: decoded {len(data) / rate:.2f} s of {expected:.2f} s declared")
    if expected > 0:  # drop codec padding past the declared end (AAC pads its last frame)
        data = data[: int(round(expected * rate))]
    if rate != sr:
        data = soxr.resample(data, rate, sr).astype(np.float32)
    return AudioWindow(np.clip(data, -1.0, 1.0), sr, window_truncation(path, "audio", declared, max_seconds, offset_s))


# ---------------------------------------------------------------- frames


def uniform_indices(n_total: int, n: int) -> list[int]:
    """Indices of n frames out of n_total: the centre of each of n equal segments (repeats if n > n_total)."""
    if n_total <= 0 or n <= 0:
        raise ValueError(f"need n_total > 0 and n > 0, got n_total={n_total}, n={n}")
    return [min(n_total - 1, int((k + 0.5) * n_total / n)) for k in range(n)]


def _frame_size(size: int | tuple[int, int]) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, int) else size
    if h <= 0 or w <= 0:
        raise ValueError(f"frame size must be positive, got {size}")
    return int(h), int(w)


def _frame_count(path: str | Path, stream: av.video.stream.VideoStream, duration: float) -> tuple[int, float]:
    """(number of frames, fps) of a video stream, from the container index or duration x rate."""
    rate = stream.average_rate or stream.guessed_rate
    if not rate:
        raise MediaError(path, "video stream has no frame rate")
    fps = float(rate)
    total = int(stream.frames) if stream.frames else int(round(duration * fps))
    if total <= 0:
        raise MediaError(path, "video stream has no frames")
    return total, fps


def _to_rgb(frame: av.VideoFrame, h: int, w: int) -> np.ndarray:
    return frame.reformat(width=w, height=h, format="rgb24").to_ndarray()


def _decode_sequential(path: str | Path, c: av.container.InputContainer, wanted: list[int],
                       h: int, w: int) -> dict[int, np.ndarray]:
    """Decode from the start, keeping frames whose ordinal is in `wanted`; stop after the last one."""
    keep, stop, got = set(wanted), max(wanted), {}
    try:
        for i, frame in enumerate(c.decode(c.streams.video[0])):
            if i in keep:
                got[i] = _to_rgb(frame, h, w)
            if i >= stop:
                break
    except av.error.FFmpegError as err:
        if len(got) < _TRUNCATION_TOLERANCE * len(keep):
            raise MediaError(path, f"corrupt video stream ({err})") from err
    return got


def _decode_seeking(path: str | Path, c: av.container.InputContainer, wanted: list[int], fps: float,
                    h: int, w: int) -> dict[int, np.ndarray]:
    """For each wanted ordinal, seek to the keyframe before it and decode forward to its timestamp."""
    stream, got = c.streams.video[0], {}
    start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
    for idx in sorted(set(wanted)):
        t = start + idx / fps
        try:
            c.seek(int(t / stream.time_base), stream=stream, backward=True)
            for frame in c.decode(stream):
                ft = float(frame.pts * frame.time_base) if frame.pts is not None else t
                if ft >= t - 0.5 / fps:
                    got[idx] = _to_rgb(frame, h, w)
                    break
        except av.error.FFmpegError as err:
            raise MediaError(path, f"corrupt video stream near {t:.2f} s ({err})") from err
    return got


def load_frames(path: str | Path, *, num_frames: int = 8, size: int | tuple[int, int] = (112, 112),
                max_seconds: float | None = None) -> np.ndarray:
    """uint8 [T, H, W, 3] RGB frames (`load_frames_window` without the truncation note)."""
    return load_frames_window(path, num_frames=num_frames, size=size, max_seconds=max_seconds).frames


def load_frames_window(path: str | Path, *, num_frames: int = 8, size: int | tuple[int, int] = (112, 112),
                       max_seconds: float | None = None) -> FrameWindow:
    """uint8 [T, H, W, 3] RGB frames sampled uniformly over the first `max_seconds` (all when None).

    A video that goes on past `max_seconds` comes back with a `Truncation` note.
    """
    if num_frames <= 0:
        raise ValueError(f"num_frames must be positive, got {num_frames}")
    h, w = _frame_size(size)
    with _open(path) as c:
        if not c.streams.video:
            raise MediaError(path, "has no video stream")
        stream = c.streams.video[0]
        # Slice threads only: frame threading deadlocks in avcodec_free_context when decoding stops early
        # (we break out after the last wanted frame), seen as a hang on a 2-core machine.
        stream.thread_type = "SLICE"
        declared = _stream_duration(c, stream)
        total, fps = _frame_count(path, stream, declared)
        truncation = window_truncation(path, "video", declared or total / fps, max_seconds)
        if max_seconds is not None:
            total = max(1, min(total, int(np.ceil(max_seconds * fps - 1e-6))))
        wanted = uniform_indices(total, num_frames)
        if total > _SEEK_THRESHOLD:
            got = _decode_seeking(path, c, wanted, fps, h, w)
        else:
            got = _decode_sequential(path, c, wanted, h, w)
    if not got:
        raise MediaError(path, "no decodable video frames")
    if len(got) < _TRUNCATION_TOLERANCE * len(set(wanted)):
        raise MediaError(path, f"video truncated: decoded {len(got)} of {len(set(wanted))} sampled frames")
    # Containers without a frame index can overstate the count by a frame or two: reuse the last one.
    last = got[max(got)]
    return FrameWindow(np.stack([got.get(i, last) for i in wanted]).astype(np.uint8), truncation)


# ---------------------------------------------------------------- ablations


def black_video(frames: np.ndarray) -> np.ndarray:
    """All-black frames of the same shape and dtype (the 'black video' ablation)."""
    return np.zeros_like(frames)


def random_video(clip_ids: Sequence[str], index: int, rng: random.Random) -> int:
    """Index of another clip (different id) whose video replaces clip `index` (the 'random video' ablation)."""
    others = [j for j, cid in enumerate(clip_ids) if j != index and cid != clip_ids[index]]
    if not others:
        raise ValueError(f"random video ablation needs another clip besides {clip_ids[index]!r}")
    return rng.choice(others)


def ablate_video(frames: np.ndarray, mode: str, other_frames: np.ndarray | None = None) -> np.ndarray:
    """Apply a video ablation: 'none' keeps frames, 'black' zeros them, 'random' swaps in other_frames."""
    if mode == "none":
        return frames
    if mode == "black":
        return black_video(frames)
    if mode == "random":
        if other_frames is None:
            raise ValueError("ablation 'random' needs other_frames (frames of another clip)")
        if other_frames.shape != frames.shape:
            raise ValueError(f"random frames shape {other_frames.shape} != clip frames shape {frames.shape}")
        return other_frames
    raise ValueError(f"unknown video ablation {mode!r}: expected none | black | random")


__all__ = ["MediaError", "MediaInfo", "Truncation", "AudioWindow", "FrameWindow", "probe", "load_audio",
           "load_audio_window", "load_frames", "load_frames_window", "truncation_of", "window_truncation",
           "uniform_indices", "black_video", "random_video", "ablate_video"]
