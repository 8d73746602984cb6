"""Two CPU processes (gloo): DDP and FSDP2 (ModelParallelStrategy) end with identical LoRA weights on both
ranks, and those weights moved. Each run is a subprocess script, because Lightning's launcher re-runs
the script for rank 1."""
from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path

import pytest
from multiproc import run_ranks
import torch
from helpers import write_traced_manifest

REPO = Path(__file__).resolve().parent.parent

SCRIPT = textwrap.dedent("""
    import sys
    import lightning as L
    import torch
    from lightning.pytorch.strategies import ModelParallelStrategy
    from avcot.model import LoraSettings
    from datamodules.cavsr import CavsrDataModule
    from lit_modules.sft import SFTModule

    manifest, out, kind = sys.argv[1], sys.argv[2], sys.argv[3]
    strategy = "ddp" if kind == "ddp" else ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1)
    module = SFTModule(lr=1e-2, lora=LoraSettings(dropout=0.0), lm_checkpointing=kind.endswith("_ckpt"))
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


@pytest.mark.parametrize("kind", ["ddp", "fsdp2", "fsdp2_ckpt"])
def test_two_process_training_ends_with_identical_lora_weights(tmp_path, kind):
    manifest = write_traced_manifest(tmp_path / "m.jsonl", 4)
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    rc, _, err = run_ranks([sys.executable, str(script), str(manifest), str(tmp_path), kind], cwd=REPO, env=env)
    assert rc == 0, err[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["step"] == r1["step"] == 2
    assert r0["sharded"] is kind.startswith("fsdp2")  # FSDP2 really sharded the parameters (DTensors)
    ckdir = tmp_path / "checkpoints"
    assert (ckdir / "adapter-last" / "adapter_model.safetensors").is_file()
    assert list(ckdir.glob("*.ckpt"))
    assert r0["state"].keys() == r1["state"].keys() and len(r0["state"]) == 16
    for name, w in r0["state"].items():
        assert torch.equal(w, r1["state"][name]), f"{name} differs between ranks"
    moved = [n for n, w in r0["state"].items() if "lora_B" in n and w.abs().sum() > 0]
    assert len(moved) == 8  # lora_B starts at zero: nonzero means it trained


GROUPED_SCRIPT = textwrap.dedent("""
    import json, sys
    import lightning as L
    from avcot.model import LoraSettings
    from datamodules.cavsr import CavsrDataModule
    from lit_modules.sft import SFTModule

    manifest, out = sys.argv[1], sys.argv[2]

    class Record(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            with open(f"{out}/ids{trainer.global_rank}.jsonl", "a") as f:
                f.write(json.dumps([trainer.current_epoch, list(batch.ids)]) + "\\n")

    dm = CavsrDataModule(train_manifest=manifest, val_fraction=0.0, batch_size=2, group_by_length=True,
                         rejects_path=out + "/r.jsonl")
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_epochs=2, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, default_root_dir=out, callbacks=[Record()])
    trainer.fit(SFTModule(lora=LoraSettings(dropout=0.0)), dm)
""")


def test_ddp_with_group_by_length_gives_each_rank_whole_grouped_batches(tmp_path):
    """Lightning wraps the length-grouped sampler for DDP: per step each rank gets one grouped batch,
    the ranks see disjoint rows, and the second epoch is regrouped (set_epoch reaches the sampler)."""
    from avcot.length_batching import LengthGroupedSampler
    from datamodules.cavsr import CavsrDataModule
    from helpers import varied_rows, write_manifest

    manifest = write_manifest(varied_rows(8), tmp_path / "m.jsonl")
    script = tmp_path / "train.py"
    script.write_text(GROUPED_SCRIPT)
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    rc, _, err = run_ranks([sys.executable, str(script), str(manifest), str(tmp_path)], cwd=REPO, env=env)
    assert rc == 0, err[-3000:]
    seen = [[json.loads(line) for line in (tmp_path / f"ids{r}.jsonl").read_text().splitlines()] for r in (0, 1)]
    dm = CavsrDataModule(train_manifest=str(manifest), val_fraction=0.0, rejects_path=str(tmp_path / "p.jsonl"))
    dm.setup("fit")
    ids = [c.id for c in dm.records["train"]]
    sampler = LengthGroupedSampler(dm.length_keys("train"), 2, seed=0, world_size=2)
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        grouped = [sorted(ids[i] for i in b) for b in sampler.batches()]
        mine = [[sorted(b) for e, b in rank if e == epoch] for rank in seen]
        assert len(mine[0]) == len(mine[1]) == 2  # 8 rows, batch 2, 2 ranks
        assert all(b in grouped for rank in mine for b in rank)
        flat = [i for rank in mine for b in rank for i in b]
        assert sorted(flat) == sorted(ids)
    assert [b for e, b in seen[0] if e == 0] != [b for e, b in seen[0] if e == 1]
