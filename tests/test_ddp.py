"""Two CPU processes (gloo): DDP and FSDP2 (ModelParallelStrategy) end with identical LoRA weights on both
ranks, and those weights moved. Each run is a subprocess script, because Lightning's launcher re-runs
the script for rank 1."""
from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import pytest
from multiproc import run_ranks
import torch
from test_datamodule import write_traced_manifest

REPO = Path(__file__).resolve().parent.parent

SCRIPT = textwrap.dedent("""
    import sys
    import lightning as L
    import torch
    from lightning.pytorch.strategies import ModelParallelStrategy
    from datamodules.cavsr import CavsrDataModule
    from lit_modules.sft import SFTModule

    manifest, out, kind = sys.argv[1], sys.argv[2], sys.argv[3]
    strategy = "ddp" if kind == "ddp" else ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1)
    module = SFTModule(lr=1e-2, lora_dropout=0.0)
    dm = CavsrDataModule(train_manifest=manifest, val_fraction=0.0, batch_size=1, rejects_path=out + "/r.jsonl")
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy=strategy, max_steps=2, logger=False,
                        enable_checkpointing=True, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, default_root_dir=out)
    trainer.fit(module, dm)
    state, sharded = {}, False
    for name, p in module.named_parameters():
        sharded = sharded or hasattr(p, "full_tensor")
        if "lora_" in name:
            full = p.full_tensor() if hasattr(p, "full_tensor") else p
            state[name] = full.detach().cpu().clone()
    torch.save({"state": state, "step": trainer.global_step, "sharded": sharded}, f"{out}/rank{trainer.global_rank}.pt")
""")


@pytest.mark.parametrize("kind", ["ddp", "fsdp2"])
def test_two_process_training_ends_with_identical_lora_weights(tmp_path, kind):
    manifest = write_traced_manifest(tmp_path / "m.jsonl", 4)
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    rc, _, err = run_ranks([sys.executable, str(script), str(manifest), str(tmp_path), kind], cwd=REPO, env=env)
    assert rc == 0, err[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["step"] == r1["step"] == 2
    assert r0["sharded"] is (kind == "fsdp2")  # FSDP2 really sharded the parameters (DTensors)
    ckdir = tmp_path / "checkpoints"
    assert (ckdir / "adapter-last" / "adapter_model.safetensors").is_file()
    assert list(ckdir.glob("*.ckpt"))
    assert r0["state"].keys() == r1["state"].keys() and len(r0["state"]) == 16
    for name, w in r0["state"].items():
        assert torch.equal(w, r1["state"][name]), f"{name} differs between ranks"
    moved = [n for n, w in r0["state"].items() if "lora_B" in n and w.abs().sum() > 0]
    assert len(moved) == 8  # lora_B starts at zero: nonzero means it trained
