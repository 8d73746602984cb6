"""Text generation from collated batches; the implementation is the rollout engine (`avcot.rollout`)."""
from avcot.rollout.text import decode, generate_ids, generate_texts

__all__ = ["decode", "generate_ids", "generate_texts"]
