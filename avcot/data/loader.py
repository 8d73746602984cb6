"""`RowLoader`: the DataLoader every DataModule hands to Lightning, resumable exactly, counting rejects.

Why a subclass and not a plain DataLoader (each point was a wrong batch order or a wrong count before):

- Mid-epoch resume. Lightning restores its loop counters from a checkpoint taken mid-epoch, but a plain
  DataLoader starts the epoch over: the first `b` batches were trained twice and the last `b` never. A
  loader with `state_dict`/`load_state_dict` is "stateful" to Lightning; here the state is the position in
  the stream of training batches, (epoch, batches of that epoch handed out), and a resumed pass skips the
  trained batches as index lists, without decoding their media. (The fit loop fetches without prefetching
  when the length is known, so batches handed out = batches trained.)
- Lightning's epoch number after a resume. With `max_steps` (iteration-based training) a resume from an
  end-of-epoch checkpoint first runs one more batch as part of the finished epoch and then calls
  `set_epoch(e + 2)` for what is epoch e + 1: the shuffle of the epoch after, and a batch out of place. So
  once the training loader has a position (after a pass or a resume), the position decides, not
  `set_epoch`: a pass continues where the stream stands, and an epoch ends after `epoch_batches()` batches
  (Lightning's `num_training_batches`, so `limit_train_batches` keeps its meaning). In a run that is never
  resumed the two agree.
- Worker prefetch. Lightning creates the loader's iterator while setting up the data, before `set_epoch`;
  with workers the indices were drawn (and sent to the workers) right then, from the sampler's constructor
  epoch (0). The torch iterator here is created on the first `next()`.
- Rejects from workers. Workers are separate processes: a row that fails to decode comes back as a
  `Skipped` in the batch (the collate function), and the main process records it in the `RejectLog` via
  `on_skipped`; a batch of skipped rows only becomes None (what the LightningModules skip).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from torch.utils.data import DataLoader

from avcot.data.examples import Skipped, SkippedBatch

_END = object()


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
    """DataLoader whose training passes follow a resumable position and whose skipped rows are reported to
    `on_skipped` in the main process. See the module docstring."""

    def __init__(self, *args: Any, on_skipped: Callable[[Sequence[Skipped]], None] | None = None,
                 resumable: bool = False, epoch_batches: Callable[[], float] | None = None, **kwargs: Any):
        """
        Args:
            on_skipped: Called in the main process with the rows a batch skipped.
            resumable: Follow the position (training); else every pass is the epoch `set_epoch` gave, whole.
            epoch_batches: Batches Lightning takes per epoch (default: the loader's length).
        """
        super().__init__(*args, **kwargs)
        self.on_skipped, self.resumable, self.epoch_batches = on_skipped, resumable, epoch_batches
        self.position: tuple[int, int] | None = None
        """(epoch, batches of it handed out) of the training stream; None until the first pass or a resume."""
        self._skip = 0

    def sampler_epoch(self) -> int:
        """The epoch Lightning last set on the sampler (0 when it has none)."""
        return int(getattr(self.sampler, "epoch", 0))

    def per_epoch(self) -> int:
        """Batches of one epoch: the loader's length, or fewer when Lightning is limited to fewer."""
        limit = self.epoch_batches() if self.epoch_batches is not None else len(self)
        return int(min(len(self), limit))

    @property
    def _index_sampler(self):
        # torch's iterators draw indices from here; skipping at this level never decodes the skipped rows
        base = super()._index_sampler
        return _SkipFirst(base, self._skip) if self._skip else base

    def state_dict(self) -> dict[str, int]:
        epoch, batches = self.position if self.position is not None else (self.sampler_epoch(), 0)
        return {"epoch": epoch, "batches": batches}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.position = (int(state["epoch"]), int(state["batches"]))

    def __iter__(self) -> Iterator:
        return _Pass(self, self._stream() if self.resumable else self._whole_epoch())

    def _epoch_iterator(self, epoch: int, skip: int = 0) -> Iterator:
        """The torch iterator over `epoch`'s batches after its first `skip` (workers start now)."""
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)
        self._skip = skip
        try:
            return super().__iter__()
        finally:
            self._skip = 0

    def _whole_epoch(self) -> Iterator:
        """An evaluation pass: the epoch `set_epoch` gave, read when the first batch is asked for."""
        yield from self._epoch_iterator(self.sampler_epoch())

    def _stream(self) -> Iterator:
        """A training pass: up to `len(self)` batches from the position on, into the next epoch when this one is
        used up. Lightning stops a pass after the batches it counts as left in its epoch, so a pass reaches
        into the next epoch only when Lightning's count is out of step with the data (the resume above)."""
        if self.position is None:
            self.position = (self.sampler_epoch(), 0)
        opened, it = None, iter(())
        for _ in range(len(self)):
            epoch, done = self.position
            if done >= self.per_epoch():
                epoch, done = epoch + 1, 0
            if opened != epoch:
                opened, it = epoch, self._epoch_iterator(epoch, done)
            batch = next(it, _END)
            if batch is _END:
                return
            self.position = (epoch, done + 1)
            yield batch

    def _take(self, batch: Any) -> Any:
        """Record a batch's skipped rows; a batch of skipped rows becomes None."""
        skipped = getattr(batch, "skipped", ())  # a SkippedBatch or an avcot.batch.Batch
        if skipped and self.on_skipped is not None:
            self.on_skipped(skipped)
        return None if isinstance(batch, SkippedBatch) else batch


class _Pass:
    """One pass over a `RowLoader`: its batches (generated lazily, so nothing is drawn before the first
    `next()`), with the skipped rows recorded; sized like the loader."""

    def __init__(self, loader: RowLoader, batches: Iterator):
        self.loader, self.batches = loader, batches

    def __iter__(self) -> _Pass:
        return self

    def __len__(self) -> int:
        return len(self.loader)

    def __next__(self) -> Any:
        return self.loader._take(next(self.batches))
