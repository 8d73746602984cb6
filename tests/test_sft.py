"""LoRA SFT LightningModule: only LoRA moves, adapters reload exactly, QLoRA on CPU, small checkpoints, predict."""
from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import pytest
import torch
from helpers import write_traced_manifest

from avcot.model import LoraSettings
from datamodules.cavsr import CavsrDataModule
from lit_modules.sft import SFTModule, warmup_cosine


def _fit(tmp_path: Path, module: SFTModule, steps: int = 3, **dm_kw) -> tuple[L.Trainer, CavsrDataModule]:
    manifest = write_traced_manifest(tmp_path / "m.jsonl", 6)
    dm_kw.setdefault("val_fraction", 0.34)
    dm = CavsrDataModule(train_manifest=str(manifest), batch_size=2, rejects_path=str(tmp_path / "rejects.jsonl"),
                         **dm_kw)
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", default_root_dir=str(tmp_path), logger=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        val_check_interval=steps, check_val_every_n_epoch=None)
    trainer.fit(module, dm)
    return trainer, dm


def _snapshot(module: SFTModule) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone().float() for n, p in module.named_parameters()}


def test_fit_changes_lora_weights_and_nothing_else(tmp_path):
    module = SFTModule(lr=5e-3, lora=LoraSettings(dropout=0.0))
    module.configure_model()
    before = _snapshot(module)
    trainer, _ = _fit(tmp_path, module)
    after = _snapshot(module)
    assert trainer.global_step == 3 and before.keys() == after.keys()
    lora = [n for n in before if "lora_" in n]
    assert len(lora) == 16  # 2 layers x q/k/v/o x (A, B)
    for name in before:
        if "lora_" in name:
            assert not torch.equal(before[name], after[name]), f"LoRA weight {name} did not move"
        else:
            assert torch.equal(before[name], after[name]), f"frozen weight {name} changed"
    for key in ("train/loss", "val/loss", "lr", "train/tokens_per_s", "train/target_tokens_per_s"):
        assert key in trainer.callback_metrics, key


def test_checkpoint_is_small_and_adapter_reloads_with_identical_logits(tmp_path):
    from avcot.chat import model_inputs
    from avcot.model import load_adapter, load_thinker

    module = SFTModule(lr=5e-3)
    trainer, dm = _fit(tmp_path, module)
    ckdir = tmp_path / "checkpoints"
    ckpts = list(ckdir.glob("*.ckpt"))
    assert len(ckpts) == 1
    state = torch.load(ckpts[0], weights_only=True)["state_dict"]
    assert set(state) == {n for n, p in module.named_parameters() if p.requires_grad}
    assert (ckdir / "adapter-step3" / "adapter_model.safetensors").is_file()
    assert not list(ckdir.glob(".adapter*"))  # no temp dirs left behind
    reloaded = load_adapter(load_thinker("tiny"), str(ckdir / "adapter-last")).eval()
    module.model.eval()
    batch = next(iter(dm.val_dataloader()))
    with torch.no_grad():
        want = module.model(**model_inputs(batch.inputs)).logits
        got = reloaded(**model_inputs(batch.inputs)).logits
    assert torch.equal(got, want)


@pytest.mark.parametrize("levers", [{}, {"fast_loss": True, "lm_checkpointing": True}])
def test_qlora_nf4_step_on_cpu_changes_lora_weights(tmp_path, levers):
    """configs/qlora_7b_single_gpu.yaml's setup (nf4 base, label-only loss, LM checkpointing) trains."""
    module = SFTModule(quantization="nf4", lr=5e-3, lora=LoraSettings(dropout=0.0), **levers)
    module.configure_model()
    assert getattr(module.model.get_base_model(), "is_loaded_in_4bit", False)
    before = _snapshot(module)
    _fit(tmp_path, module, steps=2)
    after = _snapshot(module)
    moved = [n for n in before if "lora_B" in n and not torch.equal(before[n], after[n])]
    assert len(moved) == 8
    frozen = [n for n in before if "lora_" not in n]
    assert all(torch.equal(before[n], after[n]) for n in frozen)


