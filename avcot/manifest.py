"""Manifest reading and the field schema shared by training (DataModules) and the data pipeline.

`read_manifest(path)` reads .jsonl (one JSON object per line), .json (a JSON array of objects, or JSON lines
under a .json name) and .parquet, and returns one `ManifestLine` per entry: its 1-based number and either the
record or why that entry is unusable. JSON lines are decoded one line at a time, so a line that is not
UTF-8, not JSON or not an object is an error of that line alone and the rest of the file is still read.

The field checks (`row_id`, `str_field`, `path_field`, `options_field`, `answer_field`, and the record
checks `cavsr_fields` / `mcq_fields` built from them) are the one schema both paths apply, so a row gets the
same verdict and the same reason in `fit` and in the pipeline (`"text": 123` is refused by both, never
trained on as "123"). A failed check raises `FieldError`, whose message is the reject reason.
"""
from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from avcot.records import LETTERS, McqItem

MANIFEST_SUFFIXES = (".jsonl", ".json", ".parquet")


class FieldError(ValueError):
    """A manifest field is missing, empty where it must not be, or of the wrong type."""


@dataclass(frozen=True)
class ManifestLine:
    """One manifest entry: exactly one of `record` and `error` is set."""

    line: int
    """1-based line (JSON lines), element (JSON array) or row (Parquet) number."""
    record: dict[str, Any] | None = None
    error: str | None = None
    """Why the entry is unusable (not UTF-8, not JSON, not an object)."""


# ------------------------------------------------------------------------------------------------ reading


def parse_line(raw: bytes, number: int) -> ManifestLine | None:
    """One JSON-lines line as a `ManifestLine`; None for a blank line. Never raises."""
    if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]  # a UTF-8 byte-order mark some editors write
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return ManifestLine(number, error=f"not valid UTF-8 ({e.reason} at byte {e.start + 1} of the line)")
    if not text.strip():
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        return ManifestLine(number, error=f"not valid JSON ({e.msg} at column {e.colno})")
    return as_record(value, number)


def as_record(value: Any, number: int) -> ManifestLine:
    """A parsed JSON value as a `ManifestLine`: objects are records, anything else an error."""
    if isinstance(value, dict):
        return ManifestLine(number, record=value)
    return ManifestLine(number, error=f"expected a JSON object, got {type(value).__name__}")


def iter_json_lines(path: Path) -> Iterator[ManifestLine]:
    """The non-blank lines of a JSON-lines file, read as bytes and decoded one line at a time."""
    with path.open("rb") as f:
        for number, raw in enumerate(f, 1):
            entry = parse_line(raw.rstrip(b"\r\n"), number)
            if entry is not None:
                yield entry


def read_json_array(path: Path) -> list[ManifestLine]:
    """The elements of a JSON-array file; a file that is not UTF-8 or not JSON is refused whole (ValueError)."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ValueError(f"manifest {str(path)!r}: line {line}: not valid UTF-8 ({e.reason})") from e
    try:
        values = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"manifest {str(path)!r}: line {e.lineno}: not valid JSON ({e.msg})") from e
    if not isinstance(values, list):
        raise ValueError(f"manifest {str(path)!r}: expected a JSON array of objects, got {type(values).__name__}")
    return [as_record(v, n) for n, v in enumerate(values, 1)]


def read_parquet(path: Path) -> list[ManifestLine]:
    """The rows of a Parquet file (an unreadable file is refused whole: ValueError naming it)."""
    import polars as pl

    try:
        frame = pl.read_parquet(path)
    except (pl.exceptions.PolarsError, OSError) as e:
        raise ValueError(f"cannot read manifest {str(path)!r}: {e}") from e
    return [ManifestLine(n, record=r) for n, r in enumerate(frame.to_dicts(), 1)]


def is_json_array(path: Path) -> bool:
    """Whether a .json file holds one JSON array (else it is read as JSON lines)."""
    with path.open("rb") as f:
        head = f.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    return head.startswith(b"[")


def read_manifest(path: str | Path) -> list[ManifestLine]:
    """Every entry of a .jsonl, .json or .parquet manifest, in file order (blank lines skipped).

    Per-entry problems are `ManifestLine.error`s; only a missing file, an unsupported suffix or a file that
    cannot be parsed at all (Parquet, JSON array) raise, naming the file.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"manifest {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return read_parquet(path)
    if suffix == ".json" and is_json_array(path):
        return read_json_array(path)
    if suffix in (".jsonl", ".json"):
        return list(iter_json_lines(path))
    raise ValueError(f"manifest {str(path)!r}: unsupported suffix {suffix!r}; expected one of {MANIFEST_SUFFIXES}")


