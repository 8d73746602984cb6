"""GRPOModule and the shared-prefix rollout on the tiny thinker (CPU).

Prompts carry real video + audio (random arrays through the processor) so the M-RoPE positions of the
media tokens are exercised; two prompts of different lengths make the batch left-padded.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from avcot.chat import Prompt, collate, encode_example, model_inputs

G = 3
N = 8


def _prompts(n: int = 2) -> list[Prompt]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        video = rng.integers(0, 256, (4, 56, 56, 3), dtype=np.uint8)
        audio = (rng.standard_normal(16000 * (1 + i)) * 0.1).astype(np.float32)
        out.append(Prompt(instruction="question" + " more" * (3 * i), system="sys", video=video, audio=audio))
    return out


@pytest.fixture(scope="module")
def tiny_batch(tiny_processor):
    tok = tiny_processor.tokenizer
    examples = [encode_example(tiny_processor, p) for p in _prompts()]
    batch = collate(examples, tok.pad_token_id, padding_side="left")
    assert batch["attention_mask"][0, 0] == 0  # really left-padded
    return batch, tok.convert_tokens_to_ids("<|im_end|>"), tok.pad_token_id


@pytest.fixture(scope="module")
def base_model():
    from avcot.model import load_thinker

    return load_thinker("tiny").eval()


def sample_group(model, batch, *, group_size, max_new_tokens, eos_token_id, pad_token_id, temperature=1.0,
                 generator=None):
    """The engine with GRPO's sampling settings (temperature 0 = greedy)."""
    from avcot.rollout import RolloutSettings, sample

    settings = RolloutSettings(max_new_tokens=max_new_tokens, group_size=group_size, do_sample=temperature > 0,
                               temperature=temperature or 1.0, eos_token_id=eos_token_id, pad_token_id=pad_token_id)
    return sample(model, batch, settings, generator=generator)


def _hf_new_tokens(model, batch, **kw):
    out = model.generate(**model_inputs(batch, with_labels=False), max_new_tokens=N, **kw)
    return out[:, batch["input_ids"].shape[1]:]


def test_shared_prefix_greedy_equals_hf_generate(base_model, tiny_batch):
    batch, eos, pad = tiny_batch
    rollout = sample_group(base_model, batch, group_size=G, max_new_tokens=N, eos_token_id=eos, pad_token_id=pad,
                           temperature=0.0)
    hf = _hf_new_tokens(base_model, batch, do_sample=False, eos_token_id=eos, pad_token_id=pad)  # [B, N]
    assert rollout.completion_ids.shape == (2 * G, N)
    assert torch.equal(rollout.completion_ids, hf.repeat_interleave(G, dim=0))
    assert not torch.equal(hf[0], hf[1])  # the two prompts really differ


def test_shared_prefix_sampling_equals_hf_generate_for_same_seed(base_model, tiny_batch):
    batch, eos, pad = tiny_batch
    torch.manual_seed(123)
    ours = sample_group(base_model, batch, group_size=G, max_new_tokens=N, eos_token_id=eos, pad_token_id=pad,
                        temperature=1.0).completion_ids
    torch.manual_seed(123)
    hf = _hf_new_tokens(base_model, batch, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                        num_return_sequences=G, eos_token_id=eos, pad_token_id=pad)
    assert torch.equal(ours, hf)
    assert len({tuple(r) for r in ours.tolist()}) == 2 * G  # G distinct samples per prompt
    gen = torch.Generator().manual_seed(7)
    again = sample_group(base_model, batch, group_size=G, max_new_tokens=N, eos_token_id=eos, pad_token_id=pad,
                         generator=gen).completion_ids
    assert torch.equal(again, sample_group(base_model, batch, group_size=G, max_new_tokens=N, eos_token_id=eos,
                                           pad_token_id=pad, generator=torch.Generator().manual_seed(7)).completion_ids)


