"""The embedded tiny thinker, LoRA placement, quantization and loading the user's way."""
from __future__ import annotations

import json

import pytest
import torch

from avcot.model import (LoraSettings, apply_lora, build_tiny_thinker, count_parameters, load_adapter,
                         load_thinker)


def _ids(n=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(20, 5000, (2, n), generator=g)


def test_tiny_has_real_towers_and_small_size():
    model = load_thinker("tiny")
    assert model.model.audio_tower is not None and model.model.visual is not None
    _, total = count_parameters(model)
    assert 1e5 < total < 5e6
    assert not any(p.requires_grad for p in model.model.audio_tower.parameters())
    assert not any(p.requires_grad for p in model.model.visual.parameters())


def test_tiny_is_seeded():
    a, b, c = build_tiny_thinker(seed=3), build_tiny_thinker(seed=3), build_tiny_thinker(seed=4)
    wa, wb, wc = (m.lm_head.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


@pytest.mark.parametrize("target,mlp", [("attention", False), ("all-linear", True)])
def test_lora_targets_language_model_only(target, mlp):
    model = apply_lora(load_thinker("tiny"), LoraSettings(target=target))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n and "language_model" in n for n in trainable)
    assert not any("audio_tower" in n or "visual" in n for n in trainable)
    assert any("mlp" in n for n in trainable) == mlp
    cfg = model.peft_config["default"]
    assert (cfg.r, cfg.lora_alpha, cfg.lora_dropout) == (8, 32, 0.05)


def test_save_pretrained_loads_back_the_users_way(tmp_path):
    model = load_thinker("tiny", seed=1)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "qwen2_5_omni_thinker"
    loaded = load_thinker(str(tmp_path))
    ids = _ids()
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, loaded(input_ids=ids).logits)
    assert not any(p.requires_grad for p in loaded.model.visual.parameters())


def test_full_omni_checkpoint_keeps_thinker_weights(tmp_path):
    """A Qwen2.5-Omni (thinker + talker) directory loads as a thinker with the thinker's weights."""
    from safetensors.torch import load_file, save_file

    thinker = load_thinker("tiny", seed=2)
    thinker.save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    save_file({f"thinker.{k}": v.contiguous() for k, v in state.items()}, tmp_path / "model.safetensors",
              metadata={"format": "pt"})
    cfg = json.loads((tmp_path / "config.json").read_text())
    full = {"model_type": "qwen2_5_omni", "architectures": ["Qwen2_5OmniModel"], "thinker_config": cfg,
            "enable_audio_output": False}
    (tmp_path / "config.json").write_text(json.dumps(full))
    loaded = load_thinker(str(tmp_path))
    ids = _ids()
    with torch.no_grad():
        assert torch.allclose(thinker(input_ids=ids).logits, loaded(input_ids=ids).logits)


def test_bad_checkpoint_path_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="cannot load a Qwen2.5-Omni checkpoint"):
        load_thinker(str(tmp_path / "nope"))


def test_adapter_dir_is_validated(tmp_path):
    model = load_thinker("tiny")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_adapter(model, str(tmp_path / "missing"))
    (tmp_path / "adapter_config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="adapter_model.safetensors"):
        load_adapter(model, str(tmp_path))


def test_adapter_roundtrip_gives_identical_logits(tmp_path):
    model = apply_lora(load_thinker("tiny"))
    with torch.no_grad():  # make the adapter non-trivial (B starts at zero)
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "adapter_model.safetensors").exists()
    reloaded = load_adapter(load_thinker("tiny"), str(tmp_path))
    model.eval(), reloaded.eval()
    ids = _ids()
    with torch.no_grad():
        a, b = model(input_ids=ids).logits, reloaded(input_ids=ids).logits
        base = load_thinker("tiny")(input_ids=ids).logits
    assert torch.allclose(a, b, atol=1e-6)
    assert not torch.allclose(a, base, atol=1e-3)  # the adapter really changes the output


def test_qlora_nf4_step_on_cpu():
    import bitsandbytes as bnb

    model = apply_lora(load_thinker("tiny", quantization="nf4"))
    q_proj = model.base_model.model.model.language_model.layers[0].self_attn.q_proj.base_layer
    assert isinstance(q_proj, bnb.nn.Linear4bit)
    params = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]
    opt = torch.optim.AdamW(params, lr=1e-2)
    ids = _ids()
    for _ in range(2):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step(), opt.zero_grad()
    assert torch.isfinite(loss)
    assert any(not torch.equal(a, p) for a, p in zip(before, params))


def test_unknown_dtype_rejected():
    with pytest.raises(ValueError, match="dtype must be one of"):
        load_thinker("tiny", dtype="float8")
