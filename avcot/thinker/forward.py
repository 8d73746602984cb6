"""Run the thinker in pieces: frozen towers -> input embeddings + M-RoPE positions -> language model.

HF's `Qwen2_5OmniThinkerModel.forward` accepts precomputed `mm_encoder_outputs` for image and video
only; audio is always recomputed from `input_features`. To reuse cached audio *and* video features
(and to stop before the 152k-wide LM head) this module rebuilds what that forward does:
embed the tokens, scatter the per-item media features at their placeholder positions, compute the
3-D M-RoPE positions with the model's own `get_rope_index`, and call `model.language_model`.
The result matches the stock forward (tested in tests/test_speed_embed_loss.py). It is the one way the
merged embeddings are obtained: the rollout's prefill (`avcot.rollout`) and the label-only SFT loss both use it.

Media items are handled one by one (one audio clip, one video, one image), so a cache can key each
item by its own content regardless of how items were batched.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

MODALITIES = ("audio", "video", "image")


@dataclass(frozen=True)
class MediaFeatures:
    """Frozen-tower outputs, one tensor per media item, in batch order."""

    audio: tuple[torch.Tensor, ...] = ()
    """Per audio clip: [n_audio_tokens_i, hidden]."""
    video: tuple[torch.Tensor, ...] = ()
    """Per video: [n_video_tokens_j, hidden] (after the 2x2 merger)."""
    image: tuple[torch.Tensor, ...] = ()
    """Per image: [n_image_tokens_k, hidden]."""


@dataclass(frozen=True)
class MediaItem:
    """One media item's encoder input, sliced out of a collated batch."""

    modality: str
    tensor: torch.Tensor
    """audio: mel features [128, frames_i] (valid frames only); video/image: patch rows [patches, dim]."""
    grid: torch.Tensor | None
    """[3] (t, h, w) patch grid for video/image; None for audio."""


