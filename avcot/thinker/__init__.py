"""The Qwen2.5-Omni thinker run in pieces, for training and rollout; each piece matches the stock forward.

- `forward`: frozen towers -> per-item media features -> merged input embeddings + M-RoPE positions -> language
  model hidden states (the one way merged embeddings are obtained); `unwrap_thinker` strips PEFT/DDP wrappers.
- `label_loss`: LM head and cross-entropy only at labelled positions (`sft_loss`, `label_token_logprobs`).
- `checkpointing`: activation checkpointing on the language model's decoder layers only (towers stay under no_grad).
- `encoder_cache`: on-disk safetensors cache of frozen tower outputs, keyed by media content + tower fingerprint.

The length-grouped batch sampler is `avcot.length_batching`; the rollout engine is `avcot.rollout`.
"""
