"""Prefill each prompt once, repeat its KV cache G times, decode token by token.

1. prefill: the frozen towers (or cached features) and the language model run once over the left-padded prompts
   through the piecewise forward of `avcot.thinker.forward` (merged embeddings and M-RoPE positions computed, not
   captured with hooks), the LM head on the last position only;
2. the cache is repeated G times per prompt: as a `DynamicCache` that grows a slot per step, or copied into a
   `StaticCache` of `prompt + max_new_tokens` slots rounded up to `cache_bucket` (settings.static);
3. each step samples one token per row (`next_tokens`: greedy, or temperature + top-p with the caller's
   generator; one `torch.multinomial` over all rows, so for the same RNG state it draws what HF's
   `generate(do_sample=True, top_k=0)` draws), pads rows that already ended, and feeds the token back at M-RoPE
   position `max(prompt positions) + 1 + step` on all three axes (what HF computes from `rope_deltas`, without
   keeping state on the model). The static step is one fixed-shape call with an explicit boolean mask over the
   cache; on CUDA it is compiled with `mode="reduce-overhead"` (CUDA graphs).
4. Stopping: a row ends at its EOS; the loop ends when every row has (checked each step, or every 16 steps on
   the static path, where a host sync would stall the graphs); with `sync_ranks` the stop is agreed across
   ranks by an all-reduce so sharded forwards stay in lock-step.

Under FSDP2 every unit's parameters are gathered once for the whole rollout (`gathered_for_generation`), for the
growing and the static cache alike. There the static step runs eager unless `RolloutSettings.compile` is True: the
gather gives the parameters new storage at every rollout, so CUDA graphs captured in one rollout would have to be
re-captured in the next (and forcing it is untested on GPUs).
"""
from __future__ import annotations

import contextlib

import torch
from transformers import DynamicCache, StaticCache

from avcot.rollout.records import Prefill, Rollout, RolloutSettings, completion_mask
from avcot.thinker.forward import (
    MediaFeatures,
    compute_media_features,
    inputs_embeds_for,
    position_ids_for,
    unwrap_thinker,
)

STATIC_CHECK_EVERY = 16  # static decoding: steps between EOS checks (each is a host sync)


def next_position(positions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """First free M-RoPE position per row: max over the prompt's real tokens, plus one."""
    real = positions.masked_fill(mask[None] == 0, -1)  # [3, B, P]
    return real.amax(dim=(0, 2)) + 1  # [B]


@torch.no_grad()
def prefill(model, batch: dict, features: MediaFeatures | None = None) -> tuple[Prefill, torch.Tensor, DynamicCache]:
    """Run the prompts of a LEFT-padded batch once: (Prefill, last-position logits [B, V] fp32, KV cache)."""
    thinker = unwrap_thinker(model)
    mask = batch["attention_mask"]  # [B, P]
    if bool((mask[:, -1] == 0).any()):
        raise ValueError("rollout prompts must be left-padded (collate(..., padding_side='left'))")
    if features is None:
        features = compute_media_features(thinker, batch)
    embeds = inputs_embeds_for(thinker, batch["input_ids"], features)  # [B, P, H]
    positions, _ = position_ids_for(thinker, batch)  # [3, B, P]
    cache = DynamicCache(config=thinker.config.get_text_config())
    out = thinker.model.language_model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions,
                                       past_key_values=cache, use_cache=True)
    logits = thinker.lm_head(out.last_hidden_state[:, -1]).float()  # [B, V]
    return Prefill(batch["input_ids"], mask, embeds, positions, next_position(positions, mask)), logits, cache


def next_tokens(logits: torch.Tensor, settings: RolloutSettings, generator: torch.Generator | None) -> torch.Tensor:
    """Greedy or temperature/top-p sample: logits [N, V] -> token ids [N]."""
    if not settings.do_sample:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits / settings.temperature, dim=-1)  # [N, V]
    if settings.top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        drop = sorted_p.cumsum(-1) - sorted_p > settings.top_p  # keep the smallest set reaching top_p
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def all_done(done: torch.Tensor, sync_ranks: bool) -> bool:
    """Every row ended (on every rank, with `sync_ranks`: one all-reduce)."""
    if not sync_ranks:
        return bool(done.all())
    import torch.distributed as dist

    flag = (~done).any().to(torch.int32).view(1)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return int(flag) == 0


