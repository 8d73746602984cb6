"""What the CAVSR and MCQ DataModules share: the processor, the rejects log and row counts, one setup path
(manifest rows of the subclass's task -> train/val split -> datasets), the up-front decode check, loaders
(`RowLoader`: exact resume, rejects counted across workers). The rows, media and examples themselves are
`avcot.data`'s; a subclass only names its task, its stage manifests and its collate function."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import lightning as L
from torch.utils.data import DataLoader, Sampler

from avcot.data.examples import EpochSeededSampler, ExampleDataset, RowTask, Skipped, example_dataset, prepare_rows
from avcot.data.loader import RowLoader
from avcot.data.rows import ManifestRow, RejectLog, RowCounts, count_rows, require_rows, split_rows
from avcot.manifest import manifest_source


class ManifestDataModule(L.LightningDataModule):
    """Base for DataModules over manifests of one `avcot.data` task.

    A subclass sets `self.task` (an `avcot.data.examples.RowTask`) and `self.datasets = {}` in `__init__`,
    names the stages that generate (no target: `generating_stages`), where test/predict read their rows
    (`stage_manifest`) and how batches are collated (`collate_fn`). Expects `save_hyperparameters()` to have
    stored `train_manifest`, `val_manifest`, `processor`, `rejects_path`, `val_fraction`, `seed`, `split_column`,
    `batch_size`, `eval_batch_size`, `num_workers`, `on_bad_row`, `check_media`, `group_by_length` and
    `cache_examples`.
    `counts` is rows_in = rows_used + rows_rejected per manifest, including the rows rejected while decoding
    during the epochs; `RowReport` prints it at each epoch end and at the end of the run.
    """

    task: RowTask
    generating_stages: tuple[str, ...] = ("predict",)
    """Stages whose examples carry no target (prompt only: generation)."""

    _processor = None
    _rejects: RejectLog | None = None

    @property
    def hash_media(self) -> bool:
        """Collate the encoder-cache keys into `Batch.media_keys` (hashed in the loader workers): the
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
        return count_rows(self.rows_in, self.rejects.lines)

    def attach_report(self) -> None:
        """Put a `RowReport` on the trainer (once) so the counts are printed where a CLI user sees them."""
        from datamodules.report import RowReport

        trainer = self.trainer
        if trainer is not None and not any(isinstance(c, RowReport) and c.datamodule is self
                                           for c in trainer.callbacks):
            trainer.callbacks.append(RowReport(self))

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

    # -- the one setup path ---------------------------------------------------------------------------------

    def stage_manifest(self, stage: str) -> str:
        """The manifest `stage` ("test" / "predict") reads; ValueError naming the setting when there is none."""
        raise NotImplementedError

    def collate_fn(self, split: str) -> Callable:
        """The collate function of `split`'s loader."""
        raise NotImplementedError

    def manifest_rows(self, path: str, with_target: bool) -> list[ManifestRow]:
        """The checked rows of manifest `path` (rows_in recorded); an error when every row was rejected."""
        source = str(manifest_source(path))
        kept, counts = prepare_rows(source, self.task, with_target=with_target, policy=self.hparams.on_bad_row,
                                    rejects=self.rejects)
        self.rows_in[source] = counts.rows_in
        return require_rows(kept, counts, path, self.rejects)

    def dataset(self, rows: list[ManifestRow], path: str, with_target: bool) -> ExampleDataset:
        """The dataset of `rows` (of manifest `path`), decode-checked first with `check_media`."""
        hp = self.hparams
        source = str(manifest_source(path))
        return example_dataset(self.task, rows, self.processor, source=source, with_target=with_target,
                               policy=hp.on_bad_row, rejects=self.rejects, rows_in=self.rows_in[source],
                               check_media=hp.get("check_media", False), num_workers=hp.num_workers,
                               cache=hp.get("cache_examples", False))

    def setup(self, stage: str | None = None) -> None:
        hp = self.hparams
        self.attach_report()
        if stage in ("fit", "validate", None) and "train" not in self.datasets and hp.train_manifest:
            rows = self.manifest_rows(hp.train_manifest, True)
            if hp.val_manifest:
                train, val = rows, self.manifest_rows(hp.val_manifest, True)
            else:
                train, val = self.split(rows)
            self.datasets["train"] = self.dataset(train, hp.train_manifest, True)
            self.records["train"] = self.datasets["train"].items
            self.datasets["val"] = self.dataset(val, hp.val_manifest or hp.train_manifest, True)
        if stage == "validate" and "val" not in self.datasets and hp.val_manifest:
            self.datasets["val"] = self.dataset(self.manifest_rows(hp.val_manifest, True), hp.val_manifest, True)
        if stage in ("test", "predict") and stage not in self.datasets:
            path = self.stage_manifest(stage)
            with_target = stage not in self.generating_stages
            self.datasets[stage] = self.dataset(self.manifest_rows(path, with_target), path, with_target)

    def _loader(self, split: str, *, shuffle: bool) -> DataLoader:
        hp = self.hparams
        bs = hp.batch_size if split == "train" else (hp.eval_batch_size or hp.batch_size)
        return self.row_loader(split, bs, self.collate_fn(split), shuffle=shuffle)

    def row_loader(self, split: str, batch_size: int, collate_fn: Callable, *, shuffle: bool) -> RowLoader:
        """The `RowLoader` over `datasets[split]` with the split's sampler."""
        if split not in self.datasets:
            raise RuntimeError(f"no {split} dataset: call setup() with the matching stage first")
        ds = self.datasets[split]
        workers = self.hparams.num_workers
        keep = bool(self.hparams.get("cache_examples", False)) and workers > 0  # the workers hold the caches
        return RowLoader(ds, batch_size=batch_size, num_workers=workers, collate_fn=collate_fn,
                         persistent_workers=keep,
                         sampler=self.sampler(split, len(ds), batch_size, shuffle=shuffle),
                         on_skipped=self.record_skipped, resumable=split == "train",
                         epoch_batches=self.train_batches_per_epoch)

    def train_batches_per_epoch(self) -> float:
        """Batches the trainer takes per training epoch (`limit_train_batches` applied); inf without a trainer."""
        return float(self.trainer.num_training_batches) if self.trainer is not None else float("inf")

    def record_length(self, record, tokenizer) -> int:
        """Estimated tokens of one record's example (`avcot.length_batching.estimated_length`)."""
        return self.task.length(record, tokenizer)

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

