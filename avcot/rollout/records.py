"""The rollout's records: how to sample, what the prompts looked like to the language model, what was sampled."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class RolloutSettings:
    """How to sample completions."""

    max_new_tokens: int = 256
    """Tokens decoded per completion (rows that hit EOS are padded after it)."""
    group_size: int = 1
    """Completions per prompt (GRPO's G); rows come out prompt-major: [p0 g0, p0 g1, ..., p1 g0, ...]."""
    do_sample: bool = False
    """False = greedy."""
    temperature: float = 1.0
    """Sampling temperature (only with do_sample)."""
    top_p: float = 1.0
    """Nucleus sampling mass (only with do_sample); 1 keeps every token. There is no top-k."""
    eos_token_id: int | tuple[int, ...] | None = None
    """Stop a row after this token (or any of these); None decodes exactly max_new_tokens."""
    pad_token_id: int = 0
    """Written after EOS."""
    static: bool = False
    """Decode with a static KV cache and one fixed-shape step (compiled per `compile`) instead of a cache
    that grows by one token per step. Same tokens; the fixed shapes are what CUDA graphs need."""
    compile: bool | None = None
    """Static decoding only: compile the decode step (CUDA graphs); None = only on CUDA and not FSDP2-sharded."""
    cache_bucket: int = 256
    """Static decoding only: the cache length (prompt + new tokens) is rounded up to a multiple of this, so
    prompts of different lengths reuse one compiled graph instead of recompiling per length."""

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1 or self.group_size < 1 or self.cache_bucket < 1:
            raise ValueError("max_new_tokens, group_size and cache_bucket must be >= 1, got "
                             f"{self.max_new_tokens}, {self.group_size}, {self.cache_bucket}")
        if self.do_sample and not (self.temperature > 0 and 0 < self.top_p <= 1):
            raise ValueError(f"sampling needs temperature > 0 and 0 < top_p <= 1, got {self.temperature}, "
                             f"{self.top_p} (greedy: do_sample=False)")

    @property
    def eos_ids(self) -> tuple[int, ...]:
        """The EOS ids as a tuple (empty: no EOS)."""
        return eos_tuple(self.eos_token_id)


def eos_tuple(eos: int | tuple[int, ...] | list[int] | None) -> tuple[int, ...]:
    """One EOS id, several or none, as a tuple (HF configs hold either an int or a list)."""
    return () if eos is None else (int(eos),) if isinstance(eos, int) else tuple(int(e) for e in eos)


@dataclass(frozen=True)
class Prefill:
    """A left-padded batch of B prompts as the language model saw it, media merged in."""

    input_ids: torch.Tensor  # [B, P]
    mask: torch.Tensor  # [B, P] 1 on real tokens, 0 on left padding
    embeds: torch.Tensor  # [B, P, H] text embeddings with the media features scattered in
    positions: torch.Tensor  # [3, B, P] M-RoPE positions
    next_position: torch.Tensor  # [B] M-RoPE position of the first generated token


@dataclass(frozen=True)
class Rollout:
    """G sampled completions for each of B prompts (rows are prompt-major: prompt b owns rows b*G..b*G+G-1)."""

    prefill: Prefill
    group_size: int
    completion_ids: torch.Tensor  # [B*G, N], pad after the first eos
    completion_mask: torch.Tensor  # [B*G, N], 1 up to and including the first eos
    completion_embeds: torch.Tensor  # [B*G, N, H] token embeddings of completion_ids

    @property
    def num_tokens(self) -> int:
        """Generated tokens that count (eos included, padding excluded)."""
        return int(self.completion_mask.sum())


def completion_mask(ids: torch.Tensor, eos_token_id: int | tuple[int, ...] | None) -> torch.Tensor:
    """1 on every token up to and including the first eos of each row, 0 after it."""
    eos = torch.tensor(eos_tuple(eos_token_id), dtype=ids.dtype, device=ids.device)
    is_eos = torch.isin(ids, eos).long()  # [R, N]
    after = is_eos.cumsum(1) - is_eos  # eos tokens seen strictly before each position
    return (after == 0).long()  # [R, N]


def select_prompts(rollout: Rollout, prompts: slice) -> Rollout:
    """The sub-rollout of a contiguous range of prompts (with all G completions of each)."""
    g = rollout.group_size
    p = rollout.prefill
    rows = slice(prompts.start * g, prompts.stop * g)
    # Drop the left-padding columns these prompts share (padding for longer prompts elsewhere in the batch).
    first = int(p.mask[prompts].any(0).long().argmax())
    part = Prefill(p.input_ids[prompts, first:], p.mask[prompts, first:], p.embeds[prompts, first:],
                   p.positions[:, prompts, first:], p.next_position[prompts])
    return Rollout(part, g, rollout.completion_ids[rows], rollout.completion_mask[rows],
                   rollout.completion_embeds[rows])


def prompt_only(batch: dict, pad_token_id: int) -> dict:
    """A left-padded, prompt-only copy of a collated batch (drops SFT targets: label != -100); media kept.

    Lets GRPO consume the same batches as SFT (right-padded prompt + target) as well as generation batches.
    """
    ids, mask = batch["input_ids"], batch["attention_mask"]  # [B, L]
    labels = batch.get("labels")
    keep = mask.bool() if labels is None else mask.bool() & (labels == -100)  # [B, L]
    if labels is None and bool(mask[:, -1].all()):
        return batch  # already left-padded (or unpadded) prompts
    lengths = keep.sum(1)  # [B]
    width = int(lengths.max())
    new_ids = torch.full((ids.shape[0], width), pad_token_id, dtype=ids.dtype, device=ids.device)  # [B, P]
    new_mask = torch.zeros((ids.shape[0], width), dtype=mask.dtype, device=mask.device)  # [B, P]
    for i in range(ids.shape[0]):
        n = int(lengths[i])
        new_ids[i, width - n:] = ids[i][keep[i]]
        new_mask[i, width - n:] = 1
    out = {k: v for k, v in batch.items() if k != "labels"}
    out.update(input_ids=new_ids, attention_mask=new_mask)
    return out
