"""Encoder cache: hits on the second pass, same features and loss, safetensors on disk, keyed by content."""
from __future__ import annotations

import pytest
import torch

from avcot.model import LoraSettings, apply_lora, load_thinker
from avcot.thinker.forward import MediaItem, compute_media_features
from avcot.thinker.encoder_cache import EncoderCache, item_key, tower_fingerprint
from avcot.thinker.label_loss import sft_loss
from helpers import tiny_batch


@pytest.fixture(scope="module")
def lora_model():
    return apply_lora(load_thinker(seed=2), LoraSettings(dropout=0.0))


def test_second_pass_reads_the_disk_and_gives_the_same_loss(tiny_processor, lora_model, tmp_path):
    batch = tiny_batch(tiny_processor)
    cache = EncoderCache(tmp_path, lora_model)
    first = cache.features(lora_model, batch)
    assert (cache.stats.hits, cache.stats.misses) == (0, 4)  # 2 audio clips + 2 videos
    files = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    assert len(files) == 4 and all(p.suffix == ".safetensors" and not p.name.startswith(".tmp") for p in files)
    again = EncoderCache(tmp_path, lora_model)  # a new epoch / process
    second = again.features(lora_model, batch)
    assert (again.stats.hits, again.stats.misses) == (4, 0)
    plain = compute_media_features(lora_model.get_base_model(), batch)
    for a, b, c in zip(first.audio + first.video, second.audio + second.video, plain.audio + plain.video):
        assert torch.equal(a, b) and torch.equal(b, c)
    with torch.no_grad():
        assert sft_loss(lora_model, batch, second).item() == pytest.approx(sft_loss(lora_model, batch).item(), rel=1e-6)


def test_a_corrupt_entry_is_recomputed(tiny_processor, lora_model, tmp_path):
    batch = tiny_batch(tiny_processor, targets=("好",), seconds=(1.0,))
    cache = EncoderCache(tmp_path, lora_model)
    good = cache.features(lora_model, batch)
    victim = next(tmp_path.rglob("*.safetensors"))
    victim.write_bytes(b"not a safetensors file")
    again = EncoderCache(tmp_path, lora_model)
    fixed = again.features(lora_model, batch)
    assert again.stats.repaired == 1 and again.stats.misses == 1 and again.stats.hits == 1
    assert torch.equal(fixed.audio[0], good.audio[0]) and torch.equal(fixed.video[0], good.video[0])


def test_keys_follow_content_and_tower_weights():
    a = MediaItem("audio", torch.zeros(128, 10), None)
    b = MediaItem("audio", torch.zeros(128, 11), None)
    c = MediaItem("audio", torch.ones(128, 10), None)
    v = MediaItem("video", torch.zeros(16, 1176), torch.tensor([2, 2, 4]))
    w = MediaItem("video", torch.zeros(16, 1176), torch.tensor([2, 4, 2]))  # same pixels, other grid
    keys = {item_key(x) for x in (a, b, c, v, w)}
    assert len(keys) == 5 and item_key(a) == item_key(MediaItem("audio", torch.zeros(128, 10), None))
    one, other = load_thinker(seed=0), load_thinker(seed=3)
    assert tower_fingerprint(one) == tower_fingerprint(load_thinker(seed=0))
    assert tower_fingerprint(one) != tower_fingerprint(other)
    with torch.no_grad():  # a change to one sampled weight value changes the fingerprint
        one.model.visual.merger.mlp[0].weight[0, 0] += 1.0
    assert tower_fingerprint(one) != tower_fingerprint(load_thinker(seed=0))
