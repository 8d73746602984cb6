"""Public benchmarks' released formats -> our manifests (`Clip` rows for CAVSR, `McqItem` rows for MCQ).

Each loader reads the annotation file exactly as the benchmark ships it, resolves media paths against
the dataset root, and returns a `Loaded` (records + rejects): a malformed row is recorded as a
`Reject` naming the file, the row and what is wrong, and the batch carries on. The formats, with the
sources they were read from, are documented in docs/eval.md.

- Chinese-LiPS  meta_{all,train,valid,test}.csv, columns ID, TOPIC, WAV, PPT, FACE, TEXT -> Clip
  (video = the slide video `PPT` by default, the lip video `FACE` with view="face").
- OmniBench     dataset/*.jsonl (a JSON array or JSON lines): index, task type, audio type, question,
  options, answer (the option text), audio_path, image_path (basenames under mm_data/audio and
  mm_data/image) -> McqItem with audio + image.
- Daily-Omni    qa.json: Question, Choice (["A. ...", ...]), Answer (letter), video_id, Type,
  video_category, video_duration; video at Videos/<id>/<id>_video.mp4 -> McqItem (audio from video).
- AVQA          train_qa.json / val_qa.json: id, video_name, video_id, question_text, multi_choice
  (option texts), answer (0-based index), question_type; video at <root>/<video_name>.mp4 -> McqItem.
- MMAR          MMAR-meta.json: id, audio_path ("./audio/<id>.wav"), question, choices (option
  texts), answer (the option text), modality, category, sub-category -> McqItem (audio only).

Departure: `McqItem` has no category field, so the benchmarks' task types are not carried into the
manifest (per-category accuracy would need a field in avcot.records).
"""
from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from avcot.records import LETTERS, Clip, McqItem, Reject

BENCHMARKS = ("chinese_lips", "omnibench", "daily_omni", "avqa", "mmar")
_LETTER_PREFIX = re.compile(r"^\s*\(?([A-Da-d])[.)．:：]\s*")  # "A. text", "(B) text", "C: text"


class RowError(ValueError):
    """One annotation row cannot be converted; the message says which field and why."""


@dataclass(frozen=True)
class Loaded:
    """What a loader produced: records in file order, plus the rows it refused."""

    records: tuple
    """Clip rows (Chinese-LiPS) or McqItem rows (the MCQ benchmarks)."""
    rejects: tuple[Reject, ...] = ()


def read_json_rows(path: Path) -> list[dict]:
    """Rows of a JSON array file or a JSON-lines file (OmniBench names its JSON array `.jsonl`)."""
    text = Path(path).read_text(encoding="utf-8").lstrip("\ufeff")
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            rows = json.loads(stripped)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from e
    else:
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{n}: not valid JSON ({e})") from e
    if not all(isinstance(r, dict) for r in rows):
        raise ValueError(f"{path}: expected a list of JSON objects")
    return rows


def _field(row: dict, name: str) -> object:
    value = row.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise RowError(f"missing field {name!r}")
    return value


def _resolve(root: Path, rel: str) -> str:
    """Media path: absolute paths stay, relative ones ("./audio/x.wav") are joined to the dataset root."""
    p = Path(rel)
    return str(p if p.is_absolute() else (root / p).resolve())


def _strip_letter(option: str, index: int) -> str:
    """'A. text' -> 'text' when the prefix letter matches the option's position; else unchanged."""
    m = _LETTER_PREFIX.match(option)
    if m and m.group(1).upper() == LETTERS[index]:
        return option[m.end():].strip()
    return option.strip()


def _options(row: dict, name: str) -> tuple[str, ...]:
    raw = _field(row, name)
    if not isinstance(raw, list) or not all(isinstance(o, str) for o in raw):
        raise RowError(f"{name!r} must be a list of strings, got {type(raw).__name__}")
    if not 2 <= len(raw) <= len(LETTERS):
        raise RowError(f"{name!r} has {len(raw)} options; between 2 and {len(LETTERS)} are supported")
    return tuple(_strip_letter(o, i) for i, o in enumerate(raw))


