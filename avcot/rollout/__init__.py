"""The one rollout engine: GRPO sampling, SFT predict, evaluation and the demo all decode through it.

- `records`: `RolloutSettings` (greedy/sampling, EOS, static cache + compiled step as an option), `Prefill`
  (prompt ids, mask, merged embeddings, M-RoPE positions), `Rollout` (G completions per prompt).
- `engine`: `prefill` (piecewise forward, each prompt once), `next_tokens` (the sampler), `RolloutEngine.sample`.
- `scoring`: completion logits from the kept prefill (GRPO's update and reference forwards).
- `text`: `generate_ids`, `generate_texts`, `decode`.
"""
from avcot.rollout.engine import RolloutEngine, cache_length, gathered_for_generation, next_tokens, prefill, sample
from avcot.rollout.records import (
    Prefill,
    Rollout,
    RolloutSettings,
    completion_mask,
    prompt_only,
    select_prompts,
)
from avcot.rollout.scoring import completion_logits, logits_for_last, sequence_inputs
from avcot.rollout.text import decode, generate_ids, generate_texts

__all__ = [
    "Prefill", "Rollout", "RolloutEngine", "RolloutSettings", "cache_length", "completion_logits", "completion_mask",
    "decode", "gathered_for_generation", "generate_ids", "generate_texts", "logits_for_last", "next_tokens",
    "prefill", "prompt_only", "sample", "select_prompts", "sequence_inputs",
]
