"""Chat encoding: assistant-only labels, the audio-in-video layout, collation, generation."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import tiny_prompt

from avcot.chat import collate, encode_example, messages_for, model_inputs, video_kwargs
from avcot.generate import generate_texts


def test_labels_only_on_the_assistant_turn(tiny_processor):
    target = "实验室里在做试验"
    enc = encode_example(tiny_processor, tiny_prompt(), target)
    tok = tiny_processor.tokenizer
    for i, (tid, lab) in enumerate(zip(enc.input_ids.tolist(), enc.labels.tolist())):
        if i < enc.prompt_len:
            assert lab == -100, f"prompt token {i} is labelled"
        else:
            assert lab == tid, f"target token {i} not labelled with itself"
    kept = enc.labels[enc.labels != -100]
    assert kept[-1].item() == tok.convert_tokens_to_ids("<|im_end|>")
    assert tok.decode(kept[:-1]) == target
    prompt_text = tok.decode(enc.input_ids[: enc.prompt_len])
    assert prompt_text.endswith("<|im_start|>assistant\n")


def test_audio_in_video_layout_differs_and_travels(tiny_processor):
    plain = encode_example(tiny_processor, tiny_prompt(), "好", use_audio_in_video=False)
    inter = encode_example(tiny_processor, tiny_prompt(), "好", use_audio_in_video=True)
    tok = tiny_processor.tokenizer
    audio_id, video_id = tok.audio_token_id, tok.video_token_id
    # Same number of audio and video placeholders, laid out differently.
    for ids in (plain.input_ids, inter.input_ids):
        assert (ids == audio_id).sum() > 0 and (ids == video_id).sum() == 32
    assert (plain.input_ids == audio_id).sum() == (inter.input_ids == audio_id).sum()
    assert not torch.equal(plain.input_ids, inter.input_ids)
    # In the interleaved layout audio tokens sit between the video's vision_bos/eos markers.
    bos, eos = tok.convert_tokens_to_ids(["<|vision_bos|>", "<|vision_eos|>"])
    ids = inter.input_ids.tolist()
    inside = ids[ids.index(bos): ids.index(eos)]
    assert audio_id in inside
    ids = plain.input_ids.tolist()
    assert audio_id not in ids[ids.index(bos): ids.index(eos)]
    assert collate([inter], 0)["use_audio_in_video"] is True
    assert collate([plain], 0)["use_audio_in_video"] is False
    with pytest.raises(ValueError, match="mix use_audio_in_video"):
        collate([plain, inter], 0)


def test_interleaved_batch_runs_through_the_model_with_the_flag():
    from avcot.model import load_thinker
    from avcot.processor import load_processor

    proc, model = load_processor(), load_thinker()
    inter = collate([encode_example(proc, tiny_prompt(), "好", use_audio_in_video=True)], proc.tokenizer.pad_token_id)
    inputs = model_inputs(inter)
    assert inputs["use_audio_in_video"] is True
    with torch.no_grad():
        good = model(**inputs).logits
        inputs["use_audio_in_video"] = False  # the positions differ: the flag matters
        bad = model(**inputs).logits
    assert not torch.allclose(good, bad)


def test_audio_in_video_without_video_falls_back(tiny_processor):
    enc = encode_example(tiny_processor, tiny_prompt(video=False), "好", use_audio_in_video=True)
    assert enc.use_audio_in_video is False
    assert [p["type"] for p in messages_for(tiny_prompt(video=False))[1]["content"]] == ["audio", "text"]


def test_batched_logits_equal_single_examples(tiny_processor):
    from avcot.model import load_thinker

    model = load_thinker()
    exs = [encode_example(tiny_processor, tiny_prompt(seed=0, frames=4, seconds=2.0), "实验"),
           encode_example(tiny_processor, tiny_prompt(seed=1, frames=6, seconds=3.1), "差拨来了")]
    batch = collate(exs, tiny_processor.tokenizer.pad_token_id)
    assert batch["input_features"].shape[-1] == int(batch["feature_attention_mask"].sum(-1).max())
    with torch.no_grad():
        together = model(**model_inputs(batch)).logits
        for i, e in enumerate(exs):
            alone = model(**model_inputs(collate([e], 0))).logits[0]
            assert torch.allclose(alone, together[i, : len(e.input_ids)], atol=1e-5)


def test_left_padded_generation_matches_single(tiny_processor):
    from avcot.model import load_thinker

    model = load_thinker()
    pad = tiny_processor.tokenizer.pad_token_id
    exs = [encode_example(tiny_processor, tiny_prompt(seed=0, frames=4, seconds=2.0)),
           encode_example(tiny_processor, tiny_prompt(seed=1, frames=6, seconds=3.1))]
    both = generate_texts(model, tiny_processor, collate(exs, pad, padding_side="left"), max_new_tokens=6)
    single = [generate_texts(model, tiny_processor, collate([e], pad, padding_side="left"), max_new_tokens=6)[0]
              for e in exs]
    assert both == single and all(both)


def test_video_kwargs_reject_bad_sizes():
    with pytest.raises(ValueError, match="multiple of 28"):
        video_kwargs(np.zeros((4, 100, 112, 3), np.uint8), 2.0)
    with pytest.raises(ValueError, match="even"):
        video_kwargs(np.zeros((3, 112, 112, 3), np.uint8), 2.0)


def test_collate_empty_is_an_error():
    with pytest.raises(ValueError, match="empty"):
        collate([], 0)
