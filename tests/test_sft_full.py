"""Full fine-tuning in the SFT module: the language model trains, the towers do not, `model-last/` is a loadable
thinker directory; one device, DDP and FSDP2 with CPU offload (two gloo ranks); the settings it refuses."""
from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path
from unittest import mock

import lightning as L
import pytest
import torch
from multiproc import run_ranks
from helpers import write_traced_manifest

from avcot.model import LoraSettings
from datamodules.cavsr import CavsrDataModule
from lit_modules.sft import SFTModule

REPO = Path(__file__).resolve().parent.parent


def _is_language_model(name: str) -> bool:
    return ".language_model." in name or name.startswith("language_model.")


@pytest.mark.parametrize("train_lm_head", [False, True])
def test_full_mode_trains_the_language_model_and_optionally_the_head(train_lm_head):
    module = SFTModule(finetune="full", lora=LoraSettings(train_lm_head=train_lm_head))
    module.configure_model()
    trainable = {n for n, p in module.model.named_parameters() if p.requires_grad}
    names = [n for n, _ in module.model.named_parameters()]
    want = {n for n in names if _is_language_model(n) or (train_lm_head and n.startswith("lm_head."))}
    assert trainable == want and any("layers.1.mlp" in n for n in want)
    assert not any("audio_tower" in n or "visual" in n for n in trainable)
    assert not hasattr(module.model, "peft_config")  # no adapter: the base weights themselves


def _fit(tmp_path: Path, module: SFTModule, steps: int = 2) -> tuple[L.Trainer, CavsrDataModule]:
    manifest = write_traced_manifest(tmp_path / "m.jsonl", 4)
    dm = CavsrDataModule(train_manifest=str(manifest), batch_size=2, val_fraction=0.5,
                         rejects_path=str(tmp_path / "rejects.jsonl"), num_frames=2, frame_size=56)
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", default_root_dir=str(tmp_path), logger=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        limit_val_batches=0)
    trainer.fit(module, dm)
    return trainer, dm


def test_full_fit_moves_the_language_model_and_model_last_reloads_with_identical_logits(tmp_path):
    import json

    from avcot.chat import model_inputs
    from avcot.model import load_thinker

    module = SFTModule(finetune="full", lr=1e-3)
    module.configure_model()
    before = {n: p.detach().clone() for n, p in module.model.named_parameters()}
    trainer, dm = _fit(tmp_path, module)
    after = dict(module.model.named_parameters())
    for name, was in before.items():
        moved = not torch.equal(was, after[name].detach())
        assert moved is _is_language_model(name), f"{name}: moved={moved}"
    ckdir = tmp_path / "checkpoints"
    state = torch.load(next(ckdir.glob("*.ckpt")), weights_only=True)["state_dict"]
    assert set(state) == {f"model.{n}" for n in before if _is_language_model(n)}  # resumable, towers rebuilt
    last = ckdir / "model-last"
    assert {"config.json", "model.safetensors", "tokenizer_config.json", "training_settings.json"} <= \
        {p.name for p in last.iterdir()}
    assert not list(ckdir.glob("adapter-*")) and not list(ckdir.glob(".model-last*"))
    saved = json.loads((ckdir / "training_settings.json").read_text())
    assert saved == json.loads((last / "training_settings.json").read_text())
    assert (saved["num_frames"], saved["frame_size"], saved["target"]) == (2, 56, "avcot")
    reloaded = load_thinker(str(last)).eval()
    module.model.eval()
    batch = next(iter(dm.train_dataloader()))
    with torch.no_grad():
        want = module.model(**model_inputs(batch.inputs)).logits
        got = reloaded(**model_inputs(batch.inputs)).logits
    assert torch.equal(got, want)


@pytest.mark.parametrize(("kw", "message"), [
    ({"adapter": "some/adapter"}, "adapter"),
    ({"quantization": "nf4"}, "quantization: none"),
    ({"dtype": "bfloat16"}, "dtype: float32"),
])
def test_full_mode_refuses_what_it_cannot_train(kw, message):
    with pytest.raises(ValueError, match=message):
        SFTModule(finetune="full", **kw)


def test_cpu_offload_without_fsdp2_is_a_clear_error():
    with pytest.raises(ValueError, match="ModelParallelStrategy"):
        SFTModule(cpu_offload=True).configure_model()


@pytest.mark.parametrize(("device", "backend", "ok"), [
    ("cpu", "gloo", True), ("cuda", "nccl", False), ("cuda", "cuda:nccl,cpu:gloo", True), ("cuda", "gloo", True),
])
def test_cpu_offload_on_an_accelerator_needs_a_cpu_collective_backend(device, backend, ok):
    from lit_modules.sft import offload_backend_problem

    problem = offload_backend_problem(device, backend)
    assert (problem is None) is ok
    assert ok or "cuda:nccl,cpu:gloo" in problem