def unwrap_thinker(model):
    """The `Qwen2_5OmniThinkerForConditionalGeneration` inside a PEFT wrapper (or the model itself).

    LoRA layers are injected in place, so calling the unwrapped modules still runs the adapters.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # PeftModel -> thinker
    if not (hasattr(base, "lm_head") and hasattr(getattr(base, "model", None), "language_model")):
        raise TypeError(f"{type(model).__name__} does not wrap a Qwen2.5-Omni thinker "
                        "(no lm_head / model.language_model; transformers 5.23's layout is expected)")
    return base


def split_media(batch: dict) -> dict[str, list[MediaItem]]:
    """Slice the collated media tensors of `batch` into per-item encoder inputs."""
    items: dict[str, list[MediaItem]] = {m: [] for m in MODALITIES}
    if batch.get("input_features") is not None:
        feats, mask = batch["input_features"], batch["feature_attention_mask"]  # [A, 128, F], [A, F]
        for i in range(feats.shape[0]):
            n = int(mask[i].sum())
            items["audio"].append(MediaItem("audio", feats[i, :, :n], None))  # [128, n]
    for modality, pix_key, grid_key in (("video", "pixel_values_videos", "video_grid_thw"),
                                        ("image", "pixel_values", "image_grid_thw")):
        if batch.get(pix_key) is None:
            continue
        pixels, grids = batch[pix_key], batch[grid_key]  # [sum patches, dim], [V, 3]
        sizes = grids.prod(-1).tolist()
        if sum(sizes) != pixels.shape[0]:
            raise ValueError(f"{pix_key} has {pixels.shape[0]} patch rows but {grid_key} adds up to {sum(sizes)}")
        for rows, grid in zip(torch.split(pixels, sizes), grids):
            items[modality].append(MediaItem(modality, rows, grid))
    return items


def encode_items(thinker, modality: str, items: list[MediaItem], *, grad: bool = False) -> list[torch.Tensor]:
    """Run the tower for `modality` on `items` in one call; one feature tensor per item.

    Under no_grad unless `grad` (towers that train: their outputs must carry gradients to their weights).
    """
    if not items:
        return []
    with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
        return _encode(thinker, modality, items)


def _encode(thinker, modality: str, items: list[MediaItem]) -> list[torch.Tensor]:
    inner = thinker.model
    if modality == "audio":
        frames = max(it.tensor.shape[-1] for it in items)
        feats = items[0].tensor.new_zeros((len(items), items[0].tensor.shape[0], frames))  # [A, 128, F]
        mask = torch.zeros((len(items), frames), dtype=torch.long, device=feats.device)  # [A, F]
        for i, it in enumerate(items):
            feats[i, :, : it.tensor.shape[-1]] = it.tensor
            mask[i, : it.tensor.shape[-1]] = 1
        out = inner.get_audio_features(feats, feature_attention_mask=mask, return_dict=True).last_hidden_state
        _, lengths = inner.audio_tower._get_feat_extract_output_lengths(mask.sum(-1))
        return list(torch.split(out, lengths.tolist()))  # [n_i, H] each
    pixels = torch.cat([it.tensor for it in items])  # [sum patches, dim]
    grids = torch.stack([it.grid for it in items])  # [V, 3]
    fn = inner.get_video_features if modality == "video" else inner.get_image_features
    return list(fn(pixels, grids, return_dict=True).pooler_output)


def compute_media_features(thinker, batch: dict, *, grad: bool = False) -> MediaFeatures:
    """Run the towers on every media item of `batch` (under no_grad unless `grad`)."""
    items = split_media(batch)
    return MediaFeatures(**{m: tuple(encode_items(thinker, m, items[m], grad=grad)) for m in MODALITIES})


def inputs_embeds_for(thinker, input_ids: torch.Tensor, features: MediaFeatures) -> torch.Tensor:
    """Token embeddings [B, L, H] with media features scattered at their placeholder tokens."""
    cfg = thinker.config
    embeds = thinker.model.get_input_embeddings()(input_ids)  # [B, L, H]
    for modality, token_id in (("audio", cfg.audio_token_id), ("video", cfg.video_token_id),
                               ("image", cfg.image_token_id)):
        parts = getattr(features, modality)
        mask = input_ids == token_id  # [B, L]
        n_tokens = int(mask.sum())
        if not parts:
            if n_tokens:
                raise ValueError(f"batch has {n_tokens} {modality} placeholder tokens but no {modality} features")
            continue
        feats = torch.cat(parts).to(embeds.device, embeds.dtype)  # [n, H]
        if feats.shape[0] != n_tokens:
            raise ValueError(f"{modality}: {feats.shape[0]} feature rows for {n_tokens} placeholder tokens")
        embeds = embeds.masked_scatter(mask.unsqueeze(-1), feats)
    return embeds


def position_ids_for(thinker, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """M-RoPE positions [3, B, L] and rope deltas [B, 1], exactly as the stock forward computes them."""
    fam = batch.get("feature_attention_mask")
    return thinker.model.get_rope_index(
        batch["input_ids"], batch.get("image_grid_thw"), batch.get("video_grid_thw"), batch["attention_mask"],
        bool(batch.get("use_audio_in_video", False)), fam.sum(-1) if fam is not None else None,
        batch.get("video_second_per_grid"),
    )


def lm_hidden_states(model, batch: dict, features: MediaFeatures | None = None, *,
                     towers_grad: bool = False) -> torch.Tensor:
    """Final-norm hidden states [B, L, H] of the language model (no LM head).

    `features` defaults to running the towers now (no_grad unless `towers_grad`); pass cached ones to skip them.
    """
    thinker = unwrap_thinker(model)
    if features is None:
        features = compute_media_features(thinker, batch, grad=towers_grad)
    embeds = inputs_embeds_for(thinker, batch["input_ids"], features)
    positions, _ = position_ids_for(thinker, batch)
    out = thinker.model.language_model(
        inputs_embeds=embeds, attention_mask=batch["attention_mask"], position_ids=positions, use_cache=False,
    )
    return out.last_hidden_state
