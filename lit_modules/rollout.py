"""GRPO rollouts with one multimodal prefill per prompt, shared by its G sampled completions.

`sample_group` runs the thinker once over a left-padded batch of B prompts (audio tower, vision tower
and the prompt prefill all run once), repeats the KV cache G times (`DynamicCache.batch_repeat_interleave`)
and decodes the B*G continuations with its own token-by-token sampling loop.

How the pieces that HF's `generate` hides are handled:
- M-RoPE positions. `get_rope_index` gives every prompt token a 3-row (time, height, width) position; a text
  token that follows the prompt sits at `max(prompt positions) + 1 + t` on all three rows. That is what HF's
  `_prepare_position_ids_for_generation` computes (`cumsum(mask) - 1 + rope_deltas`), written out directly so
  that no state is kept on the model (`model.rope_deltas`) between calls.
- Merged prompt embeddings. The language model's inputs (text embeddings with the audio/video features
  scattered in, and their positions) are read with a forward pre-hook on `language_model` during the prefill and
  the decode steps, not recomputed: the policy-update and reference forwards then take `inputs_embeds` and
  explicit `position_ids`, so the encoders run once per prompt per step. (transformers' `mm_encoder_outputs`
  would cover video and images but not audio: the audio tower re-runs whenever `input_features` is passed.)
  The embeddings are constants for the LoRA policy: LoRA sits on the attention projections only.
- Logits. A pre-hook on `lm_head` keeps only the hidden states that predict completion tokens, so a forward
  over [prompt + completion] never materialises [B*G, P+N, vocab] logits.
- Sampling matches HF's `generate(do_sample=True, top_k=0, top_p=1)` token for token for the same RNG state:
  one `torch.multinomial` over all B*G rows per step, finished rows keep sampling and are padded.
- Distributed: with `sync_ranks=True` the loop stops only when every rank is done (an all-reduce per step), so
  sharded (FSDP) forwards stay in lock-step across ranks.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from avcot.chat import model_inputs


@dataclass(frozen=True)
class Prefix:
    """The language-model inputs of a left-padded batch of B prompts, captured at prefill."""

    embeds: torch.Tensor  # [B, P, H] text embeddings with the media features scattered in
    mask: torch.Tensor  # [B, P] 1 on real tokens, 0 on left padding
    positions: torch.Tensor  # [3, B, P] M-RoPE positions
    next_position: torch.Tensor  # [B] position of the first generated token


@dataclass(frozen=True)
class Rollout:
    """G sampled completions for each of B prompts (rows are prompt-major: prompt b owns rows b*G..b*G+G-1)."""

    prefix: Prefix
    group_size: int
    completion_ids: torch.Tensor  # [B*G, N], pad after the first eos
    completion_mask: torch.Tensor  # [B*G, N], 1 up to and including the first eos
    completion_embeds: torch.Tensor  # [B*G, N, H] token embeddings of completion_ids

    @property
    def num_tokens(self) -> int:
        """Generated tokens that count (eos included, padding excluded)."""
        return int(self.completion_mask.sum())


def thinker_of(model):
    """The Qwen2.5-Omni thinker inside a PEFT wrapper (or the model itself)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not hasattr(inner, "model") or not hasattr(inner.model, "language_model"):
        raise TypeError(f"expected a Qwen2.5-Omni thinker (or a PEFT wrapper of one), got {type(model).__name__}")
    return inner


class _LmInputs:
    """Records the language model's keyword inputs while active (a read-only forward pre-hook)."""

    def __init__(self) -> None:
        self.embeds: list[torch.Tensor] = []
        self.positions: list[torch.Tensor | None] = []

    def __call__(self, module, args, kwargs):
        self.embeds.append(kwargs["inputs_embeds"].detach())
        self.positions.append(kwargs.get("position_ids"))


@contextlib.contextmanager
def _record_lm_inputs(model):
    record = _LmInputs()
    handle = thinker_of(model).model.language_model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        yield record
    finally:
        handle.remove()


@contextlib.contextmanager
def logits_for_last(model, n: int):
    """Inside, the thinker's lm_head only sees the hidden states at positions [-n-1, -1) (the completion's)."""

    def keep(module, args):
        (hidden,) = args  # [R, P+N, H]
        return (hidden[:, -n - 1:-1],)  # [R, N, H]

    handle = thinker_of(model).lm_head.register_forward_pre_hook(keep)
    try:
        yield
    finally:
        handle.remove()


