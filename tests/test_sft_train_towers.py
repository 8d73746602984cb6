"""`train_towers` (for random-init models): a full fit moves the audio and vision towers too, or the one tower it
names ("audio" / "vision"); off, they stay put;
the fast loss gives the stock loss and the towers' stock gradients; settings that would leave the towers under
no_grad are refused."""
from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from helpers import write_traced_manifest

from datamodules.cavsr import CavsrDataModule
from lit_modules.sft import SFTModule


def _tower_weights_after_fit(tmp_path: Path, train_towers: bool | str) -> tuple[dict, dict]:
    module = SFTModule(finetune="full", lr=1e-3, train_towers=train_towers)
    module.configure_model()
    towers = {n: p for n, p in module.model.named_parameters() if "audio_tower" in n or "visual" in n}
    before = {n: p.detach().clone() for n, p in towers.items()}
    manifest = write_traced_manifest(tmp_path / "m.jsonl", 2)
    dm = CavsrDataModule(train_manifest=str(manifest), batch_size=2, val_fraction=0.0, split_column=None,
                         rejects_path=str(tmp_path / "rejects.jsonl"), num_frames=2, frame_size=56)
    trainer = L.Trainer(max_steps=2, accelerator="cpu", default_root_dir=str(tmp_path), logger=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        enable_checkpointing=False)
    trainer.fit(module, dm)
    return before, {n: p.detach() for n, p in towers.items()}


@pytest.mark.parametrize("train_towers, moving", [
    (True, {"audio_tower", "visual"}), (False, set()), ("audio", {"audio_tower"}), ("vision", {"visual"}),
])
def test_train_towers_decides_which_towers_move(tmp_path, train_towers, moving):
    before, after = _tower_weights_after_fit(tmp_path, train_towers)
    for tower in ("audio_tower", "visual"):
        moved = [n for n in before if tower in n and not before[n].equal(after[n])]
        assert bool(moved) == (tower in moving), (tower, len(moved))


def test_train_towers_names_a_tower_or_is_a_bool():
    from avcot.model import trained_towers

    assert trained_towers(True) == ("audio_tower", "visual") and trained_towers(False) == ()
    assert trained_towers("vision") == ("visual",)
    with pytest.raises(ValueError, match="'audio' or 'vision'"):
        trained_towers("video")


@pytest.mark.parametrize("kwargs, match", [
    (dict(finetune="lora"), "finetune: full"),
    (dict(finetune="full", encoder_cache_dir="cache"), "encoder_cache_dir: null"),
])
@pytest.mark.parametrize("towers", [True, "audio"])
def test_train_towers_refuses_settings_that_keep_the_towers_frozen(kwargs, match, towers):
    with pytest.raises(ValueError, match=match):
        SFTModule(train_towers=towers, **kwargs)


def _tower_grads(module: SFTModule, batch) -> tuple[float, dict[str, torch.Tensor]]:
    module.model.zero_grad(set_to_none=True)
    loss = module._compute_loss(batch)
    loss.backward()
    return float(loss), {n: p.grad.clone() for n, p in module.model.named_parameters()
                         if ("audio_tower" in n or "visual" in n) and p.grad is not None}


def test_fast_loss_trains_the_towers_as_the_stock_loss_does(tmp_path):
    manifest = write_traced_manifest(tmp_path / "m.jsonl", 2)
    dm = CavsrDataModule(train_manifest=str(manifest), batch_size=2, val_fraction=0.0, split_column=None,
                         rejects_path=str(tmp_path / "rejects.jsonl"), num_frames=2, frame_size=56)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    results = []
    for fast in (False, True):
        module = SFTModule(finetune="full", lr=1e-3, train_towers=True, fast_loss=fast)
        module.configure_model()
        results.append(_tower_grads(module, batch))
    (stock_loss, stock), (fast_loss, fast) = results
    assert fast_loss == pytest.approx(stock_loss, rel=1e-5)
    assert stock and set(fast) == set(stock)  # every tower parameter that the stock loss reaches gets a gradient
    assert any(g.abs().sum() > 0 for g in stock.values())
    for name, grad in stock.items():
        torch.testing.assert_close(fast[name], grad, rtol=1e-4, atol=1e-6, msg=name)
