"""Pixels and sound for one synthetic clip (`avcot.synth`): cue frames, espeak-ng speech, the ffmpeg mux.

Speech: espeak-ng voice `cmn-latn-pinyin` reading tone-digit pinyin, so tones are exact; resampled from
22.05 kHz to 16 kHz mono with soxr (not sox: soxr in-process is byte-reproducible, sox dithers).
Frames: PIL + Noto Sans CJK SC, one still picture per clip (cue-specific, moved and tinted by its
`Variation`) plus a progress bar, so consecutive frames differ. Missing tools or fonts raise `SynthError`
naming the Debian package to install.
"""
from __future__ import annotations

import glob
import math
import shutil
import subprocess
import tempfile
import threading
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from PIL import Image, ImageDraw, ImageFont

from avcot.synth_data import SentenceSpec

SAMPLE_RATE = 16000
VOICE = "cmn-latn-pinyin"
NEUTRAL_BG = (225, 225, 215)
_RENDER_LOCK = threading.Lock()


class SynthError(RuntimeError):
    """A tool, font or generation step failed; the message names what and how to fix it."""


# ---------------------------------------------------------------- tools and fonts


def require_tool(name: str, package: str) -> str:
    """Path of an executable, or SynthError naming the Debian package that provides it."""
    path = shutil.which(name)
    if path is None:
        raise SynthError(f"{name} not found on PATH: install the Debian package {package} "
                         f"(apt-get install -y {package})")
    return path


@lru_cache(maxsize=1)
def find_cjk_font() -> tuple[str, int]:
    """(font file, face index) of Noto Sans CJK SC, or SynthError naming fonts-noto-cjk."""
    if shutil.which("fc-match"):
        out = subprocess.run(["fc-match", "-f", "%{file}:%{index}", "Noto Sans CJK SC"],
                             capture_output=True, text=True, check=False).stdout.strip()
        file, _, index = out.rpartition(":")
        if "CJK" in file and Path(file).is_file():
            return file, int(index or 0)
    hits = sorted(glob.glob("/usr/share/fonts/**/NotoSansCJK*-Regular.tt[cf]", recursive=True))
    if hits:
        return hits[0], 2 if hits[0].endswith(".ttc") else 0  # .ttc face 2 is SC
    raise SynthError("Noto Sans CJK font not found: install the Debian package fonts-noto-cjk "
                     "(apt-get install -y fonts-noto-cjk)")


@lru_cache(maxsize=64)
def _font(size: int) -> ImageFont.FreeTypeFont:
    file, index = find_cjk_font()
    return ImageFont.truetype(file, max(6, size), index=index)


# ---------------------------------------------------------------- frames


def _fit_font(draw: ImageDraw.ImageDraw, text: str, max_w: int, start: int) -> ImageFont.FreeTypeFont:
    """Largest font (from `start` down) whose rendering of `text` fits in max_w pixels."""
    size = start
    while size > 6:
        font = _font(size)
        if draw.textlength(text, font=font) <= max_w:
            return font
        size -= 1
    return _font(6)


def _draw_centered(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], text: str,
                   fill: tuple[int, int, int], start: int) -> None:
    x0, y0, x1, y1 = box
    font = _fit_font(draw, text, int((x1 - x0) * 0.92), start)
    draw.text(((x0 + x1) / 2, (y0 + y1) / 2), text, font=font, fill=fill, anchor="mm")


def _draw_icon(draw: ImageDraw.ImageDraw, icon: str, box: tuple[int, int, int, int]) -> None:
    x0, y0, x1, y1 = box
    cx, cy, r = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2
    ink = (60, 60, 90)
    if icon == "circle":
        draw.ellipse(box, fill=ink)
    elif icon == "square":
        draw.rectangle(box, fill=ink)
    elif icon == "triangle":
        draw.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=ink)
    elif icon == "diamond":
        draw.polygon([(cx, y0), (x1, cy), (cx, y1), (x0, cy)], fill=ink)
    elif icon == "cross":
        w = r / 3
        draw.rectangle((cx - w, y0, cx + w, y1), fill=ink)
        draw.rectangle((x0, cy - w, x1, cy + w), fill=ink)
    elif icon == "bars":
        for k in range(3):
            draw.rectangle((x0 + k * 2 * r / 3, y1 - (k + 1) * 2 * r / 3, x0 + (k + 0.7) * 2 * r / 3, y1), fill=ink)
    elif icon == "waves":
        for k in range(3):
            yy = y0 + (k + 0.5) * 2 * r / 3
            draw.arc((x0, yy - r / 3, x1, yy + r / 3), 180, 360, fill=ink, width=max(1, int(r / 6)))
    else:  # star
        pts = [(cx + (r if k % 2 == 0 else r / 2.5) * math.sin(k * math.pi / 5),
                cy - (r if k % 2 == 0 else r / 2.5) * math.cos(k * math.pi / 5)) for k in range(10)]
        draw.polygon(pts, fill=ink)