def test_completion_logits_from_captured_embeds_equal_full_media_forward(base_model, tiny_batch, tiny_processor):
    """The update forward (merged embeddings + explicit M-RoPE positions) equals a plain forward with media."""
    from avcot.rollout import completion_logits

    batch, eos, pad = tiny_batch
    rollout = sample_group(base_model, batch, group_size=1, max_new_tokens=N, eos_token_id=eos, pad_token_id=pad,
                           temperature=1.0, generator=torch.Generator().manual_seed(0))
    ours = completion_logits(base_model, rollout)  # [B, N, V]
    full = dict(model_inputs(batch, with_labels=False))
    full["input_ids"] = torch.cat([batch["input_ids"], rollout.completion_ids], dim=1)
    full["attention_mask"] = torch.cat([batch["attention_mask"], rollout.completion_mask], dim=1)
    with torch.no_grad():
        ref = base_model(**full).logits[:, -N - 1:-1]  # [B, N, V]
    m = rollout.completion_mask.bool()
    assert torch.allclose(ours[m], ref[m], atol=1e-5)


def test_completion_mask_stops_after_first_eos():
    from avcot.rollout import completion_mask

    ids = torch.tensor([[5, 2, 0, 0], [5, 6, 7, 8], [2, 0, 0, 0]])
    assert completion_mask(ids, 2).tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]


def test_prompt_only_turns_sft_batch_into_left_padded_prompts(tiny_processor, tiny_batch):
    from avcot.rollout import prompt_only

    batch, _, pad = tiny_batch
    with_targets = collate([encode_example(tiny_processor, p, target=t) for p, t in zip(_prompts(), ["ab", "a b c d"])],
                           pad, padding_side="right")
    out = prompt_only(with_targets, pad)
    assert torch.equal(out["input_ids"], batch["input_ids"])
    assert torch.equal(out["attention_mask"], batch["attention_mask"])
    assert "labels" not in out


