"""The one rollout engine as predict, eval and the demo call it (`generate_ids`/`generate_texts`), its records,
and the library boundary (avcot never imports the Lightning wiring)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from avcot.chat import model_inputs
from avcot.model import LoraSettings, apply_lora, load_thinker
from avcot.rollout import (
    RolloutSettings,
    completion_logits,
    completion_mask,
    generate_ids,
    generate_texts,
    sample,
    select_prompts,
)
from helpers import tiny_batch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def policy():
    model = apply_lora(load_thinker(seed=3), LoraSettings(dropout=0.0)).eval()
    with torch.no_grad():  # a trained-looking adapter (LoRA B starts at zero)
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.3, generator=torch.Generator().manual_seed(len(name)))
    return model


def _hf(model, batch, **kw) -> torch.Tensor:
    with torch.no_grad():
        out = model.generate(**model_inputs(batch, with_labels=False), do_sample=False, **kw)
    return out[:, batch["input_ids"].shape[1]:]


def test_generate_ids_equals_hf_generate_with_and_without_explicit_eos(tiny_processor, policy):
    tok = tiny_processor.tokenizer
    batch = tiny_batch(tiny_processor, side="left", with_target=False)
    free = generate_ids(policy, batch, max_new_tokens=6, eos_token_id=(), pad_token_id=tok.pad_token_id)
    assert free.shape == (2, 6)  # no EOS at all: every row decodes max_new_tokens
    eos = int(free[1, 1])  # row 1 ends at its second token; row 0 goes on
    ours = generate_ids(policy, batch, max_new_tokens=6, eos_token_id=eos, pad_token_id=tok.pad_token_id)
    assert ours.tolist() == _hf(policy, batch, max_new_tokens=6, eos_token_id=eos,
                                pad_token_id=tok.pad_token_id).tolist()
    assert ours[1, 2:].eq(tok.pad_token_id).all()
    # eos/pad left out: both come from the model's generation config, as in HF generate
    assert generate_ids(policy, batch, max_new_tokens=6).tolist() == _hf(policy, batch, max_new_tokens=6).tolist()
    static = generate_ids(policy, batch, max_new_tokens=6, eos_token_id=eos, pad_token_id=tok.pad_token_id,
                          static=True)
    assert static[:, : ours.shape[1]].tolist() == ours.tolist()


def test_streamer_sees_the_same_text(tiny_processor, policy):
    from transformers import TextStreamer

    class Collect(TextStreamer):
        def __init__(self, tokenizer):
            super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
            self.text, self.ended = "", False

        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            self.text += text
            self.ended = self.ended or stream_end

    batch = tiny_batch(tiny_processor, targets=("好",), seconds=(1.0,), side="left", with_target=False)
    streamer = Collect(tiny_processor.tokenizer)
    generate_ids(policy, batch, max_new_tokens=8, streamer=streamer)
    assert streamer.ended and streamer.text
    assert streamer.text == generate_texts(policy, tiny_processor, batch, max_new_tokens=8)[0]


def test_a_sub_rollout_scores_like_its_rows_of_the_whole(tiny_processor, policy):
    """select_prompts drops the left padding only the other prompt needed; the logits do not change."""
    tok = tiny_processor.tokenizer
    batch = tiny_batch(tiny_processor, side="left", with_target=False)
    settings = RolloutSettings(max_new_tokens=5, group_size=2, do_sample=True, eos_token_id=(), pad_token_id=0)
    rollout = sample(policy, batch, settings, generator=torch.Generator().manual_seed(0))
    short = select_prompts(rollout, slice(1, 2))  # the shorter, left-padded prompt
    pad_cols = int((batch["attention_mask"][1] == 0).sum())
    assert pad_cols > 0 and short.prefill.mask.shape[1] == batch["input_ids"].shape[1] - pad_cols
    assert short.prefill.mask.all() and short.prefill.input_ids.ne(tok.pad_token_id).all()
    with torch.no_grad():
        whole, part = completion_logits(policy, rollout), completion_logits(policy, short)
    torch.testing.assert_close(part, whole[2:4], rtol=1e-4, atol=1e-5)


def test_completion_mask_with_several_eos_ids_and_none():
    ids = torch.tensor([[5, 7, 0], [9, 5, 7], [1, 2, 3]])
    assert completion_mask(ids, (7, 9)).tolist() == [[1, 1, 0], [1, 0, 0], [1, 1, 1]]
    assert completion_mask(ids, None).tolist() == [[1, 1, 1]] * 3


@pytest.mark.parametrize("bad,match", [
    (dict(max_new_tokens=0), "max_new_tokens"),
    (dict(group_size=0), "group_size"),
    (dict(do_sample=True, temperature=0.0), "temperature > 0"),
    (dict(do_sample=True, top_p=0.0), "top_p"),
])
def test_settings_refuse_what_cannot_sample(bad, match):
    with pytest.raises(ValueError, match=match):
        RolloutSettings(**bad)


def test_the_library_does_not_import_the_lightning_wiring():
    code = ("import sys, avcot.rollout, avcot.generate, avcot.thinker.forward, avcot.thinker.label_loss, "
            "avcot.thinker.checkpointing, avcot.thinker.encoder_cache\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('lit_modules', 'datamodules'))\n"
            "assert not bad, bad\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
