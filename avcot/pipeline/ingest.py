"""Ingest: a folder of videos/audio -> a CAVSR pipeline manifest (``python -m avcot.pipeline ingest``).

Each media file is probed (duration, audio and video streams); its id is its file name stem. A sidecar
``<stem>.srt`` or ``<stem>.txt`` next to it is its reference transcript; without one the row has no
``text`` and the pipeline works from its ASR hypotheses (raw clips, as in the VASR paper). A file
longer than ``max_seconds`` is cut into utterance segments of at most that length, at the cue times
of its ``.srt``, else at the segment timestamps of a transcription endpoint (``asr``), else at the
pauses an energy VAD finds; the pieces are written under ``<manifest folder>/segments/`` with ffmpeg.
A ``.txt`` reference cannot be aligned to pieces, so a cut file's pieces carry none (a warning says so).
Files that cannot be used (unreadable, no audio stream, empty, a malformed ``.srt``) are rejects with a
reason, written to ``<manifest>.rejects.jsonl``; the others are still ingested.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".webm", ".avi", ".flv")
AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".m4a", ".ogg", ".opus", ".aac")
_SRT_TIME = re.compile(r"(\d+):(\d\d):(\d\d)[,.](\d{1,3})")
_ID_UNSAFE = re.compile(r"[^\w\-.]+")


@dataclass(frozen=True)
class Cue:
    """A timed piece of speech (seconds) and its text ('' when unknown)."""

    start: float
    end: float
    text: str = ""


@dataclass(frozen=True)
class IngestReport:
    """What an ingest wrote and what it left out."""

    rows: int
    files: int
    rejects: tuple[dict, ...]
    warnings: tuple[str, ...]


def parse_srt(text: str) -> list[Cue]:
    """Cues of an .srt file; ValueError naming the first malformed cue block."""
    cues = []
    for n, block in enumerate(re.split(r"\n\s*\n", text.replace("\r\n", "\n").strip()), 1):
        lines = [ln for ln in block.split("\n") if ln.strip()]
        timing = next((i for i, ln in enumerate(lines) if "-->" in ln), None)
        if timing is None:
            raise ValueError(f"cue {n} has no 'start --> end' line")
        times = _SRT_TIME.findall(lines[timing])
        if len(times) != 2:
            raise ValueError(f"cue {n}: cannot read the times in {lines[timing]!r}")
        start, end = (int(h) * 3600 + int(m) * 60 + int(s) + int(ms.ljust(3, "0")) / 1000 for h, m, s, ms in times)
        if end <= start:
            raise ValueError(f"cue {n} ends before it starts ({lines[timing]!r})")
        cues.append(Cue(start, end, "".join(lines[timing + 1:]).strip()))
    return cues


def energy_vad(audio: np.ndarray, sr: int, *, frame_s: float = 0.03, floor_db: float = -50.0,
               below_peak_db: float = 35.0, min_gap_s: float = 0.3) -> list[Cue]:
    """Speech stretches of mono audio: frames louder than max(floor, peak - below_peak) dB, gaps
    shorter than `min_gap_s` bridged."""
    hop = max(1, int(frame_s * sr))
    n = len(audio) // hop
    if n == 0:
        return []
    frames = audio[: n * hop].reshape(n, hop).astype(np.float64)  # [N, hop]
    db = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)  # [N]
    loud = db > max(floor_db, float(db.max()) - below_peak_db)  # [N]
    cues: list[Cue] = []
    start = None
    for i, on in enumerate([*loud, False]):
        if on and start is None:
            start = i
        elif not on and start is not None:
            s, e = start * frame_s, i * frame_s
            if cues and s - cues[-1].end < min_gap_s:
                cues[-1] = Cue(cues[-1].start, e)
            else:
                cues.append(Cue(s, e))
            start = None
    return cues


def pack_segments(cues: Sequence[Cue], max_seconds: float) -> list[Cue]:
    """Consecutive cues grouped into segments spanning at most `max_seconds` (texts joined); a cue
    longer than that is split into equal parts (its text kept only when it is not split)."""
    out: list[Cue] = []
    for c in cues:
        if c.end - c.start > max_seconds:
            parts = int(np.ceil((c.end - c.start) / max_seconds))
            step = (c.end - c.start) / parts
            out.extend(Cue(c.start + k * step, c.start + (k + 1) * step) for k in range(parts))
        elif out and c.end - out[-1].start <= max_seconds and not (out[-1].text == "" and c.text):
            out[-1] = Cue(out[-1].start, c.end, out[-1].text + c.text)
        else:
            out.append(c)
    return out


def cut(src: Path, cue: Cue, dst: Path, video: bool) -> None:
    """Write [cue.start, cue.end) of `src` to `dst` (re-encoded, so the cut is exact)."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise RuntimeError("cutting long recordings needs the ffmpeg program on PATH")
    codec = ["-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac"] if video else ["-ac", "1", "-ar", "16000"]
    cmd = [ffmpeg, "-nostdin", "-loglevel", "error", "-y", "-ss", f"{cue.start:.3f}", "-i", str(src),
           "-t", f"{cue.end - cue.start:.3f}", *codec, str(dst)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ffmpeg could not cut {src.name} at {cue.start:.2f}s: {done.stderr.strip()[-300:]}")


def reference(media: Path) -> tuple[str, list[Cue]]:
    """(whole text, cues) from the sidecar .srt or .txt of `media`; ('', []) when there is none."""
    srt, txt = media.with_suffix(".srt"), media.with_suffix(".txt")
    if srt.is_file():
        cues = parse_srt(srt.read_text(encoding="utf-8-sig"))
        return "".join(c.text for c in cues), cues
    if txt.is_file():
        return txt.read_text(encoding="utf-8-sig").strip(), []
    return "", []


def _speech(path: Path, cues: list[Cue], asr) -> list[Cue]:
    """Where to cut: the .srt cues, else the transcription endpoint's segments, else the VAD."""
    if cues:
        return cues
    from avcot.media import load_audio

    audio = load_audio(path, sr=16000)
    if asr is not None and hasattr(asr, "transcribe_segments"):
        found = asr.transcribe_segments(audio, 16000).segments
        if found:
            return [Cue(s.start, s.end, s.text) for s in found]
    return energy_vad(audio, 16000)


def _rows_of(path: Path, rid: str, out_dir: Path, max_seconds: float, asr, warnings: list[str]) -> list[dict]:
    """Manifest rows of one media file (several when it is cut); raises ValueError/MediaError to reject it."""
    from avcot.media import probe

    info = probe(path)
    if not info.has_audio:
        raise ValueError("no audio stream")
    if info.duration_s <= 0:
        raise ValueError("empty (duration 0)")
    text, cues = reference(path)
    kind = "video" if info.has_video else "audio"
    if info.duration_s <= max_seconds:
        return [{"id": rid, kind: str(path), **({"text": text} if text else {})}]
    if text and not cues:
        warnings.append(f"{path.name}: .txt reference dropped: the {info.duration_s:.0f} s file is cut into "
                        "pieces and a plain text cannot be aligned to them (give a .srt instead)")
    rows = []
    seg_dir = out_dir / "segments"
    seg_dir.mkdir(parents=True, exist_ok=True)
    for k, seg in enumerate(pack_segments(_speech(path, cues, asr), max_seconds)):
        dst = seg_dir / f"{rid}_{k:03d}{'.mp4' if kind == 'video' else '.wav'}"
        cut(path, seg, dst, video=kind == "video")
        rows.append({"id": f"{rid}_{k:03d}", kind: str(dst), **({"text": seg.text} if cues and seg.text else {})})
    return rows


def ingest(videos: str | Path, out: str | Path, *, max_seconds: float = 30.0, asr=None,
           progress: bool = True) -> IngestReport:
    """Write the manifest `out` (JSON lines, media paths relative to its folder) for a media folder
    (`progress`: a bar per file on stderr, since each is probed, cut and maybe transcribed)."""
    from tqdm.auto import tqdm

    from avcot.media import MediaError

    videos, out = Path(videos), Path(out)
    if not videos.is_dir():
        raise FileNotFoundError(f"--videos {videos} is not a folder")
    files = sorted(p for p in videos.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES + AUDIO_SUFFIXES)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows, rejects, warnings, seen = [], [], [], set()
    for path in tqdm(files, desc="ingest", unit="file", disable=not progress):
        rid = _ID_UNSAFE.sub("_", path.stem)
        rid = rid if rid not in seen else f"{rid}_{path.suffix.lstrip('.').lower()}"
        seen.add(rid)
        try:
            rows.extend(_rows_of(path.resolve(), rid, out.parent.resolve(), max_seconds, asr, warnings))
        except (MediaError, ValueError, RuntimeError, OSError) as exc:
            rejects.append({"file": str(path), "id": rid, "reason": str(exc)})
    base = out.parent.resolve()
    with out.open("w", encoding="utf-8") as f:
        for r in rows:
            for key in ("video", "audio"):
                if key in r:
                    r[key] = str(Path(r[key]).relative_to(base)) if Path(r[key]).is_relative_to(base) else r[key]
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    with out.with_suffix(".rejects.jsonl").open("w", encoding="utf-8") as f:
        for r in rejects:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return IngestReport(rows=len(rows), files=len(files), rejects=tuple(rejects), warnings=tuple(warnings))
