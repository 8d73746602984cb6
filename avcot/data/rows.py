"""Manifest rows for training and eval: read, check, count, reject, split.

- `load_manifest(path, ...)`: the manifest read line by line (`avcot.manifest.read_manifest`: a line that is not
  UTF-8, not JSON or not an object is that line's reject), each record checked and typed by a task's `check`
  (the field schema of `avcot.manifest`, shared with the pipeline), duplicate ids refused. Rejects name the
  line; a missing required column is a structural error.
- `RejectLog` + `reject_or_raise`: the on_bad_row policy. "skip" appends one JSONL line per bad row
  (row_id, stage, reason, source) and counts it once per (manifest, line); "error" raises `BadRowError`
  naming manifest file, row and line.
- `media_problem(...)`: the cheap up-front media check (files exist, headers readable).
- `split_rows(...)`: seeded train/val split by a fraction, optionally by a group column (e.g. sentence_id)
  so that validation sentences are unseen in training.
"""
from __future__ import annotations

import json
import logging
import math
import random
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from avcot.manifest import read_manifest
from avcot.records import Reject

log = logging.getLogger(__name__)

BadRowPolicy = Literal["skip", "error"]


class BadRowError(ValueError):
    """A manifest row (or its media) is unusable and on_bad_row="error"."""


@dataclass(frozen=True)
class RowCounts:
    """How many manifest rows came in, were used, and were rejected (rows_in = rows_used + rows_rejected)."""

    rows_in: int
    rows_used: int
    rows_rejected: int


class StageError(ValueError):
    """A row check failed at a named stage ("manifest", "target", "media"); the message is the reason."""

    def __init__(self, stage: str, reason: str):
        super().__init__(reason)
        self.stage = stage


@dataclass(frozen=True)
class ManifestRow:
    """A manifest row that passed the up-front checks: its line, the raw record and the typed item built from it."""

    line: int
    record: dict
    item: Any
    """The `Clip` / `McqItem` the task's check built (its `.id` is the row id)."""


class RejectLog:
    """Rejects JSONL (one `Reject` per line) and the count of rejected rows per manifest.

    A row is recorded once per (manifest, line) however often it fails (every epoch, on several ranks);
    `rejected(source)` counts those rows. Thread-safe; lines are written whole and flushed.
    """

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path is not None else None
        self.count = 0
        self.lines: dict[str, set[int]] = {}
        """Rejected line numbers per manifest (source)."""
        self.first: dict[str, str] = {}
        """The first reject's "stage: reason" per manifest (what an error about a whole manifest quotes)."""
        self._lock = threading.Lock()

    def add(self, reject: Reject, line: int | None = None) -> bool:
        """Record `reject` (of manifest line `line`); False when that row was already recorded."""
        with self._lock:
            if line is not None:
                seen = self.lines.setdefault(reject.source, set())
                if line in seen:
                    return False
                seen.add(line)
            self.count += 1
            self.first.setdefault(reject.source, f"{reject.stage}: {reject.reason}")
            log.warning("rejected row %s from %s at %s: %s", reject.row_id, reject.source, reject.stage,
                        reject.reason)
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with self.path.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(asdict(reject), ensure_ascii=False) + "\n")
            return True

    def rejected(self, source: str) -> int:
        """Rows of manifest `source` rejected so far (each row once)."""
        return len(self.lines.get(source, ()))


def count_rows(rows_in: dict[str, int], rejected: dict[str, set[int]]) -> dict[str, RowCounts]:
    """RowCounts per manifest from its row total and its rejected lines."""
    return {src: RowCounts(n, n - len(rejected.get(src, ())), len(rejected.get(src, ()))) for src, n in rows_in.items()}


def require_rows(kept: list, counts: RowCounts, path: str, rejects: RejectLog) -> list:
    """`kept` unchanged, or a clear error when every row of the manifest was rejected.

    Training on an empty set would "succeed" with zero steps; say which file and where the reasons are.
    """
    if not kept:
        where = f"; reasons in {rejects.path}" if rejects.path else ""
        first = f" (the first: {rejects.first[path]})" if path in rejects.first else ""
        raise BadRowError(f"{path}: no usable rows: all {counts.rows_in} rows were rejected{first}{where}")
    return kept


