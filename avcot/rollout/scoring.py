"""Logits of sampled completions under the current weights: GRPO's policy, old-policy and reference forwards.

The forward over [prompt + completion] takes the prompt's merged embeddings kept by the prefill and explicit
M-RoPE positions, so the towers run once per prompt per step. The embeddings are constants for a LoRA policy:
LoRA sits on the language model only. The call goes through the model's own forward (not its parts), so under
FSDP2 the root unit gathers and reduces as in any training step. An `lm_head` pre-hook keeps only the hidden
states that predict completion tokens: no [B*G, P+N, vocab] logits are materialised.
"""
from __future__ import annotations

import contextlib

import torch

from avcot.rollout.records import Rollout
from avcot.thinker.forward import unwrap_thinker


@contextlib.contextmanager
def logits_for_last(model, n: int):
    """Inside, the thinker's lm_head only sees the hidden states at positions [-n-1, -1) (the completion's)."""

    def keep(module, args):
        (hidden,) = args  # [R, P+N, H]
        return (hidden[:, -n - 1:-1],)  # [R, N, H]

    handle = unwrap_thinker(model).lm_head.register_forward_pre_hook(keep)
    try:
        yield
    finally:
        handle.remove()


def sequence_inputs(rollout: Rollout) -> dict:
    """Keyword inputs for a forward over [prompt + completion] of all B*G rows, media already merged."""
    g = rollout.group_size
    p = rollout.prefill
    n = rollout.completion_ids.shape[1]
    start = p.next_position.repeat_interleave(g, dim=0)  # [R]
    steps = torch.arange(n, device=start.device)
    comp_pos = (start[:, None] + steps[None]).unsqueeze(0).expand(3, -1, -1)  # [3, R, N]
    return {
        "inputs_embeds": torch.cat([p.embeds.repeat_interleave(g, dim=0), rollout.completion_embeds], dim=1),
        "attention_mask": torch.cat([p.mask.repeat_interleave(g, dim=0), rollout.completion_mask], dim=1),
        "position_ids": torch.cat([p.positions.repeat_interleave(g, dim=1), comp_pos], dim=2),  # [3, R, P+N]
    }


def completion_logits(model, rollout: Rollout, *, temperature: float = 1.0) -> torch.Tensor:
    """Logits [B*G, N, V] that predicted each completion token, divided by the sampling temperature."""
    n = rollout.completion_ids.shape[1]
    with logits_for_last(model, n):
        out = model(**sequence_inputs(rollout), use_cache=False)
    logits = out.logits.float()  # [R, N, V]
    return logits / temperature if temperature > 0 else logits
