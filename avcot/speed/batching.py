"""Length-grouped batches: similar lengths share a batch, so less of each batch is padding.

Per epoch: shuffle all indices with `seed + epoch`, cut them into mega-batches of
`batch_size * mega_batches` indices, sort each mega-batch by length (longest first), cut it into
batches, and shuffle the order of all batches. Every index appears exactly once per epoch (the last
batch may be short unless `drop_last`). With `world_size > 1` each rank takes every `world_size`-th
batch of the same permutation, after trimming so every rank gets the same number of batches
(give it to the DataLoader as `batch_sampler`; Lightning does not re-shard a custom batch sampler).
"""
from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

from torch.utils.data import Sampler


def length_grouped_batches(lengths: Sequence[int], batch_size: int, *, seed: int, mega_batches: int = 50,
                           drop_last: bool = False) -> list[list[int]]:
    """One epoch of batches (lists of dataset indices), grouped by length and shuffled by `seed`."""
    if batch_size < 1 or mega_batches < 1:
        raise ValueError(f"batch_size and mega_batches must be >= 1, got {batch_size} and {mega_batches}")
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    span = batch_size * mega_batches
    batches: list[list[int]] = []
    for start in range(0, len(order), span):
        chunk = sorted(order[start:start + span], key=lambda i: -lengths[i])
        batches.extend(chunk[j:j + batch_size] for j in range(0, len(chunk), batch_size))
    if drop_last:
        batches = [b for b in batches if len(b) == batch_size]
    rng.shuffle(batches)
    return batches


def padding_tokens(lengths: Sequence[int], batches: Sequence[Sequence[int]]) -> int:
    """Pad tokens a right/left-padding collate adds for `batches` (sum of max-len minus len)."""
    return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches if b)


class LengthGroupedBatchSampler(Sampler[list[int]]):
    """Batch sampler over `lengths` (tokens per example) yielding length-grouped, seeded batches."""

    def __init__(self, lengths: Sequence[int], batch_size: int, *, seed: int = 0, mega_batches: int = 50,
                 drop_last: bool = False, rank: int = 0, world_size: int = 1):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size), got rank={rank} world_size={world_size}")
        self.lengths = list(lengths)
        self.batch_size, self.seed, self.mega_batches = batch_size, seed, mega_batches
        self.drop_last, self.rank, self.world_size = drop_last, rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle for `epoch` (call at the start of each epoch, as with DistributedSampler)."""
        self.epoch = epoch

    def _mine(self) -> list[list[int]]:
        batches = length_grouped_batches(self.lengths, self.batch_size, seed=self.seed + self.epoch,
                                         mega_batches=self.mega_batches, drop_last=self.drop_last)
        usable = len(batches) - len(batches) % self.world_size if self.world_size > 1 else len(batches)
        return batches[self.rank:usable:self.world_size]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._mine())

    def __len__(self) -> int:
        return len(self._mine())
