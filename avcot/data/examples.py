"""Checked manifest rows -> lazily decoded `Example`s, one generic path for every task.

A task (`avcot.data.cavsr.CavsrTask`, `avcot.data.mcq.McqTask`) says which columns a manifest needs, how a
record is checked into a typed item, how an item becomes an `Example` and how long it is. Everything else
is the same for every task and lives here:

- `prepare_rows(path, task, ...)`: the manifest read and checked (`avcot.data.rows.load_manifest`), counted.
- `example_dataset(task, rows, ...)`: an `ExampleDataset` over the rows, optionally after decoding every
  row once (`check_media`) so that undecodable rows are rejected before training.
- `ExampleDataset`: decodes media in `__getitem__` (nothing is cached); a decode failure is a `Skipped`
  marker (skip) or a `BadRowError` (error). The collate function drops the skipped rows and carries them
  to the main process (`avcot.data.loader.RowLoader` records them).
- `EpochSeededSampler`: a shuffle that depends only on (seed, epoch); with `RowLoader` a run resumed from a
  checkpoint sees the same batches as an uninterrupted one.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, Protocol

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from avcot.chat import Encoded
from avcot.data.clips import MediaSettings
from avcot.data.rows import (
    BadRowError,
    BadRowPolicy,
    ManifestRow,
    RejectLog,
    RowCounts,
    count_rows,
    load_manifest,
    require_rows,
    row_label,
)
from avcot.manifest import manifest_source
from avcot.records import Reject

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Example:
    """One encoded dataset item; `id` travels to the batch (`Batch.ids`) for predictions and rejects."""

    id: str
    encoded: Encoded
    reference: str = ""
    """Reference text (transcript / answer letter), kept for eval; never fed to the model."""


@dataclass(frozen=True)
class Skipped:
    """A row whose example could not be built ("skip" policy). Built in a loader worker, it travels in the
    batch to the main process, where `RowLoader` records it once in the `RejectLog` (workers cannot share
    one)."""

    line: int
    reject: Reject


@dataclass(frozen=True)
class SkippedBatch:
    """What the collate function returns when every row of a batch was skipped; `RowLoader` turns it into None."""

    skipped: tuple[Skipped, ...]


class RowTask(Protocol):
    """What one kind of manifest (CAVSR clips, MCQ items) contributes to the generic path."""

    required: ClassVar[tuple[str, ...]]
    """Columns every manifest of the task must have (a missing one is a structural error)."""
    media: MediaSettings

    def check(self, record: dict, base_dir: Path, with_target: bool) -> Any:
        """The record's typed item after the up-front checks; `StageError`/ValueError saying what is wrong."""

    def builder(self, items: Sequence[Any], processor, *, with_target: bool,
                media: MediaSettings | None = None) -> Callable[[dict], Example]:
        """A picklable record -> `Example` function over the split's `items` (for DataLoader workers)."""

    def length(self, item: Any, tokenizer) -> int:
        """Estimated tokens of the item's example (`avcot.length_batching.estimated_length`)."""


class ExampleDataset(Dataset):
    """Manifest rows -> `Example`s via `build(record)`, decoded lazily in `__getitem__` (kept in memory after
    the first decode only with `cache`: per process, so each loader worker keeps its own).

    `build` may raise any exception for a bad row (media decode, missing target); with policy "skip"
    `__getitem__` returns a `Skipped` (the reject, recorded by the main process and dropped by the
    collate function); with "error" a `BadRowError` names the manifest, row and line.
    """

    def __init__(self, rows: Sequence[ManifestRow], build: Callable[[dict], Example], *, source: str,
                 policy: BadRowPolicy = "skip", stage: str = "decode", cache: bool = False):
        self.rows = [r.record for r in rows]
        """The raw records, in dataset order."""
        self.lines = [r.line for r in rows]
        self.items = [r.item for r in rows]
        """The typed items (`Clip` / `McqItem`), in dataset order."""
        self.build, self.source, self.policy, self.stage = build, source, policy, stage
        self._cache: dict[int, Example | Skipped] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> Example | Skipped:
        if self._cache is None:
            return self._decode(index)
        if index not in self._cache:
            self._cache[index] = self._decode(index)  # a Skipped too: the row is not decoded again
        return self._cache[index]

    def _decode(self, index: int) -> Example | Skipped:
        row, line = self.rows[index], self.lines[index]
        try:
            return self.build(row)
        except Exception as e:  # noqa: BLE001 - any failure of one row is that row's reject
            rid = row_label(row, line)
            if self.policy == "error":
                raise BadRowError(f"{self.source}: row {rid}: {self.stage}: line {line}: {e}") from e
            return Skipped(line, Reject(rid, self.stage, f"line {line}: {type(e).__name__}: {e}", self.source))


