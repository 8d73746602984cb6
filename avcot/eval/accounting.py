"""Where every manifest row went in an eval run: scored or rejected per condition, and which media were cut.

Each condition (CAVSR video condition, MCQ modality) reads the whole manifest again through its
DataModule, so a bad row is rejected once per condition; `EvalReject` says under which. The counts
per condition must add up: rows in = scored + rejected; anything else is reported as unaccounted
rather than dropped silently. Clips longer than `max_seconds` are cut by the media loader; the eval
warns once per clip and lists them (`TruncatedClip`), from the media headers (`avcot.media.truncation_of`).
"""
from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Generic, TypeVar

from avcot.media import MediaError, Truncation, truncation_of

log = logging.getLogger(__name__)
P = TypeVar("P")


@dataclass(frozen=True)
class EvalReject:
    """A row the eval could not score under one condition, with the stage and reason its DataModule gave."""

    condition: str
    row_id: str
    stage: str
    reason: str
    source: str = ""
    """File (manifest, media) the row came from."""


@dataclass(frozen=True)
class ConditionCounts:
    """Rows of the manifest under one condition: read, scored, rejected (by reason kind)."""

    condition: str
    rows_in: int
    scored: int
    rejected: int
    reasons: tuple[tuple[str, int], ...] = ()
    """(reason kind, rows) pairs, most frequent first (`reason_kind`)."""

    @property
    def unaccounted(self) -> int:
        """Rows neither scored nor rejected; 0 unless a row was lost along the way."""
        return self.rows_in - self.scored - self.rejected


@dataclass(frozen=True)
class ConditionOutcome(Generic[P]):
    """One condition's scored predictions, its rejects, its row counts and the rows it read."""

    predictions: tuple[P, ...]
    rejects: tuple[EvalReject, ...]
    counts: ConditionCounts
    rows: tuple[dict, ...]
    """Manifest rows that passed the up-front checks (whose media are looked at for truncation)."""


@dataclass(frozen=True)
class TruncatedClip:
    """A clip whose audio and/or video went on past the `max_seconds` window the eval loaded."""

    id: str
    notes: tuple[Truncation, ...]


_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_PATH = re.compile(r"(?<![\w.])(?:[A-Za-z]:)?[/\\][^\s:'\"]+")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def reason_kind(stage: str, reason: str) -> str:
    """A reject's reason with its particulars (quoted values, paths, numbers) masked, to count alike rows.

    "decode", "MediaError: /d/a.mp4: audio truncated: decoded 1.20 s of 4.00 s declared" ->
    "decode: MediaError: <path>: audio truncated: decoded # s of # s declared".
    """
    text = _QUOTED.sub("<value>", reason)
    text = _PATH.sub("<path>", text)
    return f"{stage}: {_NUMBER.sub('#', text)}"


def condition_counts(condition: str, rows_in: int, scored: int, rejects: Sequence[EvalReject]) -> ConditionCounts:
    """Counts of one condition; a mismatch (rows lost without a reject) is logged as a warning."""
    mine = [r for r in rejects if r.condition == condition]
    kinds = Counter(reason_kind(r.stage, r.reason) for r in mine)
    counts = ConditionCounts(condition, rows_in, scored, len(mine),
                             tuple(sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0]))))
    if counts.unaccounted:
        log.warning("condition %s: %d rows in, %d scored, %d rejected: %d rows unaccounted for", condition,
                    rows_in, scored, counts.rejected, counts.unaccounted)
    return counts


def read_rejects(path: str | Path, condition: str) -> list[EvalReject]:
    """The DataModule's rejects JSONL (`avcot.records.Reject` lines), tagged with `condition`; [] if absent."""
    path = Path(path)
    if not path.is_file():
        return []
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            out.append(EvalReject(condition, str(row["row_id"]), str(row["stage"]), str(row["reason"]),
                                  str(row.get("source") or "")))
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{path}: line {n}: not a reject record ({e})") from e
    return out


def write_rejects(path: str | Path, rejects: Iterable[EvalReject]) -> Path:
    """All rejects of the run, one JSON object per line with its condition."""
    path = Path(path)
    with path.open("w", encoding="utf-8") as f:
        for r in rejects:
            f.write(json.dumps(asdict(r), ensure_ascii=False) + "\n")
    return path


def first_rows(rows: Iterable[dict]) -> list[dict]:
    """The first row of each id, in order (every condition reads the same manifest rows)."""
    seen: dict[str, dict] = {}
    for row in rows:
        seen.setdefault(str(row["id"]), row)
    return list(seen.values())


def clip_truncations(clip_id: str, *, audio: str | None, video: str | None,
                     max_seconds: float | None) -> TruncatedClip | None:
    """Which of the clip's streams the loader cuts at `max_seconds` (audio: its file, else the video's track).

    Warns once, naming the clip, the files and their lengths. An unreadable file is not judged here:
    its row is rejected, with the reason, when it is decoded.
    """
    notes = []
    for stream, path in (("audio", audio or video), ("video", video)):
        if path is None:
            continue
        try:
            note = truncation_of(path, stream, max_seconds)
        except MediaError:
            continue
        if note is not None:
            notes.append(note)
    if not notes:
        return None
    log.warning("clip %s truncated: %s", clip_id, "; ".join(n.message for n in notes))
    return TruncatedClip(clip_id, tuple(notes))