def _base_frame(spec: SentenceSpec, size: tuple[int, int]) -> Image.Image:
    """The still picture for a spec (cue-specific, moved/tinted by its Variation), without the progress bar."""
    w, h = size
    v = spec.variation
    bg = spec.scene.colour if spec.cue == "scene" else NEUTRAL_BG
    img = Image.new("RGB", size, tuple(min(255, max(0, c + t)) for c, t in zip(bg, v.tint)))
    draw = ImageDraw.Draw(img)

    def at(fx0: float, fy0: float, fx1: float, fy1: float) -> tuple[float, float, float, float]:
        # Fractions of the frame, shifted by the variation (identity: the exact boxes of the plain render).
        return w * (fx0 + v.dx), h * (fy0 + v.dy), w * (fx1 + v.dx), h * (fy1 + v.dy)

    def at_px(*fractions: float) -> tuple[int, int, int, int]:
        return tuple(int(c) for c in at(*fractions))

    # A plain speaker silhouette so every clip has "someone talking".
    draw.ellipse(at(0.42, 0.38, 0.58, 0.54), fill=(90, 90, 100))
    draw.rounded_rectangle(at(0.33, 0.56, 0.67, 0.9), radius=max(1, int(w * 0.06)), fill=(90, 90, 100))
    if spec.cue == "background":
        box = at_px(0.1, 0.06, 0.9, 0.3)
        draw.rectangle(box, fill=(20, 90, 60))
        _draw_centered(draw, box, spec.screen_text, (255, 255, 255), int(h * 0.16 * v.font_scale))
    elif spec.cue == "scene":
        _draw_icon(draw, spec.scene.icon, at_px(0.06, 0.06, 0.3, 0.3))
        box = at_px(0.04, 0.8, 0.52, 0.96)
        draw.rectangle(box, fill=(255, 255, 255))
        _draw_centered(draw, box, spec.screen_text, (20, 20, 20), int(h * 0.11 * v.font_scale))
    else:  # subtitle / conflict: a full-width subtitle band (only moves vertically)
        box = (0, int(h * (0.8 + min(0.0, v.dy))), w, h)
        draw.rectangle(box, fill=(0, 0, 0))
        _draw_centered(draw, box, spec.screen_text, (255, 255, 255), int(h * 0.12 * v.font_scale))
    return img


def render_frames(spec: SentenceSpec, size: tuple[int, int], n_frames: int) -> list[Image.Image]:
    """N RGB frames (size = (width, height)) showing the spec's cue; a thin bar at the top shows progress."""
    if n_frames <= 0:
        raise ValueError(f"n_frames must be positive, got {n_frames}")
    with _RENDER_LOCK:  # the cached FreeType faces are shared and not thread-safe
        base = _base_frame(spec, size)
    frames = []
    for i in range(n_frames):
        img = base.copy()
        bar_w = round(size[0] * (i + 1) / n_frames)  # distinct frames, so samplers can be checked
        ImageDraw.Draw(img).rectangle((0, 0, bar_w - 1, max(1, size[1] // 40)), fill=(200, 40, 40))
        frames.append(img)
    return frames


# ---------------------------------------------------------------- audio and muxing


def synthesize_speech(pinyin: str, out_wav: Path, *, speed: int = 140, min_seconds: float = 0.0,
                      pitch: int = 50) -> float:
    """Speak tone-digit pinyin with espeak-ng into a 16 kHz mono PCM16 wav; returns its duration (s).

    Trailing silence pads the clip to `min_seconds`. `pitch` is espeak-ng's -p (0-99, default 50).
    """
    exe = require_tool("espeak-ng", "espeak-ng")
    if not 0 <= pitch <= 99:
        raise ValueError(f"pitch must be in 0..99 (espeak-ng -p), got {pitch}")
    out_wav = Path(out_wav)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "espeak.wav"
        pitch_args = [] if pitch == 50 else ["-p", str(pitch)]  # 50 is espeak's default: keep old argv
        proc = subprocess.run([exe, "-v", VOICE, "-s", str(speed), *pitch_args, "-w", str(raw), pinyin],
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0 or not raw.is_file():
            raise SynthError(f"espeak-ng failed for {pinyin!r}: {proc.stderr.strip()}")
        audio, rate = sf.read(raw, dtype="float32", always_2d=True)
    mono = audio.mean(axis=1)
    wav = soxr.resample(mono, rate, SAMPLE_RATE).astype(np.float32)
    pad = max(0, int(round(min_seconds * SAMPLE_RATE)) - len(wav))
    wav = np.concatenate([wav, np.zeros(pad, np.float32)])
    out_wav.parent.mkdir(parents=True, exist_ok=True)
    sf.write(out_wav, np.clip(wav, -1.0, 1.0), SAMPLE_RATE, subtype="PCM_16")
    return len(wav) / SAMPLE_RATE


def mux(frames: list[Image.Image], wav: Path, out_mp4: Path, fps: float) -> None:
    """Encode frames (H.264 yuv420p) + the wav (AAC) into an mp4 as long as the audio.

    Single-threaded x264 and bitexact flags keep the bytes reproducible for a fixed input.
    """
    exe = require_tool("ffmpeg", "ffmpeg")
    if not frames:
        raise ValueError("mux needs at least one frame")
    w, h = frames[0].size
    duration = sf.info(str(wav)).duration
    raw = b"".join(f.convert("RGB").tobytes() for f in frames)
    cmd = [exe, "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
           "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-framerate", str(fps), "-i", "-",
           "-i", str(wav), "-map", "0:v", "-map", "1:a",
           "-c:v", "libx264", "-preset", "medium", "-tune", "stillimage", "-crf", "30", "-pix_fmt", "yuv420p",
           "-threads", "1", "-c:a", "aac", "-b:a", "32k", "-ac", "1", "-ar", str(SAMPLE_RATE),
           "-t", f"{duration:.3f}", "-map_metadata", "-1", "-fflags", "+bitexact",
           "-flags:v", "+bitexact", "-flags:a", "+bitexact", "-movflags", "+faststart", str(out_mp4)]
    proc = subprocess.run(cmd, input=raw, capture_output=True, check=False)
    if proc.returncode != 0:
        raise SynthError(f"ffmpeg failed writing {out_mp4}: {proc.stderr.decode(errors='replace').strip()}")