class EpochSeededSampler(Sampler[int]):
    """Shuffled (or ordered) indices that depend only on (seed, epoch); the global RNG is never touched.

    Lightning calls `set_epoch` before each epoch; `RowLoader` reads it when the epoch's first batch is
    taken and skips the batches a resumed checkpoint had already trained, so a resumed run draws the same
    order as an uninterrupted one.
    """

    def __init__(self, n: int, *, seed: int = 0, shuffle: bool = True):
        self.n, self.seed, self.shuffle, self.epoch = n, seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.n))
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


def text_tokens(tokenizer, *texts: str | None) -> int:
    """Tokens of the given texts (None skipped), without special tokens."""
    return sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts if t)


def prepare_rows(path: str | Path, task: RowTask, *, with_target: bool, policy: BadRowPolicy,
                 rejects: RejectLog | None) -> tuple[list[ManifestRow], RowCounts]:
    """Read + check a manifest of `task`: the rows that passed (items typed by `task.check`) and the
    up-front row counts. `with_target=False` (generation) skips the target check."""
    source = manifest_source(path)

    def check(record: dict) -> Any:
        return task.check(record, source.parent, with_target)

    kept, rows_in = load_manifest(source, required=task.required, build=check, policy=policy, rejects=rejects)
    counts = RowCounts(rows_in=rows_in, rows_used=len(kept), rows_rejected=rows_in - len(kept))
    log.info("manifest %s: rows_in=%d rows_used=%d rows_rejected=%d (before decoding)", source, counts.rows_in,
             counts.rows_used, counts.rows_rejected)
    return kept, counts


def undecodable(rows: Sequence[ManifestRow], build: Callable[[dict], Example], *, source: str,
                policy: BadRowPolicy, num_workers: int = 0) -> list[Skipped]:
    """The rows whose examples fail to build (media decoded, encoded), found by building each once in
    `num_workers` loader workers, like an epoch; with policy "error" the first failure raises."""
    ds = ExampleDataset(rows, build, source=source, policy=policy)
    loader = DataLoader(ds, batch_size=None, num_workers=num_workers, collate_fn=_skip_or_none)
    return [s for s in loader if s is not None]


def _skip_or_none(item: Example | Skipped) -> Skipped | None:
    """Only the verdict of a decode check comes back from the worker, not the decoded tensors."""
    return item if isinstance(item, Skipped) else None


def example_dataset(task: RowTask, rows: list[ManifestRow], processor, *, source: str, with_target: bool,
                    policy: BadRowPolicy, rejects: RejectLog, rows_in: int, check_media: bool = False,
                    num_workers: int = 0, cache: bool = False) -> ExampleDataset:
    """The `ExampleDataset` of `rows`. With `check_media` every row is decoded once first and each failure
    is a reject now (or an error, per `policy`), so the counts are final before training; the decode
    check reads each clip's own frames (a 'random' partner is drawn among the rows that pass). `cache` keeps
    each decoded example (`ExampleDataset`)."""
    if check_media and rows:
        own = replace(task.media, video="true") if task.media.video == "random" else task.media
        build = task.builder([r.item for r in rows], processor, with_target=with_target, media=own)
        failed = undecodable(rows, build, source=source, policy=policy, num_workers=num_workers)
        for s in failed:
            rejects.add(s.reject, s.line)
        bad = {s.line for s in failed}
        rows = [r for r in rows if r.line not in bad]
        require_rows(rows, count_rows({source: rows_in}, rejects.lines)[source], source, rejects)
    build = task.builder([r.item for r in rows], processor, with_target=with_target)
    return ExampleDataset(rows, build, source=source, policy=policy, cache=cache)
