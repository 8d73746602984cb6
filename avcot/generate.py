"""Text generation from collated batches (predict, eval, demo, GRPO rollouts share it)."""
from __future__ import annotations

import torch

from avcot.chat import model_inputs


@torch.no_grad()
def generate_ids(model, batch: dict, *, max_new_tokens: int = 256, do_sample: bool = False,
                 temperature: float = 1.0, top_p: float = 1.0, num_return_sequences: int = 1,
                 eos_token_id: int | None = None, pad_token_id: int | None = None, streamer=None) -> torch.Tensor:
    """New token ids [B * num_return_sequences, N] for a left-padded batch (prompt stripped)."""
    inputs = model_inputs(batch, with_labels=False)
    kwargs = dict(max_new_tokens=max_new_tokens, do_sample=do_sample, num_return_sequences=num_return_sequences,
                  streamer=streamer)
    if do_sample:
        kwargs.update(temperature=temperature, top_p=top_p)
    if eos_token_id is not None:
        kwargs["eos_token_id"] = eos_token_id
    if pad_token_id is not None:
        kwargs["pad_token_id"] = pad_token_id
    out = model.generate(**inputs, **kwargs)  # [B*R, P+N]
    return out[:, batch["input_ids"].shape[1]:]  # [B*R, N]


def decode(processor, ids: torch.Tensor) -> list[str]:
    """Decode generated ids, dropping special tokens (pads, <|im_end|>)."""
    return processor.tokenizer.batch_decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)


def generate_texts(model, processor, batch: dict, **kwargs) -> list[str]:
    """Generate and decode in one call; kwargs as `generate_ids`."""
    tok = processor.tokenizer
    kwargs.setdefault("eos_token_id", tok.convert_tokens_to_ids("<|im_end|>"))
    kwargs.setdefault("pad_token_id", tok.pad_token_id)
    return decode(processor, generate_ids(model, batch, **kwargs))
