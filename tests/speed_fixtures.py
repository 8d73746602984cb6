"""Tiny batches shared by the speed-lever tests (not a test module)."""
from __future__ import annotations

import numpy as np

from avcot.chat import Prompt, collate, encode_example


def tiny_prompt(seed: int = 0, frames: int = 4, seconds: float = 2.0, audio: bool = True,
                video: bool = True) -> Prompt:
    """A 112x112 video (32 video tokens) + a short clip of noise, seeded."""
    rng = np.random.default_rng(seed)
    return Prompt(
        instruction="请转写这段语音。", system="sys",
        video=rng.integers(0, 255, (frames, 112, 112, 3), dtype=np.uint8) if video else None,
        audio=(rng.standard_normal(int(16000 * seconds)) * 0.1).astype(np.float32) if audio else None,
        fps=frames / seconds,
    )


def tiny_batch(processor, targets=("实验室里在做试验", "好"), *, seconds=(2.0, 1.0), side="right",
               use_audio_in_video=False, with_target=True) -> dict:
    """Collated batch of len(targets) examples with different audio lengths and target lengths."""
    examples = [
        encode_example(processor, tiny_prompt(seed=i, seconds=s), t if with_target else None,
                       use_audio_in_video=use_audio_in_video)
        for i, (t, s) in enumerate(zip(targets, seconds))
    ]
    return collate(examples, processor.tokenizer.pad_token_id, padding_side=side)