def test_reference_with_adapter_disabled_equals_base_model(base_model, tiny_batch):
    from avcot.model import LoraSettings, apply_lora, load_thinker
    from avcot.rollout import completion_logits

    batch, eos, pad = tiny_batch
    policy = apply_lora(load_thinker("tiny"), LoraSettings(dropout=0.0)).eval()
    with torch.no_grad():  # a trained-looking adapter: LoRA B is zero at init
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    rollout = sample_group(base_model, batch, group_size=2, max_new_tokens=N, eos_token_id=eos, pad_token_id=pad,
                           generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        base = completion_logits(base_model, rollout)
        with policy.disable_adapter():
            ref = completion_logits(policy, rollout)
        on = completion_logits(policy, rollout)
    assert torch.allclose(ref, base, atol=1e-6)
    assert (on - base).abs().max() > 1e-3  # the adapter does change the policy


def test_resolve_reward_and_reward_inputs_per_completion(tiny_batch):
    from avcot.batch import Batch
    from avcot.rewards import format_reward, resolve_reward

    assert resolve_reward("avcot.rewards.format_reward") is format_reward
    with pytest.raises(ValueError, match="cannot import reward"):
        resolve_reward("avcot.rewards.no_such_reward")
    inputs, _, _ = tiny_batch
    batch = Batch(inputs=inputs, ids=("x", "y"), references=("A", "C"), answers=("A", "C"),
                  media_keys={"video": ["k1", "k2"]})
    kwargs = batch.reward_inputs(3).kwargs()
    assert kwargs == {"references": ("A",) * 3 + ("C",) * 3, "answers": ("A",) * 3 + ("C",) * 3}  # no media


def _distinct_token_reward(completions, **kw) -> list[float]:
    """A reward that varies on a random model: share of distinct characters in the completion."""
    return [len(set(c)) / max(len(c), 1) for c in completions]


def _lora_state(module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in module.model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("num_iterations", [1, 2])
def test_tiny_fit_changes_lora_weights_and_logs_rewards(tmp_path, data_dir, num_iterations):
    import lightning as L

    from avcot.model import LoraSettings
    from datamodules.mcq import McqDataModule
    from lit_modules.grpo import GRPOModule

    manifest = Path(data_dir) / "synth" / "mcq.jsonl"
    dm = McqDataModule(train_manifest=str(manifest), target="none", batch_size=2, num_frames=2, frame_size=56,
                       max_seconds=2.0)
    module = GRPOModule(base="tiny", group_size=3, max_new_tokens=6, lr=5e-2, lora=LoraSettings(dropout=0.0),
                        num_iterations=num_iterations, micro_batch_prompts=1)
    module.configure_model()
    module.reward_funcs = [_distinct_token_reward]
    module.reward_weights = [1.0]
    before = _lora_state(module)
    trainer = L.Trainer(max_steps=2, accelerator="cpu", logger=L.pytorch.loggers.CSVLogger(tmp_path),
                        default_root_dir=tmp_path, limit_val_batches=0, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.fit(module, dm)
    after = _lora_state(module)
    changed = [n for n in before if not torch.equal(before[n], after[n])]
    assert changed and all("lora_" in n for n in before)
    metrics = trainer.callback_metrics
    for key in ("reward/mean", "reward/_distinct_token_reward/mean", "advantage/std", "kl", "clip_fraction",
                "completion/length", "completion/format_valid", "tokens_per_s/rollout", "tokens_per_s/update"):
        assert key in metrics, key
    assert 0 < float(metrics["reward/mean"]) <= 1
    assert float(metrics["advantage/std"]) > 0
    ckpts = list(Path(tmp_path).rglob("*.ckpt"))
    (adapter,) = Path(tmp_path).rglob("adapter-last/adapter_model.safetensors")
    settings = json.loads((adapter.parent.parent / "training_settings.json").read_text())
    assert (settings["num_frames"], settings["frame_size"], settings["max_seconds"]) == (2, 56, 2.0)
    state = torch.load(ckpts[0], map_location="cpu", weights_only=True)["state_dict"]
    assert state and all("lora_" in k for k in state)  # only trainable weights are checkpointed


def test_validate_logs_greedy_rewards(tmp_path, data_dir):
    import lightning as L

    from datamodules.mcq import McqDataModule
    from lit_modules.grpo import GRPOModule

    dm = McqDataModule(train_manifest=str(Path(data_dir) / "synth" / "mcq.jsonl"), target="none", val_fraction=0.1,
                       batch_size=2, num_frames=2, frame_size=56, max_seconds=2.0)
    module = GRPOModule(base="tiny", max_new_tokens=4)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=tmp_path, limit_val_batches=1)
    trainer.validate(module, dm)
    metrics = trainer.callback_metrics
    assert {"val/reward", "val/format_reward", "val/accuracy_reward"} <= set(metrics)
    assert float(metrics["val/format_reward"]) == 0.0  # a random model writes no <think>/<answer> block


@pytest.mark.parametrize("name", ["tiny_grpo", "avrt_3b_grpo", "cavsr_grpo", "avrt_3b_sft", "fsdp_grpo_7b"])
def test_configs_name_real_arguments_and_their_command(name):
    """Every init_args key is a constructor argument, rewards import, and line 1 is the command that runs it."""
    import importlib
    import inspect

    import yaml

    path = Path(__file__).resolve().parents[1] / "configs" / f"{name}.yaml"
    text = path.read_text()
    assert text.splitlines()[0] == f"# python -m avcot.cli fit --config configs/{name}.yaml"
    cfg = yaml.safe_load(text)
    for section in ("model", "data"):
        module_name, _, cls_name = cfg[section]["class_path"].rpartition(".")
        cls = getattr(importlib.import_module(module_name), cls_name)
        params = set(inspect.signature(cls.__init__).parameters)
        unknown = set(cfg[section]["init_args"]) - params
        assert not unknown, f"{name}: {section} has unknown arguments {unknown}"
    args = cfg["model"]["init_args"]
    if "rewards" in args:
        from avcot.rewards import resolve_reward

        assert len(args["rewards"]) == len(args["reward_weights"])
        assert all(callable(resolve_reward(r)) for r in args["rewards"])
    if name == "avrt_3b_grpo":  # the paper's settings
        assert (args["group_size"], args["clip_eps"], args["beta"], args["temperature"]) == (4, 0.2, 0.01, 1.0)
        assert args["rewards"] == ["avcot.rewards.format_reward", "avcot.rewards.accuracy_reward"]
    # The paper-named SFT configs' numbers (lr, warm-up, effective batch over devices) are held by
    # tests/test_paper_configs.py, which computes the batch from the parsed config.


def test_fsdp_grpo_7b_config_is_grpo_under_fsdp2_with_the_static_rollout(capsys, monkeypatch):
    """The config parses through the CLI (its run on 2 CPU ranks is test_grpo_distributed's fsdp2_static)."""
    import yaml

    from avcot.cli import main

    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(root)
    with pytest.raises(SystemExit) as done:
        main(["fit", "--config", "configs/fsdp_grpo_7b.yaml", "--print_config"])
    assert done.value.code == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["model"]["class_path"] == "lit_modules.grpo.GRPOModule"
    assert cfg["trainer"]["strategy"]["class_path"] == "lightning.pytorch.strategies.ModelParallelStrategy"
    args = cfg["model"]["init_args"]
    assert args["static_rollout"] is True and args["reference"] == "start" and args["adapter"]
    assert "Qwen2.5-Omni-7B" in args["base"]
    assert (args["group_size"], args["clip_eps"], args["beta"]) == (4, 0.2, 0.01)


def test_tiny_grpo_config_builds_through_the_cli(tmp_path):
    from avcot.cli import main
    from datamodules.mcq import McqDataModule
    from lit_modules.grpo import GRPOModule

    root = Path(__file__).resolve().parents[1]
    cli = main(["--config", str(root / "configs" / "tiny_grpo.yaml"), f"--trainer.default_root_dir={tmp_path}",
                f"--trainer.logger.init_args.save_dir={tmp_path}"], run=False)
    assert isinstance(cli.model, GRPOModule) and isinstance(cli.datamodule, McqDataModule)
    assert cli.model.hparams.group_size == 4 and cli.model.reward_weights == [1.0, 1.0, 0.1]


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_static_rollout_equals_dynamic_rollout(tiny_batch, temperature):
    """The static-cache speed lever samples the same tokens and captures the same prefix."""
    from unittest import mock

    from lit_modules.grpo import GRPOModule

    batch, _, _ = tiny_batch
    outs = []
    for static in (False, True):
        module = GRPOModule(base="tiny", group_size=G, max_new_tokens=N, temperature=temperature,
                            static_rollout=static)
        module.configure_model()
        module._generator = torch.Generator().manual_seed(11)
        with mock.patch.object(GRPOModule, "trainer", mock.Mock(world_size=1)):
            outs.append(module._rollout(batch))
    dyn, sta = outs
    n = dyn.completion_ids.shape[1]
    assert torch.equal(sta.completion_ids[:, :n], dyn.completion_ids)
    assert not sta.completion_ids[:, n:].ne(module.pad_id).any()  # only pad beyond the dynamic length
    assert torch.equal(sta.completion_mask[:, :n], dyn.completion_mask)
    assert torch.allclose(sta.prefill.embeds, dyn.prefill.embeds, atol=1e-6)
    assert torch.equal(sta.prefill.positions, dyn.prefill.positions)
    assert torch.equal(sta.prefill.next_position, dyn.prefill.next_position)


def test_static_step_is_compiled_on_cuda_but_not_under_fsdp2():
    """FSDP2 gathers parameters into new storage every rollout, so the static step runs eager there by default."""
    from types import SimpleNamespace
    from unittest import mock

    from avcot.rollout import RolloutEngine, RolloutSettings

    engine = RolloutEngine.__new__(RolloutEngine)  # only what `compiles` reads
    engine.model = torch.nn.Linear(1, 1)
    engine.thinker = SimpleNamespace(lm_head=SimpleNamespace(weight=SimpleNamespace(device=torch.device("cuda"))))
    static, forced, plain = (RolloutSettings(static=True), RolloutSettings(static=True, compile=True),
                             RolloutSettings(static=False))
    assert engine.compiles(static) and not engine.compiles(plain)
    with mock.patch("avcot.rollout.engine.is_sharded", return_value=True):
        assert not engine.compiles(static)
        assert engine.compiles(forced)


# ---- the reference policy ------------------------------------------------------------------------------------


def _rollout_of(module, batch, seed: int = 3):
    from unittest import mock

    from lit_modules.grpo import GRPOModule

    module._generator = torch.Generator().manual_seed(seed)
    with mock.patch.object(GRPOModule, "trainer", mock.Mock(world_size=1)):
        return module._rollout(batch)


def _policy_logprobs(module, rollout) -> torch.Tensor:
    with torch.no_grad():
        return module.completion_logprobs(rollout)


def _kl_recorder():
    """A Lightning callback recording the logged `kl` of every training step (before that step's update)."""
    import lightning as L

    class KlPerStep(L.Callback):
        def __init__(self):
            self.kl: list[float] = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.kl.append(float(trainer.callback_metrics["kl"]))

    return KlPerStep()


def _fit(module, tmp_path, data_dir, max_steps: int, ckpt_path=None):
    import lightning as L

    from datamodules.mcq import McqDataModule

    dm = McqDataModule(train_manifest=str(Path(data_dir) / "synth" / "mcq.jsonl"), target="none", batch_size=2,
                       num_frames=2, frame_size=56, max_seconds=2.0)
    module.reward_funcs, module.reward_weights = [_distinct_token_reward], [1.0]
    kl = _kl_recorder()
    trainer = L.Trainer(max_steps=max_steps, accelerator="cpu", logger=False, default_root_dir=tmp_path,
                        limit_val_batches=0, enable_progress_bar=False, enable_model_summary=False, callbacks=[kl])
    trainer.fit(module, dm, ckpt_path=ckpt_path)
    return kl.kl


@pytest.fixture(scope="module")
def sft_adapter(tmp_path_factory):
    from sft_adapter import make_sft_adapter

    return make_sft_adapter(tmp_path_factory.mktemp("sft") / "adapter-last")


def test_reference_start_is_the_frozen_sft_adapter(tmp_path, data_dir, tiny_batch, sft_adapter, caplog):
    """From a trained SFT adapter: KL is exactly 0 before the first update, the reference never moves."""
    import logging

    from safetensors import safe_open

    from avcot.model import load_adapter, load_thinker
    from lit_modules.grpo import GRPOModule

    batch, _, _ = tiny_batch
    module = GRPOModule(base="tiny", adapter=str(sft_adapter), group_size=3, max_new_tokens=6, lr=5e-2)
    with caplog.at_level(logging.INFO):
        module.configure_model()
    assert f"SFT adapter '{sft_adapter}'" in caplog.text and "KL reference: the SFT adapter" in caplog.text
    rollout = _rollout_of(module, batch)
    ref_before = module.reference_logprobs(rollout)
    sft_only = GRPOModule(base="tiny", group_size=3, max_new_tokens=6)
    sft_only.model = load_adapter(load_thinker("tiny"), str(sft_adapter)).eval()
    assert torch.equal(ref_before, _policy_logprobs(sft_only, rollout))  # the reference is the SFT policy
    with torch.no_grad(), sft_only.model.disable_adapter():
        base = sft_only.completion_logprobs(rollout)
    assert (ref_before - base).abs().max() > 1e-2  # ... which is not the base

    kl = _fit(module, tmp_path, data_dir, max_steps=2)
    assert kl[0] == 0.0  # reference = start: before any update the policy is the reference, bit for bit
    assert kl[-1] > 0  # the updates moved the policy away from it
    assert torch.equal(module.reference_logprobs(rollout), ref_before)  # and the reference did not move
    assert not torch.equal(_policy_logprobs(module, rollout), ref_before)
    trainable = [n for n, p in module.model.named_parameters() if p.requires_grad]
    assert trainable and not any(".reference." in n for n in trainable)
    (ckpt,) = Path(tmp_path).rglob("*.ckpt")
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    assert state and all(".default." in k for k in state)  # the frozen copy is not checkpointed
    (saved,) = Path(tmp_path).rglob("adapter-last/adapter_model.safetensors")
    with safe_open(str(saved), "pt") as f:
        assert not any("reference" in k for k in f.keys())


def test_resume_rebuilds_the_reference_from_the_adapter(tmp_path, data_dir, tiny_batch, sft_adapter):
    from lit_modules.grpo import GRPOModule

    batch, _, _ = tiny_batch
    first = GRPOModule(base="tiny", adapter=str(sft_adapter), group_size=3, max_new_tokens=6, lr=5e-2)
    _fit(first, tmp_path, data_dir, max_steps=2)
    (ckpt,) = Path(tmp_path).rglob("*.ckpt")
    resumed = GRPOModule(base="tiny", adapter=str(sft_adapter), group_size=3, max_new_tokens=6, lr=5e-2)
    kl = _fit(resumed, tmp_path / "resumed", data_dir, max_steps=3, ckpt_path=str(ckpt))
    assert len(kl) == 1 and kl[0] > 0  # step 3 starts from the trained policy, not from the reference
    rollout = _rollout_of(resumed, batch)
    assert torch.equal(resumed.reference_logprobs(rollout), first.reference_logprobs(rollout))


def test_reference_base_keeps_the_adapter_disabled_model(tmp_path, data_dir, tiny_batch, sft_adapter):
    from avcot.model import load_thinker
    from lit_modules.grpo import GRPOModule

    batch, _, _ = tiny_batch
    module = GRPOModule(base="tiny", adapter=str(sft_adapter), group_size=3, max_new_tokens=6, lr=5e-2,
                        reference="base")
    module.configure_model()
    assert "reference" not in module.model.peft_config
    rollout = _rollout_of(module, batch)
    plain = GRPOModule(base="tiny", group_size=3, max_new_tokens=6)
    plain.model = load_thinker("tiny").eval()
    assert torch.allclose(module.reference_logprobs(rollout), _policy_logprobs(plain, rollout), atol=1e-6)
    kl = _fit(module, tmp_path, data_dir, max_steps=1)
    assert kl[0] > 0  # the SFT policy is already away from the base


def test_reference_start_on_an_nf4_base(tiny_batch, sft_adapter):
    """QLoRA: the frozen reference copy sits on the same 4-bit layers; moving the policy leaves it in place."""
    from lit_modules.grpo import GRPOModule

    batch, _, _ = tiny_batch
    module = GRPOModule(base="tiny", adapter=str(sft_adapter), quantization="nf4", group_size=2, max_new_tokens=4)
    module.configure_model()
    rollout = _rollout_of(module, batch)
    module.model.eval()
    ref = module.reference_logprobs(rollout)
    assert torch.equal(ref, _policy_logprobs(module, rollout))
    with torch.no_grad():
        for p in module.model.parameters():
            if p.requires_grad:
                p.add_(0.1)  # what an optimizer step does to the trainable adapter only
    assert torch.equal(module.reference_logprobs(rollout), ref)
    assert not torch.equal(_policy_logprobs(module, rollout), ref)


def test_active_adapter_routes_without_touching_requires_grad(sft_adapter):
    from avcot.model import load_adapter, load_thinker
    from avcot.reference import active_adapter, add_reference_adapter

    model = add_reference_adapter(load_adapter(load_thinker("tiny"), str(sft_adapter), trainable=True),
                                  str(sft_adapter))
    grads = {n: p.requires_grad for n, p in model.named_parameters()}
    with active_adapter(model, "reference"):
        assert {n: p.requires_grad for n, p in model.named_parameters()} == grads
    assert {n: p.requires_grad for n, p in model.named_parameters()} == grads
    with pytest.raises(ValueError, match="no adapter layer"):
        with active_adapter(model, "nope"):
            pass
    with pytest.raises(ValueError, match="already has"):
        add_reference_adapter(model, str(sft_adapter))