def test_adamw_uses_the_avrt_papers_betas_and_eps():
    """AdamW betas 0.9/0.999, eps 1e-8 (the AVRT paper's values), weight decay from the config."""
    module = SFTModule(finetune="full", weight_decay=0.01)
    module.configure_model()
    with mock.patch.object(SFTModule, "trainer", mock.Mock(estimated_stepping_batches=10)):
        opt = module.configure_optimizers()["optimizer"]
    group = opt.param_groups[0]
    assert (group["betas"], group["eps"], group["weight_decay"]) == ((0.9, 0.999), 1e-8, 0.01)


SCRIPT = textwrap.dedent("""
    import sys
    import lightning as L
    import torch
    from lightning.pytorch.strategies import ModelParallelStrategy
    from datamodules.cavsr import CavsrDataModule
    from lit_modules.sft import SFTModule

    manifest, out, kind = sys.argv[1], sys.argv[2], sys.argv[3]
    fsdp = kind.startswith("fsdp2")
    strategy = ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1) if fsdp else "ddp"
    module = SFTModule(finetune="full", lr=1e-3, cpu_offload=kind == "fsdp2_offload")
    dm = CavsrDataModule(train_manifest=manifest, val_fraction=0.0, batch_size=1, num_frames=2, frame_size=56,
                         rejects_path=out + "/r.jsonl")
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy=strategy, max_steps=2, logger=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        default_root_dir=out)
    trainer.fit(module, dm)
    offload = []
    if fsdp:  # FSDP2's own record of the policy each sharded parameter follows
        for m in module.model.modules():
            group = getattr(getattr(m, "_get_fsdp_state", lambda: None)(), "_fsdp_param_group", None)
            offload += [p.offload_to_cpu for p in (group.fsdp_params if group else [])]
    state, sharded = {}, False
    for name, p in module.model.named_parameters():
        sharded = sharded or hasattr(p, "full_tensor")
        full = p.full_tensor() if hasattr(p, "full_tensor") else p
        state[name] = full.detach().cpu().clone()
    torch.save({"state": state, "step": trainer.global_step, "sharded": sharded, "offload": offload},
               f"{out}/rank{trainer.global_rank}.pt")
""")


# ~40 s each on 2 cores: FSDP2 with CPU offload runs by default, DDP and FSDP2 without offload with -m slow.
@pytest.mark.parametrize("kind", ["fsdp2_offload", pytest.param("fsdp2", marks=pytest.mark.slow),
                                  pytest.param("ddp", marks=pytest.mark.slow)])
def test_two_process_full_fine_tuning_ends_identical_and_exports_the_trained_model(tmp_path, kind):
    from avcot.model import load_thinker

    manifest = write_traced_manifest(tmp_path / "m.jsonl", 4)
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    rc, _, err = run_ranks([sys.executable, str(script), str(manifest), str(tmp_path), kind], cwd=REPO, env=env)
    assert rc == 0, err[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["step"] == r1["step"] == 2
    assert r0["sharded"] is kind.startswith("fsdp2")
    if kind.startswith("fsdp2"):
        assert r0["offload"] and set(r0["offload"]) == {kind == "fsdp2_offload"}
    start = dict(load_thinker("tiny").named_parameters())
    for name, w in r0["state"].items():
        assert torch.equal(w, r1["state"][name]), f"{name} differs between ranks"
        assert torch.equal(w, start[name].detach()) is not _is_language_model(name), name
    exported = dict(load_thinker(str(tmp_path / "checkpoints" / "model-last")).named_parameters())
    assert exported.keys() == r0["state"].keys()
    for name, w in exported.items():
        assert torch.equal(w.detach(), r0["state"][name]), name


def test_a_base_without_processor_files_fails_before_the_first_step(tmp_path):
    from avcot.model import build_tiny_thinker

    steps = []

    class Counting(SFTModule):
        def training_step(self, *args, **kwargs):
            steps.append(1)
            return super().training_step(*args, **kwargs)

    bare = tmp_path / "bare"  # weights only, as a user's converted checkpoint might be
    build_tiny_thinker().save_pretrained(str(bare))
    with pytest.raises(FileNotFoundError, match="cannot load a Qwen2.5-Omni processor from"):
        _fit(tmp_path, Counting(base=str(bare), finetune="full", lr=1e-3))
    assert steps == []
