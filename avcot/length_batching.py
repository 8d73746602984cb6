"""Length-grouped batches: similar lengths share a batch, so less of each batch is padding.

Per epoch: shuffle all indices with a seed derived from (`seed`, epoch), cut them into mega-batches of
`batch_size * mega_batches` indices, sort each mega-batch by length (longest first), cut it into
batches, and shuffle the order of all batches. Every index appears exactly once per epoch (only the
last batch of the last mega-batch may be short).

`LengthGroupedSampler` is an index sampler (give it to the DataLoader as `sampler` with the same
`batch_size`): the DataLoader's consecutive `batch_size` indices are exactly one grouped batch. It shards
by rank itself (rank r takes batches r, r + W, ...) and subclasses `DistributedSampler`, which tells
Lightning not to wrap it: Lightning's wrapper for custom samplers re-permutes positions when training,
which would break the groups. Lengths are estimates (`estimated_length`): exact counts would need every
clip decoded.
"""
from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

from torch.utils.data import DistributedSampler

AUDIO_TOKENS_PER_SECOND = 25
"""Qwen2.5-Omni's audio tower: 100 mel frames/s, a stride-2 convolution, then 2x pooling (10 s -> 250 tokens)."""


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


def visual_tokens(frames: int, frame_size: int) -> int:
    """LM tokens of `frames` square frames (an image counts as 2 frames): 14-px patches, 2x2 merged, 2 frames
    per temporal patch."""
    return (max(frames, 2) // 2) * (frame_size // 28) ** 2


def estimated_length(text_tokens: int, audio_seconds: float, max_seconds: float, visual: int = 0) -> int:
    """Tokens of an example that vary between examples: its text, its audio (capped at `max_seconds`) and its
    `visual` tokens (`visual_tokens`; the prompt template is the same for all and left out)."""
    return int(text_tokens) + int(AUDIO_TOKENS_PER_SECOND * min(max(audio_seconds, 0.0), max_seconds)) + visual


def rank_batches(batches: Sequence[Sequence[int]], rank: int, world_size: int) -> list[list[int]]:
    """The batches rank `rank` of `world_size` trains on, in order: full batches first, a short one last, the
    list padded (by repeating its first batches, as DistributedSampler repeats indices) to a multiple of
    `world_size`, then every `world_size`-th batch from `rank`. Every rank gets the same number of batches
    (DDP needs that), and a short batch can only be a rank's last (a short one mid-stream would shift every
    later batch boundary of the DataLoader)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size), got rank={rank} world_size={world_size}")
    size = max((len(b) for b in batches), default=0)
    ordered = [list(b) for b in batches if len(b) == size] + [list(b) for b in batches if len(b) != size]
    padded = ordered + ordered[: -len(ordered) % world_size] if ordered else []
    return padded[rank::world_size]


class LengthGroupedSampler(DistributedSampler):
    """Index sampler whose consecutive `batch_size` indices are this rank's length-grouped batches.

    A `DistributedSampler` subclass so Lightning does not wrap it for DDP/FSDP (its wrapper would reshuffle
    the order): it shards by rank itself; `set_epoch` reshuffles, as Lightning calls it each epoch.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, *, seed: int = 0, mega_batches: int = 50,
                 rank: int = 0, world_size: int = 1):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size), got rank={rank} world_size={world_size}")
        super().__init__(range(len(lengths)), num_replicas=world_size, rank=rank, shuffle=False, seed=seed)
        self.lengths = list(lengths)
        self.batch_size, self.mega_batches = batch_size, mega_batches

    def batches(self) -> list[list[int]]:
        """This epoch's batches, all ranks together (`rank_batches` picks this rank's)."""
        return length_grouped_batches(self.lengths, self.batch_size, seed=self.seed * 100_003 + self.epoch,
                                      mega_batches=self.mega_batches)

    def __iter__(self) -> Iterator[int]:
        return iter([i for b in rank_batches(self.batches(), self.rank, self.num_replicas) for i in b])

    def __len__(self) -> int:
        return sum(len(b) for b in rank_batches(self.batches(), self.rank, self.num_replicas))