def test_loss_falls_on_target_tokens_only(tmp_path):
    """The module's loss equals a hand-computed next-token CE over the labelled positions."""
    from helpers import traced_rows, write_manifest

    from avcot.chat import model_inputs

    module = SFTModule()
    module.configure_model()
    dm = CavsrDataModule(train_manifest=str(write_manifest(traced_rows(2), tmp_path / "m.jsonl")),
                         val_fraction=0.0, rejects_path=str(tmp_path / "r.jsonl"))
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    module.model.eval()
    with torch.no_grad():
        out = module(batch)
        logits = module.model(**model_inputs(batch.inputs, with_labels=False)).logits  # [B, L, V]
    labels = batch.inputs["labels"][:, 1:]  # [B, L-1]
    keep = labels != -100
    manual = torch.nn.functional.cross_entropy(logits[:, :-1][keep].float(), labels[keep])
    assert torch.allclose(out.loss, manual, atol=1e-5)


def test_warmup_cosine_hand_values():
    # warm-up 2 steps then cosine over the remaining 4 of 6 steps
    assert warmup_cosine(0, 2, 6) == 0.5
    assert warmup_cosine(1, 2, 6) == 1.0
    assert warmup_cosine(2, 2, 6) == 1.0
    assert math.isclose(warmup_cosine(3, 2, 6), 0.5 * (1 + math.cos(math.pi / 4)))
    assert math.isclose(warmup_cosine(4, 2, 6), 0.5)
    assert math.isclose(warmup_cosine(6, 2, 6), 0.0, abs_tol=1e-12)
    assert math.isclose(warmup_cosine(9, 2, 6), 0.0, abs_tol=1e-12)  # clamped past the end
    assert warmup_cosine(0, 0, 4) == 1.0


def test_predict_step_returns_generations(tmp_path):
    from helpers import traced_rows, write_manifest

    from avcot.records import Generation
    from avcot.traces import extract_transcription

    rows = traced_rows(3)
    module = SFTModule(max_new_tokens=5)
    dm = CavsrDataModule(predict_manifest=str(write_manifest(rows, tmp_path / "m.jsonl")), eval_batch_size=2,
                         rejects_path=str(tmp_path / "r.jsonl"))
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, default_root_dir=str(tmp_path))
    out = trainer.predict(module, dm)
    gens = [g for batch in out for g in batch]
    assert [g.id for g in gens] == [r["id"] for r in rows]
    assert all(isinstance(g, Generation) and g.text for g in gens)
    assert all(g.extracted == extract_transcription(g.text) for g in gens)


def test_module_without_lora_refuses_to_train():
    module = SFTModule()
    module.configure_model()
    module.model.requires_grad_(False)
    with pytest.raises(RuntimeError, match="no trainable parameters"):
        module.configure_optimizers()


def test_encoder_cache_leaves_the_datamodule_as_configured(tmp_path):
    """The module no longer switches the DataModule's media hashing on: without `hash_media` the keys are
    hashed in the step, and the cache still computes each clip once and reads it back in the next epoch."""
    module = SFTModule(lora=LoraSettings(dropout=0.0), encoder_cache_dir="cache")  # relative: under the run
    manifest = write_traced_manifest(tmp_path / "m.jsonl", 2)
    dm = CavsrDataModule(train_manifest=str(manifest), batch_size=2, val_fraction=0.0, num_frames=2, frame_size=56,
                         rejects_path=str(tmp_path / "rejects.jsonl"))
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", default_root_dir=str(tmp_path / "run"), logger=False,
                        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                        limit_val_batches=0)
    trainer.fit(module, dm)
    assert dm.hash_media is False and dm.hparams.hash_media is False
    stats = module.encoder_cache.stats
    assert (stats.misses, stats.hits) == (4, 4)  # 2 clips x (audio + video): computed once, then read back
    assert module.encoder_cache.root.parent == tmp_path / "run" / "cache"  # <default_root_dir>/cache/<fingerprint>
