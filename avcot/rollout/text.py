"""Text generation from collated batches: the entries that SFT predict, eval and the demo call."""
from __future__ import annotations

import torch

from avcot.rollout.engine import sample
from avcot.rollout.records import RolloutSettings, eos_tuple
from avcot.thinker.forward import unwrap_thinker


@torch.no_grad()
def generate_ids(model, batch: dict, *, max_new_tokens: int = 256, do_sample: bool = False,
                 temperature: float = 1.0, top_p: float = 1.0, num_return_sequences: int = 1,
                 eos_token_id: int | tuple[int, ...] | None = None, pad_token_id: int | None = None,
                 streamer=None, static: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
    """New token ids [B * num_return_sequences, N] for a left-padded batch (prompt stripped).

    Greedy tokens equal HF `generate`'s; sampling is temperature + top-p (no top-k). eos/pad default to the
    model's generation config, as in `generate`. `streamer`: a transformers streamer (one prompt).
    """
    config = unwrap_thinker(model).generation_config
    eos = eos_tuple(config.eos_token_id if eos_token_id is None else eos_token_id)
    if pad_token_id is None:
        pad_token_id = config.pad_token_id if config.pad_token_id is not None else (eos[0] if eos else 0)
    settings = RolloutSettings(max_new_tokens=max_new_tokens, group_size=num_return_sequences, do_sample=do_sample,
                               temperature=temperature, top_p=top_p, eos_token_id=eos or None,
                               pad_token_id=pad_token_id, static=static)
    return sample(model, batch, settings, generator=generator, streamer=streamer).completion_ids


def decode(processor, ids: torch.Tensor) -> list[str]:
    """Decode generated ids, dropping special tokens (pads, <|im_end|>)."""
    return processor.tokenizer.batch_decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)


def generate_texts(model, processor, batch: dict, **kwargs) -> list[str]:
    """Generate and decode in one call; kwargs as `generate_ids` (EOS defaults to <|im_end|>)."""
    tok = processor.tokenizer
    kwargs.setdefault("eos_token_id", tok.convert_tokens_to_ids("<|im_end|>"))
    kwargs.setdefault("pad_token_id", tok.pad_token_id)
    return decode(processor, generate_ids(model, batch, **kwargs))
