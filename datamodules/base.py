"""What the CAVSR and MCQ DataModules share: the processor, the rejects log and row counts, the train/val
split, the up-front decode check, loaders (`RowLoader`: exact resume, rejects counted across workers)."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import lightning as L
from torch.utils.data import DataLoader, Sampler

from datamodules.common import (
    Example,
    ExampleDataset,
    EpochSeededSampler,
    ManifestRow,
    RejectLog,
    RowCounts,
    Skipped,
    require_rows,
    split_rows,
)
from datamodules.loader import RowLoader


class ManifestDataModule(L.LightningDataModule):
    """Base for DataModules over manifests; subclasses implement `_loader(split, shuffle=...)`.

    Expects `save_hyperparameters()` to have stored `processor`, `rejects_path`, `val_fraction`, `seed`,
    `split_column`, `num_workers`, `on_bad_row`, `check_media` and `group_by_length`; subclasses with
    `group_by_length` fill `records["train"]` (the dataset's records, in its order) and implement
    `record_length`. `counts` is rows_in = rows_used + rows_rejected per manifest, including the rows
    rejected while decoding during the epochs; `RowReport` prints it at each epoch end and at the end of the run.
    """

    _processor = None
    _rejects: RejectLog | None = None

    @property
    def hash_media(self) -> bool:
        """Collate the encoder-cache keys into batch["meta"]["media_keys"] (hashed in the loader workers): the
        subclass's `hash_media` argument; a batch without keys is hashed by the module."""
        return bool(self.hparams.get("hash_media", False))

    def __init__(self):
        super().__init__()
        self.records: dict[str, list] = {}  # per split, in dataset order: what `length_keys` measures
        self._lengths: dict[str, list[int]] = {}
        self.rows_in: dict[str, int] = {}
        """Entries per manifest (resolved path), set when it is read."""

    @property
    def counts(self) -> dict[str, RowCounts]:
        """rows_in = rows_used + rows_rejected per manifest, this process's figures so far (`RowReport` adds
        the other ranks')."""
        from datamodules.report import count_rows

        return count_rows(self.rows_in, self.rejects.lines)

    def attach_report(self) -> None:
        """Put a `RowReport` on the trainer (once) so the counts are printed where a CLI user sees them."""
        from datamodules.report import RowReport

        trainer = self.trainer
        if trainer is not None and not any(isinstance(c, RowReport) and c.datamodule is self
                                           for c in trainer.callbacks):
            trainer.callbacks.append(RowReport(self))

    @staticmethod
    def items(rows: list[ManifestRow], dataset: ExampleDataset) -> list:
        """The typed items of `rows` that made it into `dataset`, in its order (what `length_keys` measures)."""
        by_line = {r.line: r.item for r in rows}
        return [by_line[line] for line in dataset.lines]

    def record_skipped(self, skipped: Sequence[Skipped]) -> None:
        """Rows a loader worker could not decode: into the rejects log (once per row), so into `counts`."""
        for s in skipped:
            self.rejects.add(s.reject, s.line)

    @property
    def processor(self):
        """The processor named by `processor` ("tiny" or a checkpoint dir), loaded on first use."""
        if self._processor is None:
            from avcot.processor import load_processor

            self._processor = load_processor(self.hparams.processor)
        return self._processor

    @property
    def rejects(self) -> RejectLog:
        """Rejects JSONL: `rejects_path`, else `<trainer log dir>/rejects.jsonl` (only logged without a trainer)."""
        if self._rejects is None:
            path = self.hparams.rejects_path
            if path is None and self.trainer is not None:
                path = str(Path(self.trainer.log_dir or self.trainer.default_root_dir) / "rejects.jsonl")
            self._rejects = RejectLog(path)
        return self._rejects

    def split(self, rows: list[ManifestRow]) -> tuple[list[ManifestRow], list[ManifestRow]]:
        """Seeded train/val split of checked rows by item id, groups by `split_column` kept apart."""
        hp = self.hparams
        _, va = split_rows([dict(r.record, id=r.item.id) for r in rows], hp.val_fraction, hp.seed, hp.split_column)
        va_ids = {r["id"] for r in va}
        return [r for r in rows if r.item.id not in va_ids], [r for r in rows if r.item.id in va_ids]

    def _loader(self, split: str, *, shuffle: bool) -> DataLoader:
        raise NotImplementedError

    def row_loader(self, split: str, batch_size: int, collate_fn: Callable, *, shuffle: bool) -> RowLoader:
        """The `RowLoader` over `datasets[split]` with the split's sampler."""
        if split not in self.datasets:
            raise RuntimeError(f"no {split} dataset: call setup() with the matching stage first")
        ds = self.datasets[split]
        return RowLoader(ds, batch_size=batch_size, num_workers=self.hparams.num_workers, collate_fn=collate_fn,
                         sampler=self.sampler(split, len(ds), batch_size, shuffle=shuffle),
                         on_skipped=self.record_skipped, resumable=split == "train",
                         epoch_batches=self.train_batches_per_epoch)

    def train_batches_per_epoch(self) -> float:
        """Batches the trainer takes per training epoch (`limit_train_batches` applied); inf without a trainer."""
        return float(self.trainer.num_training_batches) if self.trainer is not None else float("inf")

    def decoded_rows(self, rows: list[ManifestRow], build: Callable[[dict], Example], source: str) -> list[ManifestRow]:
        """`rows` whose examples build (media decoded, encoded), when `check_media` is on; each failure is a
        reject now (or an error, per on_bad_row), so the counts are final before training. Decoded in
        `num_workers` loader workers, like an epoch."""
        if not self.hparams.get("check_media", False) or not rows:
            return rows
        ds = ExampleDataset(rows, build, source=source, policy=self.hparams.on_bad_row)
        loader = DataLoader(ds, batch_size=None, num_workers=self.hparams.num_workers, collate_fn=_skip_or_none)
        failed = [s for s in loader if s is not None]
        self.record_skipped(failed)
        bad = {s.line for s in failed}
        kept = [r for r in rows if r.line not in bad]
        return require_rows(kept, self.counts[source], source, self.rejects)

    def record_length(self, record, tokenizer) -> int:
        """Estimated tokens of one record's example (`avcot.length_batching.estimated_length`)."""
        raise NotImplementedError

    def length_keys(self, split: str) -> list[int]:
        """Estimated tokens per example of `split`, computed once (each reads media headers)."""
        if split not in self._lengths:
            tok = self.processor.tokenizer
            self._lengths[split] = [self.record_length(r, tok) for r in self.records[split]]
        return self._lengths[split]

    def sampler(self, split: str, n: int, batch_size: int, *, shuffle: bool) -> Sampler[int]:
        """The (seed, epoch)-determined index order of a loader: length-grouped for training when asked."""
        hp = self.hparams
        if split == "train" and shuffle and hp.get("group_by_length", False):
            from avcot.length_batching import LengthGroupedSampler

            # the data-parallel rank and size (not the global ones under tensor parallelism)
            shard = (self.trainer.distributed_sampler_kwargs if self.trainer is not None else None) or {}
            return LengthGroupedSampler(self.length_keys(split), batch_size, seed=hp.seed,
                                        rank=shard.get("rank", 0), world_size=shard.get("num_replicas", 1) or 1)
        return EpochSeededSampler(n, seed=hp.seed, shuffle=shuffle)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict", shuffle=False)


def _skip_or_none(item: Example | Skipped) -> Skipped | None:
    """Only the verdict of a decode check comes back from the worker, not the decoded tensors."""
    return item if isinstance(item, Skipped) else None
