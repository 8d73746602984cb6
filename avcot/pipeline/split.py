"""Split a pipeline export into train/val/test (``python -m avcot.pipeline split``).

The unit of the split is a *source clip*, not a row: rows that come from one recording land in the same
split, so no test clip is ever heard during training. The grouping key of a row (`group_key`) is

1. the value of ``group_column`` when one is named and the row has it (e.g. a speaker or session column);
2. else its media file (``video``, else ``audio``, else ``image``) without the suffix, so the ``-v``, ``-a``
   and ``-av`` questions the AVRT pipeline asks about one clip share a key (``clip.mp4`` / ``clip.wav``);
3. for a piece that ``ingest`` cut from a long recording (``segments/<id>_<NNN>.<ext>``) the recording's key
   ``segments/<id>``, so all pieces of one recording stay together.

Groups are ordered by a seeded hash of their key and handed to test, then val, until each holds its
fraction of the rows (a split with a positive fraction gets at least one group, train always keeps one);
the rest is train. The same manifest and seed always give the same files; adding rows may move groups,
so split once and keep the files. Rows without a usable id (and unreadable lines, and repeated ids) are
rejects with the line and the reason, in ``split_rejects.jsonl``; the others are all written.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

SPLITS = ("train", "val", "test")
MEDIA_FIELDS = ("video", "audio", "image")
_SEGMENT = re.compile(r"^(?P<source>.+)_\d{3}$")
"""The `<id>_<NNN>` stem ingest gives the pieces of a cut recording."""


@dataclass(frozen=True)
class SplitReport:
    """What a split wrote: rows per split, groups, and the rejected lines."""

    rows_in: int
    counts: Mapping[str, int]
    groups: Mapping[str, int]
    rejects: tuple[dict, ...]
    files: tuple[Path, ...]

    def line(self) -> str:
        """The one-line summary the command prints."""
        per = " ".join(f"{s}={self.counts[s]} ({self.groups[s]} groups)" for s in SPLITS)
        return f"rows_in={self.rows_in} {per} rejected={len(self.rejects)}"


def _draw(seed: int, group: str) -> str:
    """A seeded, platform-independent sort key (Python's hash() is salted per process)."""
    return hashlib.sha256(f"{seed}\0{group}".encode()).hexdigest()


def group_key(record: Mapping[str, Any], group_column: str | None = None) -> str:
    """The source-clip key of a row (see the module docstring); its id when it names no media."""
    if group_column and record.get(group_column) not in (None, ""):
        return f"{group_column}={record[group_column]}"
    media = next((record[f] for f in MEDIA_FIELDS if isinstance(record.get(f), str) and record[f].strip()), None)
    if media is None:
        return f"id={record.get('id')}"
    path = PurePosixPath(media.replace("\\", "/"))
    stem = path.stem
    cut = _SEGMENT.match(stem)
    if path.parent.name == "segments" and cut:
        stem = cut.group("source")
    return f"media={path.parent / stem}"


def _targets(fractions: Mapping[str, float], n_rows: int) -> dict[str, int]:
    """Rows each held-out split should get; a positive fraction gets at least one row."""
    for name, frac in fractions.items():
        if name == "train" or name not in SPLITS:
            raise ValueError(f"held-out splits are 'val' and 'test', got {name!r}")
        if not 0.0 <= frac < 1.0:
            raise ValueError(f"--{name} must be in [0, 1), got {frac}")
    if sum(fractions.values()) >= 1.0:
        raise ValueError(f"the held-out fractions {dict(fractions)} leave nothing for train")
    return {name: max(1, round(frac * n_rows)) if frac > 0 else 0 for name, frac in fractions.items()}


def assign_splits(ids: Sequence[str], groups: Sequence[str], fractions: Mapping[str, float],
                  seed: int) -> dict[str, str]:
    """id -> 'train' | 'val' | 'test'; rows sharing a group always share a split.

    `fractions` gives the held-out splits ({'val': 0.05, 'test': 0.05}); train is the rest. Groups are taken
    in a seeded hash order; a split stops taking groups when the next one would overshoot its target by more
    than half its size, so each fraction is met to within half the largest group.
    """
    if len(ids) != len(groups):
        raise ValueError(f"{len(ids)} ids but {len(groups)} group keys")
    repeated = [i for i, n in Counter(ids).items() if n > 1]
    if repeated:
        raise ValueError(f"ids must be unique; repeated: {repeated[:5]}")
    sizes = Counter(groups)
    order = sorted(sizes, key=lambda g: (_draw(seed, g), g))
    targets = _targets(fractions, len(ids))
    split_of: dict[str, str] = {}
    pos = 0
    for name in ("test", "val"):  # the small splits first, so rounding never starves them
        taken = 0
        while pos < len(order) - 1 and taken < targets.get(name, 0):
            size = sizes[order[pos]]
            if taken and taken + size / 2 > targets[name]:
                break
            split_of[order[pos]] = name
            taken += size
            pos += 1
    return {i: split_of.get(g, "train") for i, g in zip(ids, groups)}


def rebase_media(record: Mapping[str, Any], src_dir: Path, out_dir: Path) -> dict[str, Any]:
    """The record with relative media paths re-expressed relative to `out_dir` (manifests' media paths are
    relative to the manifest's own folder); absolute paths and other fields are unchanged."""
    row = dict(record)
    for f in MEDIA_FIELDS:
        value = row.get(f)
        if isinstance(value, str) and value.strip() and not Path(value).is_absolute():
            row[f] = os.path.relpath((src_dir / value).resolve(), out_dir.resolve())
    return row


def _accepted(manifest: Path) -> tuple[list[dict], list[dict], int]:
    """(rows with a usable, unique id, rejects naming file:line and reason, rows_in)."""
    from avcot.manifest import FieldError, read_manifest, row_id

    rows, rejects, seen = [], [], {}
    entries = read_manifest(manifest)
    for entry in entries:
        where = f"{manifest.name}:{entry.line}"
        if entry.error is not None:
            rejects.append({"line": entry.line, "id": None, "reason": f"{where}: {entry.error}"})
            continue
        try:
            rid = row_id(entry.record)
        except FieldError as exc:
            rejects.append({"line": entry.line, "id": None, "reason": f"{where}: {exc}"})
            continue
        if rid in seen:
            rejects.append({"line": entry.line, "id": rid,
                            "reason": f"{where}: duplicate id {rid!r} (first on line {seen[rid]})"})
            continue
        seen[rid] = entry.line
        rows.append(entry.record)
    return rows, rejects, len(entries)


def _write(rows: list[dict], path: Path, schema: Mapping[str, Any]) -> None:
    """JSON lines and Parquet with the same rows, each written atomically (temp file + os.replace)."""
    import polars as pl

    tmp = path.with_name(f".tmp-{path.name}.jsonl")
    with tmp.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path.with_suffix(".jsonl"))
    frame = pl.DataFrame([{k: r.get(k) for k in schema} for r in rows], schema=dict(schema))
    tmp = path.with_name(f".tmp-{path.name}.parquet")
    frame.write_parquet(tmp)
    os.replace(tmp, path.with_suffix(".parquet"))


