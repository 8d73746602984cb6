"""Resumable per-stage storage: Parquet shards keyed by row id + a content hash.

Every stage owns one folder ``<out>/stages/<stage>/`` of shard files. A shard holds the outcomes
of a small batch of rows and is written atomically (temp file in the same folder, then
``os.replace``), so a killed run leaves either a whole shard or none: nothing half-written is
ever read back. Each outcome carries ``key = sha256(row payload, stage, stage config, backend
identity)``; a rerun computes the keys of its input rows and skips every key already stored, so
a resumed run finishes the missing rows only and never duplicates one. Changing a stage's
config or backend changes the keys, so stale outcomes are simply not matched (they stay on disk
until the folder is deleted).

Only permanent outcomes are stored (kept, filtered, rejected). A row that failed for a transient
reason (server down, timeout, 429, 5xx after the retries) is a ``failed`` outcome of this run
only: it is never written, so the next run sees the row as pending and retries it.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import polars as pl

Status = Literal["kept", "filtered", "rejected", "failed"]
STATUSES: tuple[Status, ...] = ("kept", "filtered", "rejected", "failed")
STORED: tuple[Status, ...] = ("kept", "filtered", "rejected")
"""Permanent statuses; 'failed' (transient, this run only) is never written to a shard."""

SHARD_SCHEMA: dict[str, Any] = {
    "key": pl.String,
    "row_id": pl.String,
    "order": pl.Int64,
    "status": pl.String,
    "reason": pl.String,
    "source": pl.String,
    "payload": pl.String,
}


@dataclass(frozen=True)
class Outcome:
    """What one stage did with one row."""

    key: str
    """Content hash of (input payload, stage, stage config, backend identity)."""
    row_id: str
    order: int
    """Position of the row in the input file; exports are sorted by it."""
    status: Status
    reason: str
    """Why the row was filtered or rejected ('' when kept)."""
    source: str
    """File the row came from (input manifest or the media file that failed)."""
    payload: str
    """JSON of the row after the stage (kept) or of the row the stage received (otherwise)."""
    failure: str = ""
    """For 'failed' only: what went wrong, for grouping ('HTTP 503 at <url>'); not stored."""


def canonical_json(value: Any) -> str:
    """Stable JSON (sorted keys, no spaces, UTF-8 kept) used for hashing and payloads."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def row_key(payload: str, stage: str, stage_config: Mapping[str, Any], backend_identity: str) -> str:
    """Hash that decides whether a stored outcome can be reused for this row."""
    blob = canonical_json(
        {"payload": payload, "stage": stage, "config": dict(stage_config), "backend": backend_identity}
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def file_fingerprint(path: str | os.PathLike[str], *, head_bytes: int = 1 << 20) -> str:
    """Cheap content fingerprint (size + sha256 of the first MiB) so edited media change the keys."""
    p = Path(path)
    if not p.is_file():
        return "missing"
    h = hashlib.sha256()
    with p.open("rb") as f:
        h.update(f.read(head_bytes))
    return f"{p.stat().st_size}:{h.hexdigest()[:16]}"


class StageStore:
    """The shard folder of one stage: read finished outcomes, append new shards atomically."""

    def __init__(self, root: str | os.PathLike[str], stage: str) -> None:
        self.stage = stage
        self.dir = Path(root) / "stages" / stage
        self.dir.mkdir(parents=True, exist_ok=True)
        self._clean_temp_files()

    def _clean_temp_files(self) -> None:
        """Remove temp files a killed run left behind; they never count as written."""
        for tmp in self.dir.glob(".tmp-*"):
            try:
                tmp.unlink()
            except FileNotFoundError:
                pass  # another process cleaned it first

    def shard_paths(self) -> list[Path]:
        """Finished shard files, oldest first (names start with a time stamp)."""
        return sorted(self.dir.glob("shard-*.parquet"))

    def load(self) -> dict[str, Outcome]:
        """All stored outcomes by key; on a duplicated key the oldest shard wins."""
        done: dict[str, Outcome] = {}
        for path in self.shard_paths():
            try:
                frame = pl.read_parquet(path)
            except Exception as exc:  # noqa: BLE001 - a damaged shard is re-done, not fatal
                raise RuntimeError(f"{path}: unreadable shard ({exc}); delete it to recompute") from exc
            for rec in frame.iter_rows(named=True):
                done.setdefault(rec["key"], Outcome(**rec))
        return done

    def write_shard(self, outcomes: Sequence[Outcome]) -> Path | None:
        """Write one shard atomically; returns its path (None for an empty batch)."""
        if not outcomes:
            return None
        transient = [o.row_id for o in outcomes if o.status not in STORED]
        if transient:
            raise ValueError(f"stage {self.stage}: transient outcomes must not be stored (rows {transient[:5]})")
        frame = pl.DataFrame([{k: getattr(o, k) for k in SHARD_SCHEMA} for o in outcomes], schema=SHARD_SCHEMA)
        name = f"shard-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
        tmp = self.dir / f".tmp-{name}"
        frame.write_parquet(tmp)
        with tmp.open("rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, self.dir / name)
        return self.dir / name


def write_table_atomic(rows: Iterable[Mapping[str, Any]], path: Path, schema: Mapping[str, Any]) -> None:
    """Write a Parquet table (explicit schema, so empty tables still have columns) atomically."""
    frame = pl.DataFrame(list(rows), schema=dict(schema))
    tmp = path.with_name(f".tmp-{path.name}")
    frame.write_parquet(tmp)
    os.replace(tmp, path)


def write_jsonl_atomic(rows: Iterable[Mapping[str, Any]], path: Path) -> None:
    """Write JSON lines atomically (UTF-8, one object per line, keys in the given order)."""
    tmp = path.with_name(f".tmp-{path.name}")
    with tmp.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
