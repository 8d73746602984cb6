"""Fast GRPO rollouts: prefill each prompt once, expand the KV cache to G, decode with a static cache.

HF `generate(num_return_sequences=G)` repeats the prompt G times before the prefill (G x the towers
and the long multimodal prefill) and grows a dynamic cache token by token. Here:
1. prefill: towers (or cached features) + language model over the left-padded prompts once, keeping
   a dynamic cache, and the LM head on the last position only;
2. the cache is copied into a `StaticCache` sized `prompt + max_new_tokens` rounded up to a multiple of
   `cache_bucket` (so prompts of other lengths reuse the compiled step), each row repeated G times;
3. each decode step is one fixed-shape call (token embedding, M-RoPE position = prompt's last position
   + 1 + step, explicit boolean attention mask over the static cache, LM head). On CUDA the step is
   wrapped in `torch.compile(mode="reduce-overhead")` (CUDA graphs); on CPU it runs eagerly unless
   `compile=True` (inductor's C++ backend: tested to give the eager tokens, compile once per shape, and see
   in-place LoRA updates; the CUDA-graph capture itself has not yet run on a GPU).
Greedy decoding reproduces `generate`'s tokens (tested). Sampling uses temperature and top-p with the
caller's `torch.Generator`; it does not replay HF's random stream, so sampled tokens differ from
`generate`'s for the same seed (the distribution is the same).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import DynamicCache, StaticCache

from avcot.speed.embed import MediaFeatures, compute_media_features, inputs_embeds_for, position_ids_for, unwrap_thinker


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
    top_p: float = 1.0
    eos_token_id: int | None = None
    """Stop a row after this token; None decodes exactly max_new_tokens."""
    pad_token_id: int = 0
    """Written after EOS."""
    compile: bool | None = None
    """Compile the decode step (CUDA graphs); None = only on CUDA."""
    cache_bucket: int = 256
    """The static cache length (prompt + new tokens) is rounded up to a multiple of this, so prompts of
    different lengths reuse one compiled graph instead of recompiling per length (unused slots are masked)."""


@dataclass(frozen=True)
class Prefill:
    """The state after one pass over the prompts."""

    cache: DynamicCache
    last_logits: torch.Tensor  # [B, V] fp32
    next_position: torch.Tensor  # [B] M-RoPE position of the first new token
    prompt_mask: torch.Tensor  # [B, P] 1 on real prompt tokens
    embeds: torch.Tensor  # [B, P, H] prompt embeddings with the media features scattered in
    positions: torch.Tensor  # [3, B, P] M-RoPE positions of the prompt


@torch.no_grad()
def prefill(model, batch: dict, features: MediaFeatures | None = None) -> Prefill:
    """Run the prompts of a LEFT-padded batch once; LM head on the last position only."""
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
    next_position = positions.max(dim=0).values.max(dim=-1).values + 1  # [B]
    return Prefill(cache, logits, next_position, mask, embeds, positions)


def cache_length(prompt_len: int, max_new_tokens: int, bucket: int = 1) -> int:
    """Slots of the static cache: prompt + new tokens, rounded up to a multiple of `bucket`."""
    need = prompt_len + max_new_tokens
    return -(-need // max(bucket, 1)) * max(bucket, 1)


def expand_to_static(thinker, pre: Prefill, group_size: int, cache_len: int,
                     into: StaticCache | None = None) -> StaticCache:
    """A StaticCache of batch B*G and `cache_len` slots (`cache_length`) holding the prefill keys/values in
    its first P slots.

    `into`: a cache of exactly that shape to overwrite in place (same tensor addresses, so CUDA graphs
    captured on it replay without re-recording). Slots past P may hold an earlier rollout's values: the
    decode mask only ever lets a row see slots < P + step, which this rollout has written.
    """
    prompt_len = pre.prompt_mask.shape[1]
    static = into or StaticCache(config=thinker.config.get_text_config(), max_cache_len=cache_len)
    for layer, src in zip(static.layers, pre.cache.layers):
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


def _decode_step(thinker, cache: StaticCache, token: torch.Tensor, position: torch.Tensor,
                 key_mask: torch.Tensor) -> torch.Tensor:
    """One token for every row: token [N, 1], position [N], key_mask [N, 1, 1, S] bool -> logits [N, V]."""
    embeds = thinker.model.get_input_embeddings()(token)  # [N, 1, H]
    pos = position.view(1, -1, 1).expand(3, -1, 1)  # [3, N, 1] text tokens: same position on all 3 axes
    out = thinker.model.language_model(inputs_embeds=embeds, attention_mask={"full_attention": key_mask},
                                       position_ids=pos, past_key_values=cache, use_cache=True)
    return thinker.lm_head(out.last_hidden_state[:, -1]).float()  # [N, V]


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


class StaticDecoder:
    """Holds the (optionally compiled) decode step for one thinker; reuse it across rollouts."""

    def __init__(self, model, compile: bool | None = None):
        self.thinker = unwrap_thinker(model)
        device = self.thinker.lm_head.weight.device
        self.compiled = device.type == "cuda" if compile is None else compile
        step = lambda *a: _decode_step(self.thinker, *a)  # noqa: E731 -- closure over the thinker for compile
        self.step = torch.compile(step, mode="reduce-overhead", fullgraph=False) if self.compiled else step
        self._cache: StaticCache | None = None  # kept between rollouts of the same shape (stable addresses)
        self._cache_shape: tuple | None = None

    @torch.no_grad()
    def rollout(self, batch: dict, settings: RolloutSettings, *, features: MediaFeatures | None = None,
                generator: torch.Generator | None = None, sync_ranks: bool = False) -> torch.Tensor:
        """New token ids [B*G, N <= max_new_tokens] for a left-padded batch (prompt-major rows)."""
        return self.rollout_with_prefill(batch, settings, features=features, generator=generator,
                                         sync_ranks=sync_ranks)[0]

    @torch.no_grad()
    def rollout_with_prefill(self, batch: dict, settings: RolloutSettings, *, features: MediaFeatures | None = None,
                             generator: torch.Generator | None = None,
                             sync_ranks: bool = False) -> tuple[torch.Tensor, Prefill]:
        """(new ids [B*G, N], the prefill: prompt embeddings, mask, positions) for GRPO's update forward.

        N is max_new_tokens, or less when every row ended with EOS before (checked every 16 steps;
        with `sync_ranks` the stop is agreed across ranks by an all-reduce, for sharded models).
        """
        g, n_new = settings.group_size, settings.max_new_tokens
        pre = prefill(self.thinker, batch, features)
        rows = pre.prompt_mask.shape[0] * g
        prompt_len = pre.prompt_mask.shape[1]
        length = cache_length(prompt_len, n_new, settings.cache_bucket)
        shape = (rows, length, pre.last_logits.dtype)
        reuse = self._cache if self._cache_shape == shape else None
        cache = expand_to_static(self.thinker, pre, g, length, into=reuse)
        self._cache, self._cache_shape = cache, shape
        device = pre.last_logits.device
        key_valid = torch.ones((rows, length), dtype=torch.bool, device=device)  # [N, S]
        key_valid[:, :prompt_len] = pre.prompt_mask.repeat_interleave(g, dim=0).bool()
        slots = torch.arange(length, device=device)  # [S]
        base_pos = pre.next_position.repeat_interleave(g, dim=0)  # [N]
        out = torch.full((rows, n_new), settings.pad_token_id, dtype=torch.long, device=device)  # [N, T]
        done = torch.zeros(rows, dtype=torch.bool, device=device)  # [N]
        logits = pre.last_logits.repeat_interleave(g, dim=0)  # [N, V]
        for t in range(n_new):
            tok = next_tokens(logits, settings, generator)  # [N]
            tok = torch.where(done, torch.full_like(tok, settings.pad_token_id), tok)
            out[:, t] = tok
            if settings.eos_token_id is not None:
                done |= tok == settings.eos_token_id
                if t % 16 == 15 and _all_done(done, sync_ranks):  # a host sync: check only now and then
                    break
            if t == n_new - 1:
                break
            key_mask = (key_valid & (slots <= prompt_len + t)).view(rows, 1, 1, -1)  # [N, 1, 1, S]
            logits = self.step(cache, tok.view(-1, 1), base_pos + t, key_mask)
            if self.compiled:
                logits = logits.clone()  # CUDA-graph outputs are overwritten by the next replay
        return out[:, : t + 1], pre


def _all_done(done: torch.Tensor, sync_ranks: bool) -> bool:
    if not sync_ranks:
        return bool(done.all())
    import torch.distributed as dist

    flag = (~done).any().to(torch.int32).view(1)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return int(flag) == 0


def rollout(model, batch: dict, settings: RolloutSettings, *, features: MediaFeatures | None = None,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """One-shot convenience: new ids [B*G, N]. Keep a `StaticDecoder` to reuse compiled graphs."""
    return StaticDecoder(model, settings.compile).rollout(batch, settings, features=features, generator=generator)
