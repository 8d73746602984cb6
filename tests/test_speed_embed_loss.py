"""Piecewise forward + label-only loss equal the stock forward's loss and LoRA gradients."""
from __future__ import annotations

import math

import pytest
import torch

from avcot.chat import model_inputs
from avcot.model import LoraSettings, apply_lora, load_thinker
from avcot.thinker.forward import MediaFeatures, compute_media_features, inputs_embeds_for, split_media
from avcot.thinker.label_loss import label_only_loss, label_token_logprobs, sft_loss
from helpers import tiny_batch


@pytest.fixture(scope="module")
def lora_model():
    return apply_lora(load_thinker(seed=1), LoraSettings(dropout=0.0))


def _lora_grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("use_audio_in_video", [False, True])
def test_sft_loss_and_lora_grads_equal_the_hf_forward(tiny_processor, lora_model, use_audio_in_video):
    batch = tiny_batch(tiny_processor, use_audio_in_video=use_audio_in_video)
    assert batch["attention_mask"].sum(1).tolist()[0] != batch["attention_mask"].sum(1).tolist()[1]  # padded
    lora_model.zero_grad(set_to_none=True)
    ref = lora_model(**model_inputs(batch)).loss
    ref.backward()
    ref_grads = _lora_grads(lora_model)
    lora_model.zero_grad(set_to_none=True)
    ours = sft_loss(lora_model, batch)
    ours.backward()
    assert ours.item() == pytest.approx(ref.item(), rel=1e-5)
    grads = _lora_grads(lora_model)
    assert grads.keys() == ref_grads.keys() and len(grads) == 16  # 2 layers x q,k,v,o x A,B
    for name, g in grads.items():
        torch.testing.assert_close(g, ref_grads[name], rtol=1e-4, atol=1e-7, msg=name)
    assert any(g.abs().sum() > 0 for g in grads.values())


def test_label_only_loss_hand_computed():
    head = torch.nn.Linear(3, 3, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.eye(3))
    # hidden t predicts labels t+1. Position 0 -> label 2 with logits (0,0,0): ln 3.
    # Position 1 -> label 0 with logits (ln2, 0, 0): -log(2/4) = ln 2. Position 2 is unlabelled (huge logits).
    hidden = torch.tensor([[[0.0, 0.0, 0.0], [math.log(2), 0.0, 0.0], [50.0, -50.0, 0.0]]])  # [1, 3, 3]
    labels = torch.tensor([[-100, 2, 0]])
    assert label_only_loss(head, hidden, labels).item() == pytest.approx((math.log(3) + math.log(2)) / 2)
    logp = label_token_logprobs(head, hidden, labels)  # [1, 2]
    torch.testing.assert_close(logp, torch.tensor([[-math.log(3), -math.log(2)]]))
    with pytest.raises(ValueError, match="no labelled tokens"):
        label_only_loss(head, hidden, torch.full_like(labels, -100))


def test_label_token_logprobs_match_full_logits(tiny_processor, lora_model):
    batch = tiny_batch(tiny_processor)
    with torch.no_grad():
        logits = lora_model(**model_inputs(batch, with_labels=False)).logits.float()  # [B, L, V]
        from avcot.thinker.forward import lm_hidden_states

        hidden = lm_hidden_states(lora_model, batch)
        ours = label_token_logprobs(lora_model.get_base_model().lm_head, hidden, batch["labels"], temperature=0.7)
    nxt = batch["labels"][:, 1:]
    mask = nxt != -100
    full = torch.log_softmax(logits[:, :-1] / 0.7, -1).gather(-1, nxt.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(ours[mask], full[mask], rtol=1e-5, atol=1e-5)
    assert (ours[~mask] == 0).all()


def test_feature_count_mismatch_is_a_clear_error(tiny_processor, lora_model):
    batch = tiny_batch(tiny_processor)
    thinker = lora_model.get_base_model()
    feats = compute_media_features(thinker, batch)
    assert len(feats.audio) == 2 and len(feats.video) == 2 and feats.video[0].shape[0] == 32
    short = MediaFeatures(audio=feats.audio, video=(feats.video[0][:-1], feats.video[1]))
    with pytest.raises(ValueError, match="video: 63 feature rows for 64 placeholder tokens"):
        inputs_embeds_for(thinker, batch["input_ids"], short)
    with pytest.raises(ValueError, match="audio placeholder tokens but no audio features"):
        inputs_embeds_for(thinker, batch["input_ids"], MediaFeatures(video=feats.video))
    items = split_media(batch)
    assert [it.tensor.shape[-1] for it in items["audio"]] == batch["feature_attention_mask"].sum(1).tolist()
