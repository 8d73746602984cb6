"""`RowLoader`: the DataLoader every DataModule hands to Lightning, resumable mid-epoch, counting rejects.

Why a subclass and not a plain DataLoader (each point was a wrong batch order or a wrong count before):

- Mid-epoch resume. Lightning restores its loop counters from a checkpoint taken mid-epoch, but a plain
  DataLoader starts the epoch over: the first `b` batches were trained again and the last `b` never. A
  loader with `state_dict`/`load_state_dict` is "stateful" to Lightning: `state_dict` says which epoch and
  how many batches the training loop has taken (the fit loop fetches without prefetching when the length
  is known, so batches handed out = batches trained), and after `load_state_dict` the epoch's first `b`
  batches are skipped as index lists, without decoding their media.
- The epoch of the first epoch after a resume. Lightning creates the loader's iterator while setting up
  the data, before `set_epoch`; with workers, the indices were drawn (and sent to the workers) right then,
  from the sampler's constructor epoch (0). The iterator here is created on the first `next()`, after
  `set_epoch`.
- Rejects from workers. Workers are separate processes: a row that fails to decode comes back as a
  `Skipped` in the batch (`collate_examples`), and the main process records it in the `RejectLog` via
  `on_skipped`; a batch of skipped rows only becomes None (what the LightningModules skip).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from torch.utils.data import DataLoader

from datamodules.common import Skipped, SkippedBatch


class _SkipFirst:
    """An index (batch) sampler without its first `n` items; its length stays the full epoch's (Lightning counts
    the skipped batches as already done)."""

    def __init__(self, sampler, n: int):
        self.sampler, self.n = sampler, n

    def __iter__(self) -> Iterator:
        it = iter(self.sampler)
        for _ in range(self.n):
            next(it, None)
        return it

    def __len__(self) -> int:
        return len(self.sampler)


class RowLoader(DataLoader):
    """DataLoader whose batches are counted per epoch (state_dict/load_state_dict) and whose skipped rows
    are reported to `on_skipped` in the main process. See the module docstring."""

    def __init__(self, *args: Any, on_skipped: Callable[[Sequence[Skipped]], None] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.on_skipped = on_skipped
        self.epoch, self.batches = 0, 0
        """Epoch of the current (or last) pass and batches handed out in it (resumed ones included)."""
        self._resume: tuple[int, int] | None = None
        self._skip = 0

    def sampler_epoch(self) -> int:
        """The epoch Lightning last set on the sampler (0 when it has none)."""
        return int(getattr(self.sampler, "epoch", 0))

    @property
    def _index_sampler(self):
        # torch's iterators draw indices from here; skipping at this level never decodes the skipped rows
        base = super()._index_sampler
        return _SkipFirst(base, self._skip) if self._skip else base

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batches": self.batches}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._resume = (int(state["epoch"]), int(state["batches"]))

    def __iter__(self) -> Iterator:
        return _LazyIterator(self)

    def _start(self) -> Iterator:
        """The torch iterator of a new pass: the sampler's epoch is read now, after Lightning's `set_epoch`."""
        epoch = self.sampler_epoch()
        skip = self._resume[1] if self._resume is not None and self._resume[0] == epoch else 0
        self._resume = None
        self.epoch, self.batches, self._skip = epoch, skip, skip
        try:
            return super().__iter__()
        finally:
            self._skip = 0

    def _take(self, batch: Any) -> Any:
        """Count one handed-out batch; record its skipped rows; a batch of skipped rows becomes None."""
        self.batches += 1
        skipped = batch.skipped if isinstance(batch, SkippedBatch) else \
            batch.get("meta", {}).pop("skipped", ()) if isinstance(batch, dict) else ()
        if skipped and self.on_skipped is not None:
            self.on_skipped(skipped)
        return None if isinstance(batch, SkippedBatch) else batch


class _LazyIterator:
    """Creates the loader's torch iterator on the first `next()` (see the module docstring)."""

    def __init__(self, loader: RowLoader):
        self.loader, self.it = loader, None

    def __iter__(self) -> _LazyIterator:
        return self

    def __len__(self) -> int:
        return len(self.loader)

    def __next__(self) -> Any:
        if self.it is None:
            self.it = self.loader._start()
        return self.loader._take(next(self.it))
