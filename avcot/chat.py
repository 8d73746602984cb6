"""Chat messages -> model inputs: one place that turns a prompt (+ target) into tensors.

Every consumer (SFT and MCQ DataModules, GRPO rollouts, eval, the demo) goes through
`encode_example` and `collate`, so label masking and the audio-in-video layout are decided once.

Layout decisions:
- The prompt is rendered with the processor's chat template (`add_generation_prompt=True`) and run
  through the processor with its media; the target is tokenised separately and appended, followed by
  `<|im_end|>`. Labels are -100 on every prompt token, so loss falls on the assistant turn only.
- `use_audio_in_video=True` uses Qwen2.5-Omni's interleaved layout (one video placeholder whose audio
  tokens are interleaved with its frames in 2-second chunks) and the model must be called with the same
  flag (it changes the M-RoPE positions); `False` places the audio as its own part after the video. The
  flag travels inside every `Encoded` and batch so it cannot be silently dropped between the two.
- Whisper features are padded by the processor to 30 s; `collate` trims them to the longest clip in the
  batch (the audio tower ignores padded frames anyway), which saves memory on short clips.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

PATCH_FACTOR = 28  # Qwen2-VL: 14-pixel patches merged 2x2


@dataclass(frozen=True)
class Prompt:
    """What the model is asked: system text, an instruction and the media that go with it."""

    instruction: str
    system: str
    video: np.ndarray | None = None
    """uint8 frames [T, H, W, 3]; H and W multiples of 28, T even."""
    audio: np.ndarray | None = None
    """float32 mono waveform at 16 kHz."""
    image: np.ndarray | None = None
    """uint8 [H, W, 3]."""
    fps: float = 2.0
    """Frames per second of `video` as sampled (sets the temporal M-RoPE positions)."""


@dataclass(frozen=True)
class Encoded:
    """One tokenised example; tensors unbatched."""

    input_ids: torch.Tensor  # [L]
    labels: torch.Tensor  # [L], -100 outside the assistant turn
    prompt_len: int
    use_audio_in_video: bool
    media: dict = field(default_factory=dict, compare=False)
    """Processor outputs for the media (pixel_values_videos, video_grid_thw, input_features, ...)."""


def messages_for(prompt: Prompt, *, use_audio_in_video: bool = False) -> list[dict]:
    """Chat messages for `prompt` in Qwen's content-part format (media parts before the text)."""
    parts: list[dict] = []
    if prompt.image is not None:
        parts.append({"type": "image"})
    if prompt.video is not None:
        parts.append({"type": "video"})
    if prompt.audio is not None and not (use_audio_in_video and prompt.video is not None):
        parts.append({"type": "audio"})
    parts.append({"type": "text", "text": prompt.instruction})
    return [{"role": "system", "content": prompt.system}, {"role": "user", "content": parts}]


def video_kwargs(frames: np.ndarray, fps: float) -> dict:
    """Processor video settings that keep the frames at their given size (no up/down-scaling)."""
    t, h, w = frames.shape[:3]
    if h % PATCH_FACTOR or w % PATCH_FACTOR:
        raise ValueError(f"frame size {h}x{w} must be a multiple of {PATCH_FACTOR} on both sides")
    if t % 2:
        raise ValueError(f"number of frames must be even (temporal patch 2), got {t}")
    pixels = h * w
    return {"size": {"shortest_edge": pixels, "longest_edge": pixels}, "fps": float(fps),
            "cap_pixels_per_frame": True, "do_sample_frames": False}


def encode_example(processor, prompt: Prompt, target: str | None = None, *,
                   use_audio_in_video: bool = False) -> Encoded:
    """Tokenise `prompt` (+ `target` as the assistant turn) with its media into an `Encoded`."""
    if use_audio_in_video and (prompt.video is None or prompt.audio is None):
        use_audio_in_video = False  # nothing to interleave: a plain layout is the only valid one
    text = processor.apply_chat_template(messages_for(prompt, use_audio_in_video=use_audio_in_video),
                                         tokenize=False, add_generation_prompt=True)
    kwargs: dict = {"return_tensors": "pt"}
    if prompt.video is not None:
        kwargs["videos"] = [prompt.video]
        kwargs["videos_kwargs"] = video_kwargs(prompt.video, prompt.fps)
    if prompt.audio is not None:
        kwargs["audio"] = [prompt.audio]
    if prompt.image is not None:
        kwargs["images"] = [prompt.image]
    if use_audio_in_video:
        kwargs["load_audio_from_video"] = True
        kwargs["audio_from_video_indices"] = [0]
    out = processor(text=[text], **kwargs)
    prompt_ids = out.pop("input_ids")[0]  # [P]
    out.pop("attention_mask", None)
    media = {k: v for k, v in out.items() if isinstance(v, torch.Tensor)}
    if target is None:
        return Encoded(prompt_ids, torch.full_like(prompt_ids, -100), len(prompt_ids), use_audio_in_video, media)
    eos = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    target_ids = processor.tokenizer(target, add_special_tokens=False, return_tensors="pt")["input_ids"][0]
    target_ids = torch.cat([target_ids, torch.tensor([eos])])  # [T]
    input_ids = torch.cat([prompt_ids, target_ids])  # [P+T]
    labels = torch.cat([torch.full_like(prompt_ids, -100), target_ids])  # [P+T]
    return Encoded(input_ids, labels, len(prompt_ids), use_audio_in_video, media)


def collate(examples: list[Encoded], pad_id: int, *, padding_side: str = "right") -> dict:
    """Batch `Encoded` examples: pad text, concatenate patches, trim audio padding.

    Use padding_side="left" for generation (new tokens must follow the last prompt token).
    """
    if not examples:
        raise ValueError("cannot collate an empty list of examples")
    flags = {e.use_audio_in_video for e in examples}
    if len(flags) != 1:
        raise ValueError("examples mix use_audio_in_video=True and False; one batch must use one layout")
    length = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), length), pad_id, dtype=torch.long)  # [B, L]
    labels = torch.full((len(examples), length), -100, dtype=torch.long)  # [B, L]
    mask = torch.zeros((len(examples), length), dtype=torch.long)  # [B, L]
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        sl = slice(length - n, length) if padding_side == "left" else slice(0, n)
        ids[i, sl], labels[i, sl], mask[i, sl] = e.input_ids, e.labels, 1
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels,
             "use_audio_in_video": flags.pop()}
    batch.update(_collate_media(examples))
    return batch


def _collate_media(examples: list[Encoded]) -> dict:
    out: dict = {}
    # Patch rows and grids concatenate across the batch (the vision tower takes a flat patch list).
    for key in ("pixel_values_videos", "video_grid_thw", "video_second_per_grid", "pixel_values", "image_grid_thw"):
        parts = [e.media[key] for e in examples if key in e.media]
        if parts:
            out[key] = torch.cat(parts)
    feats = [e for e in examples if "input_features" in e.media]
    if feats:
        if len(feats) != len(examples):
            raise ValueError("some examples in the batch have audio and some do not; batch them apart")
        frames = max(int(e.media["feature_attention_mask"].sum()) for e in feats)
        out["input_features"] = torch.cat([e.media["input_features"][..., :frames] for e in feats])  # [B, 128, F]
        out["feature_attention_mask"] = torch.cat([e.media["feature_attention_mask"][:, :frames] for e in feats])
    return out


def model_inputs(batch: dict, *, with_labels: bool = True) -> dict:
    """The collated tensors the thinker's forward/generate accepts (without `labels` for generation)."""
    return {k: v for k, v in batch.items() if with_labels or k != "labels"}
