"""Pipeline row types and input readers (JSONL or Parquet), with per-row validation.

Input rows are validated one by one: a malformed line (not UTF-8, not JSON), a missing or mistyped
field (`avcot.manifest`'s schema, shared with training), a duplicate id or a missing media file becomes
a ``load`` reject naming the file, the line and what is wrong, and the rest of the file is still
processed. Media paths are resolved against the input file's folder.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from avcot.manifest import MANIFEST_SUFFIXES, cavsr_fields, mcq_fields, read_manifest, resolve_media
from avcot.pipeline.roles import OcrText
from avcot.pipeline.store import file_fingerprint
from avcot.records import Reject


def _from_dict(cls: type, raw: Mapping[str, Any]) -> Any:
    """Rebuild a row dataclass from JSON: lists -> tuples, OCR dicts -> OcrText."""
    values = {}
    for f in dataclasses.fields(cls):
        if f.name not in raw:
            continue
        v = raw[f.name]
        if f.name == "ocr":
            v = tuple(OcrText(**{**o, "box": tuple(o["box"])}) for o in v)
        elif isinstance(v, list):
            v = tuple(v)
        values[f.name] = v
    return cls(**values)


@dataclass(frozen=True)
class CavsrRow:
    """A CAVSR clip moving through the pipeline; each stage fills in its fields."""

    id: str
    order: int
    source: str
    """Input file the row came from."""
    video: str | None
    audio: str | None
    text: str
    """Reference transcript; "" for a raw clip (the trace's transcription becomes the target)."""
    pinyin: str = ""
    cue: str = ""
    target: str = ""
    competitor: str = ""
    media_sig: str = ""
    """Fingerprint of the media files, so edited media are recomputed."""
    asr_a: str = ""
    asr_b: str = ""
    asr_cer: float | None = None
    judge_reason: str = ""
    ocr: tuple[OcrText, ...] = ()
    caption: str = ""
    trace: str = ""
    trace_transcription: str = ""
    trace_match: bool | None = None

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> CavsrRow:
        return _from_dict(cls, raw)


@dataclass(frozen=True)
class AvrtRow:
    """An AVRT multiple-choice item moving through the pipeline."""

    id: str
    order: int
    source: str
    question: str
    options: tuple[str, ...]
    answer: str
    video: str | None = None
    audio: str | None = None
    image: str | None = None
    modality: str = "av"
    media_sig: str = ""
    visual_reasoning: str = ""
    visual_answer: str | None = None
    audio_reasoning: str = ""
    audio_answer: str | None = None
    difficulty: str | None = None
    trace: str = ""

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> AvrtRow:
        return _from_dict(cls, raw)


def read_records(path: str | Path) -> list[tuple[int, dict[str, Any] | str]]:
    """(line/row number, record or error text) for every entry of a .jsonl, .json or .parquet file.

    JSON lines are decoded one line at a time (`avcot.manifest.read_manifest`): a line that is not UTF-8,
    not JSON or not an object is that line's error, with its real 1-based number, and the rest is read.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pipeline input {path} does not exist")
    if path.suffix.lower() not in MANIFEST_SUFFIXES:
        raise ValueError(f"pipeline input {path}: expected .jsonl, .json or .parquet, got {path.suffix!r}")
    return [(e.line, e.record if e.error is None else e.error) for e in read_manifest(path)]


def _media(paths: Mapping[str, str | None], base: Path) -> tuple[dict[str, str | None], str]:
    """Absolute, resolved media paths (relative ones under the input file's folder, as training reads them)
    and their fingerprint; raises ValueError naming a missing file."""
    under = {f: resolve_media(p, base) for f, p in paths.items()}
    resolved = {f: str(Path(p).resolve()) if p else None for f, p in under.items()}
    for f, p in resolved.items():
        if p is not None and not Path(p).is_file():
            raise ValueError(f"{f} file not found: {p}")
    return resolved, "|".join(file_fingerprint(p) if p else "-" for p in resolved.values())


def cavsr_row(rec: Mapping[str, Any], order: int, source: Path) -> CavsrRow:
    """Validate one CAVSR input record (`avcot.manifest.cavsr_fields`, the schema training applies too)."""
    f = cavsr_fields(rec, text_required=False)  # raw clips: the pipeline writes the transcript
    media, sig = _media({"video": f.video, "audio": f.audio}, source.parent)
    return CavsrRow(id=f.id, order=order, source=str(source), video=media["video"], audio=media["audio"],
                    text=f.text, pinyin=f.pinyin, cue=f.cue, target=f.target, competitor=f.competitor,
                    media_sig=sig)


def avrt_row(rec: Mapping[str, Any], order: int, source: Path) -> AvrtRow:
    """Validate one AVRT input record (`avcot.manifest.mcq_fields`, the schema training applies too)."""
    f = mcq_fields(rec)
    media, sig = _media({"video": f.video, "audio": f.audio, "image": f.image}, source.parent)
    if all(v is None for v in media.values()):
        raise ValueError("needs a video, audio or image path")
    return AvrtRow(id=f.id, order=order, source=str(source), question=f.question, options=f.options,
                   answer=f.answer, video=media["video"], audio=media["audio"], image=media["image"],
                   modality=f.modality, media_sig=sig)


def load_rows(path: str | Path, kind: str, limit: int | None = None) -> tuple[list[Any], list[Reject], int]:
    """(valid rows, load rejects, rows_in) of an input file; `kind` is 'cavsr' or 'avrt'."""
    path = Path(path).resolve()
    build = {"cavsr": cavsr_row, "avrt": avrt_row}[kind]
    rows: list[Any] = []
    rejects: list[Reject] = []
    seen: set[str] = set()
    records = read_records(path)[:limit] if limit else read_records(path)
    for order, (n, rec) in enumerate(records):
        rid = str(rec.get("id") or f"{path.name}:{n}") if isinstance(rec, dict) else f"{path.name}:{n}"
        try:
            if isinstance(rec, str):
                raise ValueError(rec)
            row = build(rec, order, path)
            if row.id in seen:
                raise ValueError(f"duplicate id {row.id!r}")
        except ValueError as exc:
            rejects.append(Reject(row_id=rid, stage="load", reason=f"{path.name}:{n}: {exc}", source=str(path)))
            continue
        seen.add(row.id)
        rows.append(row)
    return rows, rejects, len(records)