def reject_or_raise(reject: Reject, policy: BadRowPolicy, rejects: RejectLog | None, line: int | None = None) -> None:
    """Apply the bad-row policy: raise naming file and row ("error"), or record the reject ("skip")."""
    if policy == "error":
        raise BadRowError(f"{reject.source}: row {reject.row_id}: {reject.stage}: {reject.reason}")
    if policy != "skip":
        raise ValueError(f"on_bad_row must be 'skip' or 'error', got {policy!r}")
    if rejects is not None:
        rejects.add(reject, line)


def check_columns(records: Sequence[dict], required: Iterable[str], source: str) -> None:
    """Missing required columns is a structural error (never skippable): every row would be rejected."""
    present = set().union(*(r.keys() for r in records))
    missing = [c for c in required if c not in present]
    if records and missing:
        raise ValueError(f"manifest {source!r} lacks required column(s) {missing}; it has {sorted(present)}")


def load_manifest(path: Path, *, required: Iterable[str], build: Callable[[dict], Any], policy: BadRowPolicy,
                  rejects: RejectLog | None) -> tuple[list[ManifestRow], int]:
    """(rows that passed, rows_in) of a manifest read line by line (`avcot.manifest.read_manifest`).

    `build(record)` returns the typed item or raises ValueError (`StageError` to name the stage). An
    unreadable line, a failed check or a duplicate id is a reject naming the line (or an error, per
    `policy`); a missing required column or a file with no rows at all is a structural error.
    """
    source = str(path)
    entries = read_manifest(path)
    if not entries:
        raise ValueError(f"manifest {source!r} has no rows")
    check_columns([e.record for e in entries if e.record is not None], required, source)
    kept: list[ManifestRow] = []
    seen: set[str] = set()
    for e in entries:
        rid = row_label(e.record or {}, e.line)
        try:
            if e.error is not None:
                raise StageError("manifest", e.error)
            item = build(e.record)
            if item.id in seen:
                raise StageError("manifest", f"duplicate id {item.id!r}")
        except ValueError as exc:
            stage = exc.stage if isinstance(exc, StageError) else "manifest"
            reject_or_raise(Reject(rid, stage, f"line {e.line}: {exc}", source), policy, rejects, e.line)
            continue
        seen.add(item.id)
        kept.append(ManifestRow(e.line, e.record, item))
    return kept, len(entries)


def row_label(row: dict, line: int) -> str:
    """How a row is named in errors and rejects: its id when it has a usable one, else its line."""
    rid = row.get("id")
    return str(rid) if isinstance(rid, str | int) and str(rid).strip() else f"line {line}"


def media_problem(media: Sequence[str | None], files: Sequence[str | None] = ()) -> str | None:
    """Why a row's media cannot be used up front, or None: a file is missing, or a video/audio file in
    `media` has unreadable headers (`avcot.media.probe`, cached per file). `files` (images) must only exist.
    Decoding can still fail later (a truncated stream): `check_media` decodes every row to find those."""
    from avcot import media as av

    for p in [*media, *files]:
        if p is not None and not Path(p).is_file():
            return f"media file {p!r} does not exist"
    for p in media:
        if p is None:
            continue
        try:
            av.probe(p)
        except Exception as e:  # noqa: BLE001 - any probe failure means the file is unusable
            return f"media file {p!r} cannot be read: {e}"
    return None


def split_rows(rows: Sequence[dict], val_fraction: float, seed: int,
               group_column: str | None = None) -> tuple[list[dict], list[dict]]:
    """Seeded (train, val) split. With `group_column` present in the rows, whole groups go to one side.

    At least one row (group) goes to val whenever val_fraction > 0 and there are two or more.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    use_groups = group_column is not None and all(r.get(group_column) is not None for r in rows)
    keys = [str(r[group_column]) if use_groups else str(r["id"]) for r in rows]
    groups = sorted(set(keys))
    random.Random(seed).shuffle(groups)
    n_val = math.floor(len(groups) * val_fraction)
    if val_fraction > 0 and n_val == 0 and len(groups) > 1:
        n_val = 1
    val_keys = set(groups[:n_val])
    train = [r for r, k in zip(rows, keys) if k not in val_keys]
    val = [r for r, k in zip(rows, keys) if k in val_keys]
    return train, val
