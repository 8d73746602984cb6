"""Two-process GRPO on CPU (gloo): FSDP2 (ModelParallelStrategy + fully_shard) and DDP.

Each run takes two GRPO steps on the tiny thinker with different prompts and different samples on each rank
(the rollout generator is seeded with seed + rank); every rank then writes its full LoRA weights, before
and after training. Gradients are synchronised, so both ranks must end with identical weights that differ
from the start. The `_static` runs decode with the static KV cache (under FSDP2 inside the rollout's one
parameter gather) and start from a trained SFT adapter with reference = start: the frozen reference copy must
come out unchanged, equal to the adapter file, and the first step's KL must be exactly 0 on every rank.
Run as a script (what the test does): `python tests/test_grpo_distributed.py OUT fsdp2|ddp[_static] [ADAPTER]`;
Lightning's launcher starts the second rank by re-running the same command.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from multiproc import run_ranks

ROOT = Path(__file__).resolve().parents[1]


def _full_lora(module, trainable: bool = True) -> dict:
    """Full (gathered) LoRA weights: the trainable ones, or the frozen reference copy."""
    import torch

    out = {}
    for name, p in module.model.named_parameters():
        if p.requires_grad if trainable else ".reference." in name:
            t = p.detach()
            t = t.full_tensor() if hasattr(t, "full_tensor") else t  # FSDP2 shards: collective, every rank
            out[name] = t.to("cpu", torch.float32).clone()
    return out


def _run(out_dir: str, strategy_name: str, adapter: str | None = None) -> None:
    import lightning as L
    import torch

    from avcot.model import LoraSettings
    from datamodules.mcq import McqDataModule
    from lit_modules.grpo import GRPOModule

    class DumpLora(L.Callback):
        def on_train_start(self, trainer, pl_module):
            self.start, self.ref_start, self.kl = _full_lora(pl_module), _full_lora(pl_module, False), []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.kl.append(float(trainer.callback_metrics["kl"]))

        def on_train_end(self, trainer, pl_module):
            from torch.distributed.fsdp import FSDPModule

            end, ref_end = _full_lora(pl_module), _full_lora(pl_module, False)
            units = sum(isinstance(m, FSDPModule) for m in pl_module.model.modules())
            torch.save({"start": self.start, "end": end, "ref_start": self.ref_start, "ref_end": ref_end,
                        "kl": self.kl, "world": trainer.world_size, "gathers": gathers, "units": units},
                       Path(out_dir) / f"rank{trainer.global_rank}.pt")

    if strategy_name.startswith("fsdp2"):
        from lightning.pytorch.strategies import ModelParallelStrategy

        strategy = ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1)
    else:
        strategy = "ddp"
    # the GRPO configs' static-cache rollout; 16 new tokens reach its cross-rank EOS check (every 16 steps)
    static = strategy_name.endswith("_static")
    adapter = adapter if static else None
    dm = McqDataModule(train_manifest=str(ROOT / "tests/data/synth/mcq.jsonl"), target="none", batch_size=1,
                       num_frames=2, frame_size=56, max_seconds=2.0)
    module = GRPOModule(base="tiny", rewards=["avcot.rewards.length_reward"], group_size=3,
                        max_new_tokens=16 if static else 6, lr=5e-2, lora=LoraSettings(dropout=0.0),
                        micro_batch_prompts=1, static_rollout=static, adapter=adapter)
    gathers: list[int] = []  # all-gathers per rollout
    rollout = module._rollout

    def counted_rollout(batch, settings=None):
        from unittest import mock

        import torch.distributed as dist

        with mock.patch.object(dist, "all_gather_into_tensor", wraps=dist.all_gather_into_tensor) as gather:
            out = rollout(batch, settings)
        gathers.append(gather.call_count)
        return out

    module._rollout = counted_rollout
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy=strategy, max_steps=2, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, default_root_dir=out_dir, callbacks=[DumpLora()])
    trainer.fit(module, dm)


# ~30-90 s each on 2 shared cores: FSDP2 and DDP with the static rollout run by default, the growing cache with -m slow.
@pytest.mark.parametrize("strategy", ["fsdp2_static", "ddp_static", pytest.param("fsdp2", marks=pytest.mark.slow),
                                      pytest.param("ddp", marks=pytest.mark.slow)])
def test_two_ranks_end_with_identical_lora_weights(tmp_path, strategy):
    import torch
    from safetensors.torch import load_file
    from sft_adapter import make_sft_adapter

    adapter = make_sft_adapter(tmp_path / "sft-adapter")
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    cmd = [sys.executable, str(Path(__file__)), str(tmp_path), strategy, str(adapter)]
    rc, out, err = run_ranks(cmd, cwd=ROOT, env=env)
    assert rc == 0, out[-3000:] + err[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["world"] == r1["world"] == 2
    assert r0["start"].keys() == r0["end"].keys() and r0["end"]
    for name in r0["end"]:
        assert torch.equal(r0["start"][name], r1["start"][name]), name
        assert torch.equal(r0["end"][name], r1["end"][name]), name
    assert any(not torch.equal(r0["start"][n], r0["end"][n]) for n in r0["end"])  # training did move them
    if strategy.startswith("fsdp2"):  # one gather per FSDP unit for the whole rollout, not one per token
        assert r0["units"] == 3 and r0["gathers"] == [r0["units"]] * 2, (r0["units"], r0["gathers"])
    if strategy.endswith("_static"):  # from the SFT adapter, reference = start
        saved = load_file(str(adapter / "adapter_model.safetensors"))
        for r in (r0, r1):
            assert r["kl"][0] == 0.0 and r["kl"][-1] > 0, r["kl"]
            assert r["ref_start"] and r["ref_start"].keys() == r["ref_end"].keys()
            for name, w in r["ref_end"].items():
                assert torch.equal(w, r["ref_start"][name]), name  # the reference never moves
                assert torch.equal(w, saved[name.replace(".reference.", ".")]), name  # and is the SFT adapter


if __name__ == "__main__":
    _run(*sys.argv[1:4])