def _schema(rows: list[dict]) -> dict[str, Any]:
    """Columns in first-seen order, types inferred from every row (so an all-null split still has them)."""
    import polars as pl

    columns = list(dict.fromkeys(k for r in rows for k in r))
    try:
        inferred = pl.DataFrame([{k: r.get(k) for k in columns} for r in rows], infer_schema_length=None).schema
    except (pl.exceptions.PolarsError, TypeError, ValueError) as exc:
        raise ValueError(f"the rows' fields need one type per column to be written as Parquet: {exc}") from exc
    return dict(inferred) if rows else {}


def split_manifest(manifest: str | Path, out: str | Path, *, val: float = 0.05, test: float = 0.05,
                   seed: int = 0, group_column: str | None = None) -> SplitReport:
    """Write `out`/{train,val,test}.{jsonl,parquet} and `out`/split_rejects.jsonl from `manifest`."""
    manifest, out = Path(manifest).expanduser(), Path(out).expanduser()
    rows, rejects, rows_in = _accepted(manifest)
    keys = [group_key(r, group_column) for r in rows]
    ids = [str(r["id"]) for r in rows]
    where = assign_splits(ids, keys, {"val": val, "test": test}, seed)
    out.mkdir(parents=True, exist_ok=True)
    rows = [rebase_media(r, manifest.parent, out) for r in rows]
    schema = _schema(rows)
    files = []
    for name in SPLITS:
        _write([r for r, i in zip(rows, ids) if where[i] == name], out / name, schema)
        files += [out / f"{name}.jsonl", out / f"{name}.parquet"]
    with (out / ".tmp-split_rejects.jsonl").open("w", encoding="utf-8") as f:
        for r in rejects:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(out / ".tmp-split_rejects.jsonl", out / "split_rejects.jsonl")
    counts = Counter(where.values())
    groups = Counter(where[i] for i in dict(zip(keys, ids)).values())
    return SplitReport(rows_in=rows_in, counts={s: counts.get(s, 0) for s in SPLITS},
                       groups={s: groups.get(s, 0) for s in SPLITS}, rejects=tuple(rejects), files=tuple(files))
