"""The SFT module's speed levers give the plain path's loss; the LM-head option trains and reloads."""
from __future__ import annotations

import pytest
import torch
from helpers import write_traced_manifest

from avcot.model import LoraSettings
from datamodules.cavsr import CavsrDataModule
from lit_modules.sft import SFTModule


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("levers")
    dm = CavsrDataModule(train_manifest=str(write_traced_manifest(tmp / "m.jsonl", 4)), batch_size=3,
                         val_fraction=0.0, rejects_path=str(tmp / "rejects.jsonl"))
    dm.setup("fit")
    return next(iter(dm.train_dataloader()))


def _module(train_lm_head: bool = False, **kw) -> SFTModule:
    module = SFTModule(lora=LoraSettings(dropout=0.0, train_lm_head=train_lm_head), **kw)
    module.configure_model()
    torch.manual_seed(0)
    with torch.no_grad():  # a non-zero adapter, so the levers are checked on a trained-looking model
        for n, p in module.model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.3)
    return module


def _loss_and_grads(module: SFTModule, batch: dict):
    module.zero_grad()
    loss = module._compute_loss(batch)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in module.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("levers", [{"fast_loss": True}, {"lm_checkpointing": True},
                                    {"encoder_cache_dir": "CACHE"},
                                    {"fast_loss": True, "lm_checkpointing": True, "encoder_cache_dir": "CACHE"}])
def test_lever_matches_plain_loss_and_grads(batch, tmp_path, levers):
    levers = {k: (str(tmp_path / "cache") if v == "CACHE" else v) for k, v in levers.items()}
    want, want_g = _loss_and_grads(_module(), batch)
    module = _module(**levers)
    for _ in range(2):  # with the cache, the second pass reads the features from disk
        got, got_g = _loss_and_grads(module, batch)
        assert torch.allclose(got, want, atol=1e-5), (got, want)
        for n in want_g:
            assert torch.allclose(got_g[n], want_g[n], atol=1e-5), n
    if module.encoder_cache is not None:
        assert any((tmp_path / "cache").rglob("*.safetensors"))
        assert module.encoder_cache.stats.hits > 0


def test_train_lm_head_is_saved_in_the_adapter_and_reloads(batch, tmp_path):
    from avcot.chat import model_inputs
    from avcot.model import load_adapter, load_thinker

    module = _module(train_lm_head=True)
    trainable = [n for n, p in module.named_parameters() if p.requires_grad]
    assert any("lm_head" in n for n in trainable)
    assert not any("audio_tower" in n or "visual" in n for n in trainable)
    with torch.no_grad():
        for n, p in module.named_parameters():
            if "lm_head" in n and p.requires_grad:
                p.add_(0.1)
    module.model.save_pretrained(tmp_path)
    reloaded = load_adapter(load_thinker("tiny"), str(tmp_path)).eval()
    module.model.eval()
    with torch.no_grad():
        inputs = model_inputs(batch.inputs)
        assert torch.equal(reloaded(**inputs).logits, module.model(**inputs).logits)


def test_step_adapters_follow_checkpoint_retention(tmp_path):
    from lit_modules.checkpoint import prune_step_adapters

    for step in (5, 10, 15):
        (tmp_path / f"adapter-step{step}").mkdir()
    (tmp_path / "adapter-last").mkdir()
    (tmp_path / "epoch=1-step=10.ckpt").write_bytes(b"")
    removed = prune_step_adapters(tmp_path, keep=15)
    assert sorted(p.name for p in removed) == ["adapter-step5"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["adapter-last", "adapter-step10",
                                                                          "adapter-step15"]


def test_encoder_cache_keys_are_hashed_in_the_collate_and_used(tmp_path):
    """With `encoder_cache_dir` and the DataModule's `hash_media`, media are hashed in the collate (loader
    workers); the step uses those keys: every item computed once in epoch 1, read back in epoch 2."""
    import lightning as L

    from unittest import mock

    from avcot.thinker.encoder_cache import EncoderCache, media_keys

    seen = []

    class Record(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            seen.append(batch.media_keys == media_keys(batch.inputs))  # the collated keys are the batch's own

    dm = CavsrDataModule(train_manifest=str(write_traced_manifest(tmp_path / "m.jsonl", 4)), batch_size=2,
                         val_fraction=0.0, rejects_path=str(tmp_path / "rejects.jsonl"), hash_media=True)
    module = SFTModule(lora=LoraSettings(dropout=0.0), encoder_cache_dir=str(tmp_path / "cache"))
    trainer = L.Trainer(accelerator="cpu", max_epochs=2, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        callbacks=[Record()], default_root_dir=str(tmp_path))
    original, passed = EncoderCache.features, []

    def spy(self, model, batch, keys=None):
        passed.append(keys is not None and keys == media_keys(batch))
        return original(self, model, batch, keys)

    with mock.patch.object(EncoderCache, "features", spy):
        trainer.fit(module, dm)
    assert dm.hash_media is True and seen == [True] * 4 and passed == [True] * 4  # the step used the collate's keys
    stats = module.encoder_cache.stats
    assert (stats.misses, stats.hits) == (8, 8)  # 4 clips x (audio + video): computed once, then read back


@pytest.mark.parametrize("levers", [{"fast_loss": True}, {"encoder_cache_dir": "CACHE"}])
def test_part_calling_levers_are_refused_under_fsdp2(tmp_path, levers):
    """They bypass the FSDP2 root's forward (its all-gather and gradient finalisation): a clear error."""
    levers = {k: (str(tmp_path / "cache") if v == "CACHE" else v) for k, v in levers.items()}
    module = SFTModule(**levers)
    module._device_mesh = object()  # what ModelParallelStrategy sets before configure_model
    with pytest.raises(ValueError, match="with FSDP2"):
        module.configure_model()
    assert module.model is None
