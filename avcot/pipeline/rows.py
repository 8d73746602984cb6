"""Pipeline row types and input readers (JSONL or Parquet), with per-row validation.

Input rows are validated one by one: a malformed line, a missing field, a duplicate id or a
missing media file becomes a ``load`` reject naming the file and what is wrong, and the rest of
the file is still processed. Media paths are resolved against the input file's folder.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from avcot.pipeline.roles import OcrText
from avcot.pipeline.store import file_fingerprint
from avcot.records import LETTERS, Reject


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
    """(line/row number, record or error text) for every row of a .jsonl or .parquet file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pipeline input {path} does not exist")
    if path.suffix == ".parquet":
        return list(enumerate(pl.read_parquet(path).to_dicts(), 1))
    if path.suffix not in (".jsonl", ".json"):
        raise ValueError(f"pipeline input {path}: expected .jsonl or .parquet, got {path.suffix!r}")
    out: list[tuple[int, dict[str, Any] | str]] = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            out.append((n, f"not valid JSON ({exc.msg} at column {exc.colno})"))
            continue
        out.append((n, rec if isinstance(rec, dict) else f"expected a JSON object, got {type(rec).__name__}"))
    return out


def _resolve(base: Path, value: Any) -> str | None:
    """Absolute media path (relative ones are relative to the input file), None if absent."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    p = Path(str(value))
    return str((p if p.is_absolute() else base / p).resolve())


def _media(rec: Mapping[str, Any], base: Path, fields: Sequence[str]) -> tuple[dict[str, str | None], str]:
    """Resolved media paths and their fingerprint; raises ValueError naming a missing file."""
    paths = {f: _resolve(base, rec.get(f)) for f in fields}
    for f, p in paths.items():
        if p is not None and not Path(p).is_file():
            raise ValueError(f"{f} file not found: {p}")
    return paths, "|".join(file_fingerprint(p) if p else "-" for p in paths.values())


def _str(rec: Mapping[str, Any], name: str, required: bool = True) -> str:
    v = rec.get(name)
    if v is None or (isinstance(v, str) and not v.strip()):
        if required:
            raise ValueError(f"missing or empty field {name!r}")
        return ""
    if not isinstance(v, str):
        raise ValueError(f"field {name!r} must be a string, got {type(v).__name__}")
    return v


def cavsr_row(rec: Mapping[str, Any], order: int, source: Path) -> CavsrRow:
    """Validate one CAVSR input record (id, video and/or audio, text)."""
    media, sig = _media(rec, source.parent, ("video", "audio"))
    if media["video"] is None and media["audio"] is None:
        raise ValueError("needs a video and/or an audio path")
    return CavsrRow(id=_str(rec, "id"), order=order, source=str(source), video=media["video"],
                    audio=media["audio"], text=_str(rec, "text"), pinyin=_str(rec, "pinyin", False),
                    cue=_str(rec, "cue", False), target=_str(rec, "target", False),
                    competitor=_str(rec, "competitor", False), media_sig=sig)


def avrt_row(rec: Mapping[str, Any], order: int, source: Path) -> AvrtRow:
    """Validate one AVRT input record (id, question, options, answer letter, media)."""
    media, sig = _media(rec, source.parent, ("video", "audio", "image"))
    if all(v is None for v in media.values()):
        raise ValueError("needs a video, audio or image path")
    options = rec.get("options")
    if not isinstance(options, (list, tuple)) or not 2 <= len(options) <= len(LETTERS) \
            or not all(isinstance(o, str) for o in options):
        raise ValueError(f"options must be a list of 2..{len(LETTERS)} strings, got {options!r}")
    answer = _str(rec, "answer").strip().upper()
    if answer not in LETTERS[: len(options)]:
        raise ValueError(f"answer {answer!r} is not one of {LETTERS[: len(options)]}")
    return AvrtRow(id=_str(rec, "id"), order=order, source=str(source), question=_str(rec, "question"),
                   options=tuple(options), answer=answer, video=media["video"], audio=media["audio"],
                   image=media["image"], modality=_str(rec, "modality", False) or "av", media_sig=sig)


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