def manifest_source(path: str | Path) -> Path:
    """The absolute path a manifest is known by (rejects' `source`, row counts, relative media paths)."""
    return Path(path).expanduser().resolve()


def resolve_media(value: Any, base_dir: Path) -> str | None:
    """Absolute media path for a manifest cell: None/empty stays None; relative is under the manifest's dir."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        raise ValueError(f"media path must be a string, got {type(value).__name__}")
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (base_dir / path))


def manifest_records(path: str | Path) -> list[dict[str, Any]]:
    """The records of a manifest that must be entirely well formed; ValueError naming file and line otherwise."""
    out = []
    for entry in read_manifest(path):
        if entry.error is not None:
            raise ValueError(f"{path}:{entry.line}: {entry.error}")
        out.append(entry.record)
    return out


# ------------------------------------------------------------------------------------------------- fields


def row_id(record: Mapping[str, Any]) -> str:
    """The row's id as a string: a non-empty string or an integer (not a bool)."""
    value = record.get("id")
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise FieldError(f"field 'id' must be a non-empty string or an integer, got {type(value).__name__}")
    if not str(value).strip():
        raise FieldError("field 'id' is empty")
    return str(value)


def str_field(record: Mapping[str, Any], name: str, *, required: bool = True) -> str:
    """A text field: a string; missing/None/blank is an error when `required`, else "". Never coerced."""
    value = record.get(name)
    if value is None:
        if required:
            raise FieldError(f"field {name!r} is missing")
        return ""
    if not isinstance(value, str):
        raise FieldError(f"field {name!r} must be a string, got {type(value).__name__}")
    if required and not value.strip():
        raise FieldError(f"field {name!r} is empty")
    return value


def optional_text(record: Mapping[str, Any], name: str) -> str | None:
    """An optional text field (trace, difficulty): None when absent or blank, else the string."""
    value = str_field(record, name, required=False)
    return value if value.strip() else None


def path_field(record: Mapping[str, Any], name: str) -> str | None:
    """A media path as written in the manifest (not resolved); None when absent or blank."""
    return optional_text(record, name)


def options_field(record: Mapping[str, Any]) -> tuple[str, ...]:
    """2..4 non-empty option strings, in letter order."""
    options = record.get("options")
    if not isinstance(options, list | tuple) or not 2 <= len(options) <= len(LETTERS):
        raise FieldError(f"field 'options' must be a list of 2..{len(LETTERS)} strings, got {options!r}")
    if not all(isinstance(o, str) and o.strip() for o in options):
        raise FieldError(f"every option must be a non-empty string, got {options!r}")
    return tuple(options)


def answer_field(record: Mapping[str, Any], n_options: int) -> str:
    """The answer letter (case-insensitive), one of the first `n_options` letters."""
    answer = str_field(record, "answer").strip().upper()
    if answer not in LETTERS[:n_options]:
        raise FieldError(f"field 'answer' must be one of {LETTERS[:n_options]}, got {record.get('answer')!r}")
    return answer


@dataclass(frozen=True)
class CavsrFields:
    """The checked fields of a CAVSR row (media paths as written, not yet resolved)."""

    id: str
    text: str
    video: str | None
    audio: str | None
    pinyin: str = ""
    cue: str = ""
    target: str = ""
    competitor: str = ""
    trace: str | None = None


def cavsr_fields(record: Mapping[str, Any], *, text_required: bool = True) -> CavsrFields:
    """Check a CAVSR row: id, text (a non-empty string), a video and/or an audio path, optional strings.

    `text_required=False` (the data pipeline, which starts from raw clips) lets the reference be absent or
    blank (text ""); a text that is present must still be a string.
    """
    fields = CavsrFields(
        id=row_id(record), text=str_field(record, "text", required=text_required), video=path_field(record, "video"),
        audio=path_field(record, "audio"), pinyin=str_field(record, "pinyin", required=False),
        cue=str_field(record, "cue", required=False), target=str_field(record, "target", required=False),
        competitor=str_field(record, "competitor", required=False), trace=optional_text(record, "trace"))
    if fields.video is None and fields.audio is None:
        raise FieldError("needs a video and/or an audio path")
    return fields


def mcq_fields(record: Mapping[str, Any]) -> McqItem:
    """Check an MCQ row: id, question, 2..4 options, answer letter, optional media paths and strings.

    The checked row is an `McqItem` with its media paths as written (callers resolve them)."""
    options = options_field(record)
    return McqItem(
        id=row_id(record), question=str_field(record, "question"), options=options,
        answer=answer_field(record, len(options)), video=path_field(record, "video"),
        audio=path_field(record, "audio"), image=path_field(record, "image"),
        modality=str_field(record, "modality", required=False) or "av", trace=optional_text(record, "trace"),
        difficulty=optional_text(record, "difficulty"))