def _letter_of_text(answer: str, options: tuple[str, ...]) -> str:
    """Letter of the option whose text equals `answer` (exact first, then case/space-insensitive)."""
    if answer in options:
        return LETTERS[options.index(answer)]
    folded = [o.strip().casefold() for o in options]
    if answer.strip().casefold() in folded:
        return LETTERS[folded.index(answer.strip().casefold())]
    raise RowError(f"answer {answer!r} is not one of the options {list(options)}")


def _convert_all(path: Path, rows: Iterable[dict], convert: Callable[[int, dict], object],
                 stage: str) -> Loaded:
    records, rejects = [], []
    for i, row in enumerate(rows):
        try:
            records.append(convert(i, row))
        except RowError as e:
            row_id = str(row.get("id", row.get("index", row.get("ID", i))))
            rejects.append(Reject(row_id=row_id, stage=stage, reason=f"row {i}: {e}", source=str(path)))
    return Loaded(tuple(records), tuple(rejects))


def load_chinese_lips(meta_csv: str | Path, *, root: str | Path | None = None,
                      view: Literal["ppt", "face"] = "ppt") -> Loaded:
    """Chinese-LiPS `meta_*.csv` (ID, TOPIC, WAV, PPT, FACE, TEXT) -> Clip rows.

    `root` is the directory the WAV/PPT/FACE paths are relative to (default: the CSV's folder).
    `view` picks the visual stream: the presentation-slide video (the visual context CAVSR reads) or
    the lip-reading video. Audio is the 48 kHz WAV; media loading resamples it to 16 kHz.
    """
    path = Path(meta_csv)
    base = Path(root) if root is not None else path.parent
    column = {"ppt": "PPT", "face": "FACE"}[view]
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        missing = {"ID", "WAV", column, "TEXT"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: not a Chinese-LiPS meta CSV, missing columns {sorted(missing)}")
        rows = list(reader)

    def convert(i: int, row: dict) -> Clip:
        return Clip(id=str(_field(row, "ID")), video=_resolve(base, str(_field(row, column))),
                    audio=_resolve(base, str(_field(row, "WAV"))), text=str(_field(row, "TEXT")).strip())

    return _convert_all(path, rows, convert, "load:chinese_lips")


def load_omnibench(jsonl: str | Path, *, root: str | Path | None = None) -> Loaded:
    """OmniBench `dataset/batch-*.jsonl` -> McqItem rows (image + audio, modality "av").

    `root` is the folder holding `mm_data/` (default: the parent of the annotation's folder).
    """
    path = Path(jsonl)
    base = Path(root) if root is not None else path.parent.parent

    def convert(i: int, row: dict) -> McqItem:
        options = _options(row, "options")
        return McqItem(
            id=f"omnibench-{_field(row, 'index')}", question=str(_field(row, "question")), options=options,
            answer=_letter_of_text(str(_field(row, "answer")), options),
            audio=_resolve(base / "mm_data" / "audio", str(_field(row, "audio_path"))),
            image=_resolve(base / "mm_data" / "image", str(_field(row, "image_path"))), modality="av",
        )

    return _convert_all(path, read_json_rows(path), convert, "load:omnibench")


def load_daily_omni(qa_json: str | Path, *, root: str | Path | None = None) -> Loaded:
    """Daily-Omni `qa.json` -> McqItem rows (video with its own audio track, modality "av").

    `root` is the folder holding `Videos/` (default: the folder of qa.json).
    """
    path = Path(qa_json)
    base = Path(root) if root is not None else path.parent

    def convert(i: int, row: dict) -> McqItem:
        options = _options(row, "Choice")
        answer = str(_field(row, "Answer")).strip().upper()
        if answer not in LETTERS[: len(options)]:
            raise RowError(f"Answer {answer!r} is not a letter among {list(LETTERS[:len(options)])}")
        vid = str(_field(row, "video_id"))
        return McqItem(id=f"daily_omni-{vid}-{i}", question=str(_field(row, "Question")), options=options,
                       answer=answer, video=str((base / "Videos" / vid / f"{vid}_video.mp4").resolve()),
                       modality="av")

    return _convert_all(path, read_json_rows(path), convert, "load:daily_omni")


def load_avqa(qa_json: str | Path, *, root: str | Path | None = None) -> Loaded:
    """AVQA `train_qa.json` / `val_qa.json` -> McqItem rows (video with audio track, modality "av").

    `root` is the folder holding `<video_name>.mp4` (default: a `videos/` folder beside the JSON).
    """
    path = Path(qa_json)
    base = Path(root) if root is not None else path.parent / "videos"

    def convert(i: int, row: dict) -> McqItem:
        options = _options(row, "multi_choice")
        raw = _field(row, "answer")
        if isinstance(raw, bool) or not isinstance(raw, int | str) or not str(raw).strip().isdigit():
            raise RowError(f"answer must be a 0-based option index, got {raw!r}")
        index = int(raw)
        if index >= len(options):
            raise RowError(f"answer index {index} is out of range for {len(options)} options")
        return McqItem(id=f"avqa-{row.get('id', i)}", question=str(_field(row, "question_text")),
                       options=options, answer=LETTERS[index],
                       video=_resolve(base, f"{_field(row, 'video_name')}.mp4"), modality="av")

    return _convert_all(path, read_json_rows(path), convert, "load:avqa")


def load_mmar(meta_json: str | Path, *, root: str | Path | None = None) -> Loaded:
    """MMAR `MMAR-meta.json` -> McqItem rows (audio only, modality "a").

    `root` is the folder `audio_path` ("./audio/<id>.wav") is relative to (default: the JSON's folder).
    """
    path = Path(meta_json)
    base = Path(root) if root is not None else path.parent

    def convert(i: int, row: dict) -> McqItem:
        options = _options(row, "choices")
        return McqItem(id=f"mmar-{_field(row, 'id')}", question=str(_field(row, "question")), options=options,
                       answer=_letter_of_text(str(_field(row, "answer")), options),
                       audio=_resolve(base, str(_field(row, "audio_path"))), modality="a")

    return _convert_all(path, read_json_rows(path), convert, "load:mmar")


LOADERS: dict[str, Callable[..., Loaded]] = {
    "chinese_lips": load_chinese_lips, "omnibench": load_omnibench, "daily_omni": load_daily_omni,
    "avqa": load_avqa, "mmar": load_mmar,
}


def record_row(record: Clip | McqItem) -> dict:
    """JSON-ready manifest row of a record (tuples become lists)."""
    row = asdict(record)
    if isinstance(record, McqItem):
        row["options"] = list(record.options)
    return row


def write_manifest(records: Iterable[Clip | McqItem], path: str | Path) -> Path:
    """Write records as a JSON-lines manifest (one record per line, UTF-8, no ASCII escaping)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(record_row(r), ensure_ascii=False) + "\n")
    return out


def write_rejects(rejects: Iterable[Reject], path: str | Path) -> Path:
    """Write rejects as JSON lines beside the manifest."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as f:
        for r in rejects:
            f.write(json.dumps(asdict(r), ensure_ascii=False) + "\n")
    return out


def convert(benchmark: str, src: str | Path, out: str | Path, *, root: str | Path | None = None) -> Loaded:
    """Load benchmark `src` and write `out` (manifest JSONL) + `out`.rejects.jsonl when rows were refused."""
    if benchmark not in LOADERS:
        raise ValueError(f"unknown benchmark {benchmark!r}; choose one of {', '.join(BENCHMARKS)}")
    loaded = LOADERS[benchmark](src, root=root)
    write_manifest(loaded.records, out)
    if loaded.rejects:
        write_rejects(loaded.rejects, Path(str(out) + ".rejects.jsonl"))
    return loaded
