"""Length-grouped batches: each index once per epoch, seeded, fewer pad tokens than random batches, and
sharded so that every rank's DataLoader sees whole grouped batches, the same number on every rank."""
from __future__ import annotations

import random

import pytest
from torch.utils.data import DistributedSampler

from avcot.length_batching import (
    LengthGroupedSampler,
    estimated_length,
    length_grouped_batches,
    padding_tokens,
    rank_batches,
    visual_tokens,
)


def _lengths(n=203, seed=0):
    rng = random.Random(seed)
    return [rng.randint(20, 900) for _ in range(n)]


def _chunks(order, size):
    return [order[i:i + size] for i in range(0, len(order), size)]


def test_every_index_once_and_fewer_pads_than_random():
    lengths = _lengths()
    sampler = LengthGroupedSampler(lengths, 4, seed=7, mega_batches=10)
    order = list(sampler)
    assert sorted(order) == list(range(len(lengths))) and len(sampler) == len(lengths)
    batches = _chunks(order, 4)  # what DataLoader(batch_size=4, sampler=sampler) makes of it
    grouped = sampler.batches()
    assert len(batches) == 51 and sum(len(b) < 4 for b in grouped) == 1
    assert batches == [b for b in grouped if len(b) == 4] + [b for b in grouped if len(b) < 4]  # short one last
    rng = random.Random(7)
    shuffled = list(range(len(lengths)))
    rng.shuffle(shuffled)
    assert padding_tokens(lengths, batches) < padding_tokens(lengths, _chunks(shuffled, 4)) / 3


def test_padding_tokens_hand_computed():
    assert padding_tokens([5, 3, 10, 10], [[0, 1], [2, 3]]) == 2
    assert padding_tokens([5, 3, 10, 10], [[0, 2], [1, 3]]) == 5 + 7


def test_seeded_per_epoch():
    lengths = _lengths(40)
    a = LengthGroupedSampler(lengths, 4, seed=1)
    assert list(a) == list(LengthGroupedSampler(lengths, 4, seed=1))
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first and sorted(a) == list(range(40))
    assert list(LengthGroupedSampler(lengths, 4, seed=2)) != first
    assert all(len(b) == 3 for b in length_grouped_batches(lengths, 3, seed=1, drop_last=True))


@pytest.mark.parametrize("world_size", [2, 3])
def test_ranks_get_whole_grouped_batches_equal_in_number(world_size):
    lengths = _lengths(101, seed=3)
    samplers = [LengthGroupedSampler(lengths, 4, seed=5, mega_batches=3, rank=r, world_size=world_size)
                for r in range(world_size)]
    assert all(isinstance(s, DistributedSampler) for s in samplers)  # Lightning leaves it unwrapped
    streams = []
    for epoch in (0, 1):
        for s in samplers:
            s.set_epoch(epoch)
        streams.append(list(samplers[0]))
        grouped = [sorted(b) for b in samplers[0].batches()]
        per_rank = [_chunks(list(s), 4) for s in samplers]
        assert len({len(r) for r in per_rank}) == 1  # DDP: same number of steps on every rank
        assert all(sorted(b) in grouped for r in per_rank for b in r)
        seen = [i for r in per_rank for b in r for i in b]
        assert set(seen) == set(range(101)) and len(seen) - 101 < 4 * world_size  # only the padding repeats
        assert [len(s) for s in samplers] == [sum(map(len, r)) for r in per_rank]
    assert streams[0] != streams[1]  # set_epoch regroups


def test_rank_batches_layout_and_errors():
    batches = [[0], [1, 2], [3, 4], [5, 6]]
    assert rank_batches(batches, 0, 1) == [[1, 2], [3, 4], [5, 6], [0]]  # the short batch goes last
    assert rank_batches(batches, 0, 3) == [[1, 2], [0]] and rank_batches(batches, 2, 3) == [[5, 6], [3, 4]]
    assert rank_batches([], 0, 2) == []
    with pytest.raises(ValueError, match="rank must be in"):
        rank_batches(batches, 2, 2)
    with pytest.raises(ValueError, match="rank must be in"):
        LengthGroupedSampler([1, 2], 1, rank=2, world_size=2)


def test_estimated_length_counts_text_and_capped_audio():
    assert estimated_length(100, 10.0, 30.0) == 100 + 250  # a 10 s clip: 250 audio tokens
    assert estimated_length(100, 60.0, 30.0) == 100 + 750
    assert estimated_length(7, 0.0, 30.0) == 7
    assert visual_tokens(8, 448) == 1024 and visual_tokens(2, 56) == 4  # 8 frames at 448: 1024
    assert estimated_length(7, 1.0, 30.0, visual=4) == 7 + 25 + 4