def _next_position(positions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """First free M-RoPE position per row: max over the prompt's real tokens, plus one."""
    real = positions.masked_fill(mask[None] == 0, -1)  # [3, B, P]
    return real.amax(dim=(0, 2)) + 1  # [B]


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


@torch.no_grad()
def prefill(model, batch: dict):
    """Run the prompts once with their media; returns (Prefix, last-token logits [B, V], KV cache)."""
    if batch["attention_mask"][:, -1].min() == 0:
        raise ValueError("rollout batches must be LEFT-padded (collate(..., padding_side='left'))")
    inputs = model_inputs(batch, with_labels=False)
    with _record_lm_inputs(model) as rec:
        out = model(**inputs, use_cache=True)
    positions = rec.positions[0]
    if positions is None or positions.shape[0] != 3:
        raise RuntimeError("could not read the 3-row M-RoPE positions of the prefill")
    mask = batch["attention_mask"]
    prefix = Prefix(rec.embeds[0], mask, positions, _next_position(positions, mask))
    return prefix, out.logits[:, -1].float(), out.past_key_values


def _all_ranks_done(done: bool, device: torch.device) -> bool:
    import torch.distributed as dist

    flag = torch.tensor([0 if done else 1], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return int(flag) == 0


def _sample(logits: torch.Tensor, temperature: float, generator: torch.Generator | None) -> torch.Tensor:
    """One token per row; temperature 0 means greedy."""
    if temperature == 0:
        return logits.argmax(-1)  # [R]
    probs = torch.softmax(logits / temperature, dim=-1)  # [R, V]
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)  # [R]


@torch.no_grad()
def sample_group(model, batch: dict, *, group_size: int, max_new_tokens: int, eos_token_id: int,
                 pad_token_id: int, temperature: float = 1.0, generator: torch.Generator | None = None,
                 sync_ranks: bool = False) -> Rollout:
    """Sample `group_size` completions per prompt of a left-padded batch, prefilling each prompt once."""
    if group_size < 1 or max_new_tokens < 1:
        raise ValueError(f"group_size and max_new_tokens must be >= 1, got {group_size}, {max_new_tokens}")
    prefix, logits, cache = prefill(model, batch)
    cache.batch_repeat_interleave(group_size)
    logits = logits.repeat_interleave(group_size, dim=0)  # [R, V], R = B*G
    mask = prefix.mask.repeat_interleave(group_size, dim=0)  # [R, P]
    start = prefix.next_position.repeat_interleave(group_size, dim=0)  # [R]
    rows = logits.shape[0]
    finished = torch.zeros(rows, dtype=torch.bool, device=logits.device)
    tokens: list[torch.Tensor] = []
    embeds: list[torch.Tensor] = []
    for t in range(max_new_tokens):
        nxt = _sample(logits, temperature, generator)  # [R]
        nxt = torch.where(finished, torch.full_like(nxt, pad_token_id), nxt)
        tokens.append(nxt)
        finished = finished | (nxt == eos_token_id)
        # The sampled token is always fed back once: that forward also yields its input embedding, read
        # through the model's own forward so sharded (FSDP) parameters are gathered the usual way.
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)  # [R, P+t+1]
        pos = (start + t).view(1, rows, 1).expand(3, rows, 1)  # [3, R, 1]
        with _record_lm_inputs(model) as rec:
            out = model(input_ids=nxt[:, None], attention_mask=mask, position_ids=pos,
                        past_key_values=cache, use_cache=True)
        embeds.append(rec.embeds[0])  # [R, 1, H]
        logits = out.logits[:, -1].float()
        cache = out.past_key_values
        done = bool(finished.all())
        if sync_ranks:
            done = _all_ranks_done(done, logits.device)
        if done:
            break
    ids = torch.stack(tokens, dim=1)  # [R, N]
    return Rollout(prefix, group_size, ids, completion_mask(ids, eos_token_id), torch.cat(embeds, dim=1))


def select_prompts(rollout: Rollout, prompts: slice) -> Rollout:
    """The sub-rollout of a contiguous range of prompts (with all G completions of each)."""
    g = rollout.group_size
    p = rollout.prefix
    rows = slice(prompts.start * g, prompts.stop * g)
    # Drop the left-padding columns these prompts share (padding for longer prompts elsewhere in the batch).
    first = int(p.mask[prompts].any(0).long().argmax())
    prefix = Prefix(p.embeds[prompts, first:], p.mask[prompts, first:], p.positions[:, prompts, first:],
                    p.next_position[prompts])
    return Rollout(prefix, g, rollout.completion_ids[rows], rollout.completion_mask[rows],
                   rollout.completion_embeds[rows])


def completion_mask(ids: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """1 on every token up to and including the first eos of each row, 0 after it."""
    is_eos = (ids == eos_token_id).long()  # [R, N]
    after = is_eos.cumsum(1) - is_eos  # eos tokens seen strictly before each position
    return (after == 0).long()  # [R, N]


def sequence_inputs(rollout: Rollout) -> dict:
    """Keyword inputs for a forward over [prompt + completion] of all B*G rows, media already merged."""
    g = rollout.group_size
    p = rollout.prefix
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
