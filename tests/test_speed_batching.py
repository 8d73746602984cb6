"""Length-grouped batches: each index once per epoch, seeded, fewer pad tokens than random batches."""
from __future__ import annotations

import random

import pytest

from avcot.speed.batching import LengthGroupedBatchSampler, length_grouped_batches, padding_tokens


def _lengths(n=203, seed=0):
    rng = random.Random(seed)
    return [rng.randint(20, 900) for _ in range(n)]


def test_every_index_once_and_fewer_pads_than_random():
    lengths = _lengths()
    sampler = LengthGroupedBatchSampler(lengths, 4, seed=7, mega_batches=10)
    batches = list(sampler)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(len(lengths)))
    assert len(batches) == len(sampler) == 51 and sorted(len(b) for b in batches)[0] == 3
    rng = random.Random(7)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    random_batches = [order[i:i + 4] for i in range(0, len(order), 4)]
    assert padding_tokens(lengths, batches) < padding_tokens(lengths, random_batches) / 3


def test_padding_tokens_hand_computed():
    assert padding_tokens([5, 3, 10, 10], [[0, 1], [2, 3]]) == 2
    assert padding_tokens([5, 3, 10, 10], [[0, 2], [1, 3]]) == 5 + 7


def test_seeded_per_epoch_and_sharded_by_rank():
    lengths = _lengths(40)
    a = LengthGroupedBatchSampler(lengths, 4, seed=1)
    b = LengthGroupedBatchSampler(lengths, 4, seed=1)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first and sorted(i for x in a for i in x) == list(range(40))
    ranks = [list(LengthGroupedBatchSampler(lengths, 3, seed=1, rank=r, world_size=2)) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 7  # 14 batches of <= 3 (40 = 13*3 + 1), split evenly
    seen = [i for r in ranks for b in r for i in b]
    assert len(seen) == len(set(seen))
    assert length_grouped_batches(lengths, 3, seed=1, drop_last=True)[0].__len__() == 3
    with pytest.raises(ValueError, match="rank must be in"):
        LengthGroupedBatchSampler(lengths, 3, rank=2, world_size=2)
