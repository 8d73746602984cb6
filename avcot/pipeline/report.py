"""End-of-run tables: rejects, filtered rows and counts (rows_in = kept + filtered + rejected)."""
from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from avcot.pipeline.store import Outcome, write_jsonl_atomic, write_table_atomic
from avcot.records import Reject

REJECT_SCHEMA = {"row_id": pl.String, "stage": pl.String, "reason": pl.String, "source": pl.String}


@dataclass(frozen=True)
class Counts:
    """How many input rows ended kept, filtered or rejected, overall and per stage."""

    rows_in: int
    kept: int
    filtered: int
    rejected: int
    stages: Mapping[str, Mapping[str, int]] = field(default_factory=dict)

    def line(self) -> str:
        return (f"rows_in={self.rows_in} kept={self.kept} filtered={self.filtered} "
                f"rejected={self.rejected}")


def stage_rejects(per_stage: Mapping[str, Sequence[Outcome]]) -> list[Reject]:
    """Reject records of every stage outcome with status 'rejected'."""
    return [Reject(row_id=o.row_id, stage=name, reason=o.reason, source=o.source)
            for name, outs in per_stage.items() for o in outs if o.status == "rejected"]


def count(rows_in: int, load_rejects: Sequence[Reject], per_stage: Mapping[str, Sequence[Outcome]],
          kept: int) -> Counts:
    """Tally outcomes and check that every input row is accounted for exactly once."""
    stages = {"load": {"in": rows_in, "kept": rows_in - len(load_rejects), "filtered": 0,
                       "rejected": len(load_rejects)}}
    for name, outs in per_stage.items():
        tally = {s: sum(o.status == s for o in outs) for s in ("kept", "filtered", "rejected")}
        stages[name] = {"in": len(outs), **tally}
    filtered = sum(s["filtered"] for s in stages.values())
    rejected = sum(s["rejected"] for s in stages.values())
    counts = Counts(rows_in, kept, filtered, rejected, stages)
    if rows_in != kept + filtered + rejected:
        raise AssertionError(f"row accounting broken: {counts.line()} (kept + filtered + rejected != rows_in)")
    return counts


def relpath(path: str | None, start: Path) -> str | None:
    """Media path relative to the export folder (the manifest convention), None stays None."""
    return None if path is None else os.path.relpath(path, start)


def write_reports(out: Path, counts: Counts, rejects: Sequence[Reject],
                  per_stage: Mapping[str, Sequence[Outcome]]) -> None:
    """rejects.{parquet,jsonl}, filtered.parquet and counts.json under `out`."""
    reject_rows = [dataclasses.asdict(r) for r in rejects]
    write_table_atomic(reject_rows, out / "rejects.parquet", REJECT_SCHEMA)
    write_jsonl_atomic(reject_rows, out / "rejects.jsonl")
    filtered = [{"row_id": o.row_id, "stage": name, "reason": o.reason, "source": o.source}
                for name, outs in per_stage.items() for o in outs if o.status == "filtered"]
    write_table_atomic(filtered, out / "filtered.parquet", REJECT_SCHEMA)
    tmp = out / ".tmp-counts.json"
    tmp.write_text(json.dumps(dataclasses.asdict(counts), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, out / "counts.json")


def write_manifest(rows: Sequence[Mapping[str, Any]], out: Path, schema: Mapping[str, Any], stem: str = "sft") -> None:
    """The export as JSONL and Parquet (same rows, same column order)."""
    write_jsonl_atomic(rows, out / f"{stem}.jsonl")
    write_table_atomic(rows, out / f"{stem}.parquet", schema)
