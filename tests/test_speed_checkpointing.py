"""LM-only activation checkpointing: same loss and LoRA grads, layers recomputed, towers untouched."""
from __future__ import annotations

import pytest
import torch

from avcot.model import LoraSettings, apply_lora, load_thinker
from avcot.thinker.checkpointing import checkpointed_layer_names, disable_lm_checkpointing, enable_lm_checkpointing
from avcot.thinker.label_loss import sft_loss
from helpers import tiny_batch


def _step(model, batch):
    model.zero_grad(set_to_none=True)
    loss = sft_loss(model, batch)
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def test_checkpointing_recomputes_lm_layers_only_with_equal_grads(tiny_processor):
    model = apply_lora(load_thinker(seed=4), LoraSettings(dropout=0.0))
    model.train()
    batch = tiny_batch(tiny_processor)
    layer = model.get_base_model().model.language_model.layers[0]
    calls = []
    hook = layer.self_attn.register_forward_hook(lambda *a: calls.append(1))

    ref_loss, ref_grads = _step(model, batch)
    assert len(calls) == 1  # one forward, no recompute
    assert enable_lm_checkpointing(model) == 2
    names = checkpointed_layer_names(model)
    assert len(names) == 2 and all(".language_model.layers." in n for n in names)
    assert not any("audio_tower" in n or "visual" in n for n in names)
    calls.clear()
    loss, grads = _step(model, batch)
    assert len(calls) == 2  # forward + recompute in backward: checkpointing is on
    hook.remove()
    assert loss == pytest.approx(ref_loss, rel=1e-6)
    for name, g in grads.items():
        torch.testing.assert_close(g, ref_grads[name], rtol=1e-5, atol=1e-8, msg=name)
    towers = [p for n, p in model.named_parameters() if "audio_tower" in n or "visual" in n]
    assert towers and all(p.grad is None and not p.requires_grad for p in towers)
    disable_lm_checkpointing(model)
    assert checkpointed_layer_names(model) == []
