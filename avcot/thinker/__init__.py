"""Training and rollout speed levers for the thinker (issue 7); each is opt-in and matches the plain path.

- `embed`: run the thinker in pieces (towers -> embeddings + M-RoPE positions -> language model).
- `encoder_cache`: on-disk safetensors cache of frozen tower outputs, keyed by media content + tower fingerprint.
- `label_loss`: LM head and cross-entropy only at labelled positions.
- `checkpointing`: activation checkpointing on the language-model decoder layers only.
- `batching`: length-grouped, seeded batch sampler.
"""
