"""Row accounting a user sees in the terminal: rows_in = rows_used + rows_rejected per manifest.

`RowReport` is a callback the DataModules attach to their trainer. At the end of every training epoch (after
that epoch's validation) and at the end of fit, test and predict it prints one line per manifest, e.g.

    rows after epoch 0: /data/train.jsonl: rows_in=17 rows_used=10 rows_rejected=7 (reasons in runs/x/rejects.jsonl)

through the progress bar when one is shown (so the bar is not broken), else with a plain print, on rank 0.
The figures include the rows rejected while decoding media during the epoch, gathered from every rank;
"rows_used" is rows_in minus the rows rejected so far, so it is final once every row was decoded once
(after the first epoch, or before training with `check_media: true`). The totals are also logged as
`data/rows_used` and `data/rows_rejected` at each epoch end.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import lightning as L
from lightning.pytorch.callbacks import Callback

from avcot.data.rows import RowCounts, count_rows

if TYPE_CHECKING:
    from datamodules.base import ManifestDataModule


def gathered_lines(trainer: L.Trainer, lines: dict[str, set[int]]) -> dict[str, set[int]]:
    """The rejected lines per manifest of every rank (each rank decodes only its shard)."""
    import torch.distributed as dist

    if trainer.world_size <= 1 or not (dist.is_available() and dist.is_initialized()):
        return lines
    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, lines)
    merged: dict[str, set[int]] = {}
    for part in parts:
        for source, found in part.items():
            merged.setdefault(source, set()).update(found)
    return merged


def format_counts(when: str, counts: dict[str, RowCounts], rejects_path) -> list[str]:
    """One printed line per manifest."""
    where = f" (reasons in {rejects_path})" if rejects_path and any(c.rows_rejected for c in counts.values()) else ""
    return [f"rows {when}: {src}: rows_in={c.rows_in} rows_used={c.rows_used} rows_rejected={c.rows_rejected}{where}"
            for src, c in counts.items()]


class RowReport(Callback):
    """Prints (and logs) the DataModule's row counts at each epoch end and at the end of the run."""

    def __init__(self, datamodule: ManifestDataModule):
        self.datamodule = datamodule

    def _counts(self, trainer: L.Trainer) -> dict[str, RowCounts]:
        dm = self.datamodule
        return count_rows(dm.rows_in, gathered_lines(trainer, dm.rejects.lines))

    def _say(self, trainer: L.Trainer, when: str, counts: dict[str, RowCounts], *, through_bar: bool) -> None:
        if not trainer.is_global_zero:
            return
        bar = trainer.progress_bar_callback
        for line in format_counts(when, counts, self.datamodule.rejects.path):
            if through_bar and bar is not None and bar.is_enabled:
                bar.print(line)
            else:
                print(line, flush=True)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        counts = self._counts(trainer)  # collective under DDP: every rank runs it
        self._say(trainer, f"after epoch {trainer.current_epoch}", counts, through_bar=True)
        pl_module.log_dict({"data/rows_used": float(sum(c.rows_used for c in counts.values())),
                            "data/rows_rejected": float(sum(c.rows_rejected for c in counts.values()))},
                           on_step=False, on_epoch=True, rank_zero_only=True)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._say(trainer, "at the end of fit", self._counts(trainer), through_bar=False)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._say(trainer, "at the end of test", self._counts(trainer), through_bar=False)

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._say(trainer, "at the end of predict", self._counts(trainer), through_bar=False)
