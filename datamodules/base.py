"""What the CAVSR and MCQ DataModules share: the processor, the rejects log, the train/val split, loaders."""
from __future__ import annotations

from pathlib import Path

import lightning as L
from torch.utils.data import DataLoader, Sampler

from datamodules.common import EpochSeededSampler, RejectLog, split_rows


class ManifestDataModule(L.LightningDataModule):
    """Base for DataModules over manifests; subclasses implement `_loader(split, shuffle=...)`.

    Expects `save_hyperparameters()` to have stored `processor`, `rejects_path`, `val_fraction`, `seed`,
    `split_column` and `group_by_length`; subclasses with `group_by_length` fill `records["train"]` (the
    dataset's records, in its order) and implement `record_length`.
    """

    _processor = None
    _rejects: RejectLog | None = None
    hash_media = False
    """Collate the encoder-cache keys into batch["meta"]["media_keys"] (hashed in the loader workers). The
    SFT module turns it on when it has an encoder cache; a batch without keys is hashed by the module."""

    def __init__(self):
        super().__init__()
        self.records: dict[str, list] = {}  # per split, in dataset order: what `length_keys` measures
        self._lengths: dict[str, list[int]] = {}

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

    def split(self, pairs: list[tuple[dict, object]]) -> tuple[list, list]:
        """Seeded train/val split of (row, record) pairs by record id, groups by `split_column` kept apart."""
        hp = self.hparams
        rows = [dict(r, id=rec.id) for r, rec in pairs]
        _, va = split_rows(rows, hp.val_fraction, hp.seed, hp.split_column)
        va_ids = {r["id"] for r in va}
        return [p for p in pairs if p[1].id not in va_ids], [p for p in pairs if p[1].id in va_ids]

    def _loader(self, split: str, *, shuffle: bool) -> DataLoader:
        raise NotImplementedError

    def record_length(self, record, tokenizer) -> int:
        """Estimated tokens of one record's example (`avcot.speed.batching.estimated_length`)."""
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
            from avcot.speed.batching import LengthGroupedSampler

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
