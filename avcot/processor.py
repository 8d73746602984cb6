"""The Qwen2.5-Omni processor: the embedded offline one, or a real checkpoint's.

`load_processor("tiny")` returns the processor committed under `avcot/assets/tiny` (a small byte-level
BPE tokenizer, Whisper features with 128 mel bins, Qwen2-VL image/video processors, Qwen's chat
template). Any other value is a local directory (or a hub id already in the user's HF cache) and is
loaded with `Qwen2_5OmniProcessor.from_pretrained(..., trust_remote_code=False)`.
"""
from __future__ import annotations

from pathlib import Path

TINY = "tiny"
TINY_DIR = Path(__file__).parent / "assets" / "tiny"

# Names the Qwen2.5-Omni processor reads off its tokenizer.
NAMED_SPECIAL_TOKENS = {
    "audio_token": "<|AUDIO|>",
    "image_token": "<|IMAGE|>",
    "video_token": "<|VIDEO|>",
    "audio_bos_token": "<|audio_bos|>",
    "audio_eos_token": "<|audio_eos|>",
    "vision_bos_token": "<|vision_bos|>",
    "vision_eos_token": "<|vision_eos|>",
}


def processor_from_tokenizer(tokenizer_object, chat_template: str):
    """Wrap a `tokenizers.Tokenizer` into a full Qwen2.5-Omni processor, built only from constructors."""
    from transformers import (
        PreTrainedTokenizerFast,
        Qwen2_5OmniProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
        WhisperFeatureExtractor,
    )

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer_object,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=dict(NAMED_SPECIAL_TOKENS),
        padding_side="left",
        model_max_length=32768,
    )
    # Tiny frames by default: without explicit bounds Qwen2-VL upsizes each frame to >=100k pixels.
    size = {"shortest_edge": 28 * 28, "longest_edge": 224 * 224}
    return Qwen2_5OmniProcessor(
        image_processor=Qwen2VLImageProcessor(size=size),
        video_processor=Qwen2VLVideoProcessor(size=size, do_sample_frames=False),
        feature_extractor=WhisperFeatureExtractor(feature_size=128),
        tokenizer=tokenizer,
        chat_template=chat_template,
    )


def load_processor(base: str = TINY):
    """Load the processor for `base`: "tiny" (embedded, offline) or a checkpoint path / cached id."""
    from transformers import Qwen2_5OmniProcessor

    if base == TINY:
        if not (TINY_DIR / "tokenizer.json").exists():
            raise FileNotFoundError(
                f"embedded tiny processor missing under {TINY_DIR}; rebuild it with `python -m avcot.assets.build_tiny`"
            )
        return Qwen2_5OmniProcessor.from_pretrained(str(TINY_DIR), trust_remote_code=False)
    where = checkpoint_location(base)
    try:
        return Qwen2_5OmniProcessor.from_pretrained(where, trust_remote_code=False)
    except (OSError, ValueError) as e:
        raise FileNotFoundError(
            f"cannot load a Qwen2.5-Omni processor from {base!r}: expected a local checkpoint directory with "
            f"tokenizer and preprocessor files (or 'tiny' for the embedded default). Cause: {e}"
        ) from e


def checkpoint_location(base: str) -> str:
    """Resolve `base` to a local directory, or pass a hub-style id (`org/name`) through for the HF cache.

    Anything that looks like a filesystem path must exist and be a directory: a typo in a path should
    say so, not turn into a confusing hub lookup.
    """
    path = Path(base).expanduser()
    if path.exists():
        if not path.is_dir():
            raise NotADirectoryError(f"checkpoint path {base!r} is a file; pass the checkpoint directory")
        return str(path)
    looks_like_path = base.startswith(("/", ".", "~")) or base.count("/") != 1
    if looks_like_path:
        raise FileNotFoundError(
            f"cannot load a Qwen2.5-Omni checkpoint from {base!r}: no such directory "
            "(pass a local checkpoint directory, a cached hub id like Qwen/Qwen2.5-Omni-7B, or 'tiny')"
        )
    return base
