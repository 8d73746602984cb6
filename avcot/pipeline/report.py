"""End-of-run tables: rejects, filtered rows, failed rows and counts.

Every input row is accounted for exactly once: rows_in = kept + filtered + rejected + failed, where
failed rows are the ones a transient error stopped this run (not stored, retried by the next run).
"""
from __future__ import annotations

import dataclasses
import json
import os
from collections import Counter
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
    """How many input rows ended kept, filtered, rejected or failed, overall and per stage."""

    rows_in: int
    kept: int
    filtered: int
    rejected: int
    stages: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    failed: int = 0
    """Rows stopped by a transient error this run: not stored, pending, retried by the next run."""
    failures: Mapping[str, int] = field(default_factory=dict)
    """Failed rows by '<stage>: <kind> at <endpoint>'."""
    stalled: tuple[str, ...] = ()
    """Stages that tried rows this run and had every one of them fail transiently."""
    exports: Mapping[str, int] = field(default_factory=dict)
    """Rows written per exported manifest, by file stem (AVRT: 'sft' and 'rl'); empty when only sft is written."""

    def line(self) -> str:
        exported = "".join(f" {stem}_rows={n}" for stem, n in self.exports.items())
        return (f"rows_in={self.rows_in} kept={self.kept} filtered={self.filtered} "
                f"rejected={self.rejected} failed={self.failed}{exported}")

    def summary(self) -> str:
        """One paragraph on the rows left pending ('' when none failed)."""
        if not self.failed:
            return ""
        groups = "; ".join(f"{n} in {what}" for what, n in sorted(self.failures.items()))
        text = (f"{self.failed} of {self.rows_in} row(s) failed for a transient reason ({groups}). They were "
                "not stored and stay pending: rerun the same command to retry them (stored rows are not "
                "recomputed).")
        if self.stalled:
            text += (f" Stage(s) {', '.join(self.stalled)} got no answer for any row tried this run, so the run "
                     "counts as failed; check that the endpoint is up and reachable.")
        return text


def stage_rejects(per_stage: Mapping[str, Sequence[Outcome]]) -> list[Reject]:
    """Reject records of every stage outcome with status 'rejected'."""
    return [Reject(row_id=o.row_id, stage=name, reason=o.reason, source=o.source)
            for name, outs in per_stage.items() for o in outs if o.status == "rejected"]


def stalled_stages(per_stage: Mapping[str, Sequence[Outcome]], attempted: Mapping[str, int]) -> tuple[str, ...]:
    """Stages that tried at least one row this run and saw every tried row fail transiently."""
    return tuple(name for name, outs in per_stage.items()
                 if attempted.get(name, 0) and sum(o.status == "failed" for o in outs) == attempted[name])


def count(rows_in: int, load_rejects: Sequence[Reject], per_stage: Mapping[str, Sequence[Outcome]],
          kept: int, attempted: Mapping[str, int] | None = None, exports: Mapping[str, int] | None = None) -> Counts:
    """Tally outcomes and check that every input row is accounted for exactly once (`exports`: rows written
    per manifest beyond the accounting, e.g. the AVRT RL manifest)."""
    stages = {"load": {"in": rows_in, "kept": rows_in - len(load_rejects), "filtered": 0,
                       "rejected": len(load_rejects), "failed": 0}}
    for name, outs in per_stage.items():
        tally = {s: sum(o.status == s for o in outs) for s in ("kept", "filtered", "rejected", "failed")}
        stages[name] = {"in": len(outs), **tally}
    filtered, rejected, failed = (sum(s[k] for s in stages.values()) for k in ("filtered", "rejected", "failed"))
    failures = Counter(f"{name}: {o.failure}" for name, outs in per_stage.items() for o in outs
                       if o.status == "failed")
    counts = Counts(rows_in, kept, filtered, rejected, stages, failed, dict(failures),
                    stalled_stages(per_stage, attempted or {}), dict(exports or {}))
    if rows_in != kept + filtered + rejected + failed:
        raise AssertionError(f"row accounting broken: {counts.line()} "
                             "(kept + filtered + rejected + failed != rows_in)")
    return counts


def relpath(path: str | None, start: Path) -> str | None:
    """Media path relative to the export folder (the manifest convention), None stays None."""
    return None if path is None else os.path.relpath(path, start)


def write_reports(out: Path, counts: Counts, rejects: Sequence[Reject],
                  per_stage: Mapping[str, Sequence[Outcome]]) -> None:
    """rejects.{parquet,jsonl}, filtered.parquet, failed.jsonl (this run's pending rows) and counts.json."""
    reject_rows = [dataclasses.asdict(r) for r in rejects]
    write_table_atomic(reject_rows, out / "rejects.parquet", REJECT_SCHEMA)
    write_jsonl_atomic(reject_rows, out / "rejects.jsonl")
    filtered = [{"row_id": o.row_id, "stage": name, "reason": o.reason, "source": o.source}
                for name, outs in per_stage.items() for o in outs if o.status == "filtered"]
    write_table_atomic(filtered, out / "filtered.parquet", REJECT_SCHEMA)
    failed = [{"row_id": o.row_id, "stage": name, "kind": o.failure, "reason": o.reason, "source": o.source}
              for name, outs in per_stage.items() for o in outs if o.status == "failed"]
    write_jsonl_atomic(failed, out / "failed.jsonl")  # rewritten every run: empty once nothing is pending
    tmp = out / ".tmp-counts.json"
    tmp.write_text(json.dumps(dataclasses.asdict(counts), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, out / "counts.json")


def write_manifest(rows: Sequence[Mapping[str, Any]], out: Path, schema: Mapping[str, Any], stem: str = "sft") -> None:
    """The export as JSONL and Parquet (same rows, same column order)."""
    write_jsonl_atomic(rows, out / f"{stem}.jsonl")
    write_table_atomic(rows, out / f"{stem}.parquet", schema)