def cache_length(prompt_len: int, max_new_tokens: int, bucket: int = 1) -> int:
    """Slots of the static cache: prompt + new tokens, rounded up to a multiple of `bucket`."""
    need = prompt_len + max_new_tokens
    return -(-need // max(bucket, 1)) * max(bucket, 1)


def expand_to_static(thinker, cache: DynamicCache, group_size: int, prompt_len: int, cache_len: int,
                     into: StaticCache | None = None) -> StaticCache:
    """A StaticCache of batch B*G and `cache_len` slots holding the prefill keys/values in its first P slots.

    `into`: a cache of exactly that shape to overwrite in place (same tensor addresses, so CUDA graphs
    captured on it replay without re-recording). Slots past P may hold an earlier rollout's values: the
    decode mask only ever lets a row see slots < P + step, which this rollout has written.
    """
    static = into or StaticCache(config=thinker.config.get_text_config(), max_cache_len=cache_len)
    for layer, src in zip(static.layers, cache.layers):
        keys = src.keys.repeat_interleave(group_size, dim=0)  # [B*G, kv_heads, P, D]
        values = src.values.repeat_interleave(group_size, dim=0)
        if not layer.is_initialized:
            layer.lazy_initialization(keys[:, :, :1], values[:, :, :1])
        elif layer.keys.shape[0] != keys.shape[0] or layer.max_cache_len != cache_len:
            raise ValueError("`into` cache has a different batch or length than this rollout")
        layer.keys[:, :, :prompt_len].copy_(keys)
        layer.values[:, :, :prompt_len].copy_(values)
        layer.cumulative_length.fill_(prompt_len)
    return static


def decode_step(thinker, cache, token: torch.Tensor, position: torch.Tensor, attention_mask) -> torch.Tensor:
    """One token for every row: token [N, 1], position [N] -> logits [N, V] fp32.

    attention_mask: [N, S] over the dynamic cache plus this token, or {"full_attention": [N, 1, 1, S] bool}
    over the static cache.
    """
    embeds = thinker.model.get_input_embeddings()(token)  # [N, 1, H]
    pos = position.view(1, -1, 1).expand(3, -1, 1)  # [3, N, 1] text tokens: same position on all 3 axes
    out = thinker.model.language_model(inputs_embeds=embeds, attention_mask=attention_mask, position_ids=pos,
                                       past_key_values=cache, use_cache=True)
    return thinker.lm_head(out.last_hidden_state[:, -1]).float()  # [N, V]


class _GrowingCache:
    """Decode steps over a DynamicCache, one slot appended per step."""

    def __init__(self, thinker, pre: Prefill, cache: DynamicCache, group_size: int):
        cache.batch_repeat_interleave(group_size)
        self.thinker, self.cache = thinker, cache
        self.mask = pre.mask.repeat_interleave(group_size, dim=0)  # [N, P]
        self.start = pre.next_position.repeat_interleave(group_size, dim=0)  # [N]

    def __call__(self, token: torch.Tensor, t: int) -> torch.Tensor:
        self.mask = torch.cat([self.mask, torch.ones_like(self.mask[:, :1])], dim=1)  # [N, P+t+1]
        return decode_step(self.thinker, self.cache, token.view(-1, 1), self.start + t, self.mask)


class _FixedCache:
    """Decode steps over a StaticCache: every call has the same shapes (what CUDA graphs replay)."""

    def __init__(self, step, compiled: bool, pre: Prefill, cache: StaticCache, group_size: int, length: int):
        self.step, self.compiled, self.cache = step, compiled, cache
        rows, self.prompt_len = pre.mask.shape[0] * group_size, pre.mask.shape[1]
        device = pre.mask.device
        self.key_valid = torch.ones((rows, length), dtype=torch.bool, device=device)  # [N, S]
        self.key_valid[:, :self.prompt_len] = pre.mask.repeat_interleave(group_size, dim=0).bool()
        self.slots = torch.arange(length, device=device)  # [S]
        self.start = pre.next_position.repeat_interleave(group_size, dim=0)  # [N]

    def __call__(self, token: torch.Tensor, t: int) -> torch.Tensor:
        rows = token.shape[0]
        key_mask = (self.key_valid & (self.slots <= self.prompt_len + t)).view(rows, 1, 1, -1)  # [N, 1, 1, S]
        logits = self.step(self.cache, token.view(-1, 1), self.start + t, key_mask)
        return logits.clone() if self.compiled else logits  # CUDA-graph outputs are overwritten by the next replay


def decode_loop(step, logits: torch.Tensor, settings: RolloutSettings, *, generator: torch.Generator | None = None,
           sync_ranks: bool = False, check_every: int = 1, streamer=None) -> torch.Tensor:
    """Sample up to max_new_tokens per row from first logits [N, V] and `step(token [N], t) -> logits`.

    Returns ids [N, T]: pad after each row's EOS; T < max_new_tokens when every row ended before (seen at a
    check, every `check_every` steps). `streamer.put` gets each step's tokens (as HF generate's streamer).
    """
    rows, n_new = logits.shape[0], settings.max_new_tokens
    device = logits.device
    eos = torch.tensor(settings.eos_ids, dtype=torch.long, device=device)
    out = torch.full((rows, n_new), settings.pad_token_id, dtype=torch.long, device=device)  # [N, T]
    done = torch.zeros(rows, dtype=torch.bool, device=device)  # [N]
    for t in range(n_new):
        tok = next_tokens(logits, settings, generator)  # [N]
        tok = torch.where(done, torch.full_like(tok, settings.pad_token_id), tok)
        out[:, t] = tok
        if streamer is not None:
            streamer.put(tok.cpu())
        if eos.numel():
            done |= torch.isin(tok, eos)
            if (t + 1) % check_every == 0 and all_done(done, sync_ranks):
                break
        if t == n_new - 1:
            break
        logits = step(tok, t)
    return out[:, : t + 1]


class RolloutEngine:
    """Samples completions of left-padded prompt batches for one model; keep it to reuse the compiled static
    decode step and its cache across rollouts."""

    def __init__(self, model):
        self.model = model
        self.thinker = unwrap_thinker(model)
        self._compiled_step = None
        self._cache: StaticCache | None = None  # kept between rollouts of the same shape (stable addresses)
        self._cache_shape: tuple | None = None

    def compiles(self, settings: RolloutSettings) -> bool:
        """Whether `settings` decode through the compiled step (static decoding; compile, or None: on CUDA and
        not FSDP2-sharded)."""
        if settings.compile is not None:
            return settings.static and settings.compile
        on_cuda = self.thinker.lm_head.weight.device.type == "cuda"
        return settings.static and on_cuda and not is_sharded(self.model)

    def _fixed_cache(self, pre: Prefill, cache: DynamicCache, logits: torch.Tensor,
                     settings: RolloutSettings) -> _FixedCache:
        g, prompt_len = settings.group_size, pre.mask.shape[1]
        length = cache_length(prompt_len, settings.max_new_tokens, settings.cache_bucket)
        shape = (pre.mask.shape[0] * g, length, logits.dtype)
        reuse = self._cache if self._cache_shape == shape else None
        self._cache = expand_to_static(self.thinker, cache, g, prompt_len, length, into=reuse)
        self._cache_shape = shape
        thinker = self.thinker
        eager = lambda c, tok, pos, mask: decode_step(thinker, c, tok, pos, {"full_attention": mask})  # noqa: E731
        compiled = self.compiles(settings)
        if compiled and self._compiled_step is None:
            self._compiled_step = torch.compile(eager, mode="reduce-overhead", fullgraph=False)
        return _FixedCache(self._compiled_step if compiled else eager, compiled, pre, self._cache, g, length)

    @torch.no_grad()
    def sample(self, batch: dict, settings: RolloutSettings, *, features: MediaFeatures | None = None,
               generator: torch.Generator | None = None, sync_ranks: bool = False, streamer=None) -> Rollout:
        """G completions per prompt of a left-padded batch (prompt-major rows), each prompt prefilled once.

        features: cached tower outputs for the batch's media (None runs the towers). sync_ranks: agree on the
        stop across data-parallel ranks. streamer: a transformers streamer (batch of one prompt).
        """
        with gathered_for_generation(self.model):
            pre, logits, cache = prefill(self.thinker, batch, features)
            if streamer is not None:
                streamer.put(pre.input_ids.cpu())  # HF's streamers expect the prompt first (skip_prompt)
            g = settings.group_size
            step = (self._fixed_cache(pre, cache, logits, settings) if settings.static
                    else _GrowingCache(self.thinker, pre, cache, g))
            ids = decode_loop(step, logits.repeat_interleave(g, dim=0), settings, generator=generator,
                         sync_ranks=sync_ranks, check_every=STATIC_CHECK_EVERY if settings.static else 1,
                         streamer=streamer)  # [B*G, N]
            embeds = self.thinker.model.get_input_embeddings()(ids)  # [B*G, N, H]
        if streamer is not None:
            streamer.end()
        return Rollout(pre, g, ids, completion_mask(ids, settings.eos_token_id), embeds)


def sample(model, batch: dict, settings: RolloutSettings, **kwargs) -> Rollout:
    """One-shot `RolloutEngine(model).sample(...)`; keep an engine to reuse compiled static steps."""
    return RolloutEngine(model).sample(batch, settings, **kwargs)


def is_sharded(model) -> bool:
    """Whether any part of `model` is an FSDP2 unit (`fully_shard`)."""
    from torch.distributed.fsdp import FSDPModule

    return any(isinstance(m, FSDPModule) for m in model.modules())


@contextlib.contextmanager
def gathered_for_generation(model):
    """Under FSDP2, every unit's parameters gathered once for the whole rollout (not once per token); else a
    no-op. Inner units are resharded afterwards; the root stays gathered, as FSDP2 leaves it after a forward.
    """
    from torch.distributed.fsdp import FSDPModule

    units = [m for m in model.modules() if isinstance(m, FSDPModule)]
    if not units:
        yield
        return
    if isinstance(model, FSDPModule):
        # FSDP2 makes the first unit that runs a forward the root; the rollout calls the thinker's parts (a
        # decoder layer first), so the real root is initialised here. No public API does this.
        model._get_fsdp_state()._lazy_init()
    inner = [m for m in units if m is not model]
    for unit in inner:
        unit.set_reshard_after_forward(False, recurse=False)
    for unit in units:
        unit.unshard()
    try:
        yield
    finally:
        for unit in inner:
            unit.set_reshard_after_forward(True, recurse=False)
            unit.reshard()
