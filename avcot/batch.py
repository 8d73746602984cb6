"""The batch every DataModule hands its loaders: one typed record, built by one collate function.

`Batch.inputs` is what the thinker's forward/generate takes (`avcot.chat.collate`'s tensors); everything else
is typed per-example data that never reaches the model: the row ids (predictions, rejects), the reference
texts (eval), the gold option letters of an MCQ batch (what `avcot.rewards.accuracy_reward` reads), the
encoder-cache keys of the batch's media (hashed in the loader worker) and the rows the worker could not decode
(`avcot.data.loader.RowLoader` records them in the main process).

`Batch.to(device)` moves the inputs' tensors; Lightning's default `transfer_batch_to_device` calls it (any
object with a `to` method is moved that way). A Batch is a plain frozen dataclass of tensors, strings and
tuples, so it pickles across DataLoader workers.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from avcot.chat import collate
from avcot.data.examples import Example, Skipped, SkippedBatch
from avcot.rewards import RewardInputs


@dataclass(frozen=True)
class Batch:
    """A collated batch: the model's tensors plus typed per-example fields, one entry per row in row order."""

    inputs: Mapping[str, Any]
    """The model's keyword inputs: input_ids, attention_mask, labels (-100 off the target), use_audio_in_video
    and the media tensors (`avcot.chat.collate`). Treated as read-only: steps build new mappings."""
    ids: tuple[str, ...]
    """Manifest row id of each example."""
    references: tuple[str, ...]
    """Reference text of each example: the transcript (CAVSR) or the gold option letter (MCQ); '' when unknown."""
    answers: tuple[str, ...] | None = None
    """Gold option letter of each example (MCQ batches only; None for transcription batches)."""
    media_keys: Mapping[str, list[str]] | None = None
    """Encoder-cache keys of the batch's media by modality (`avcot.thinker.encoder_cache.media_keys`), when the
    DataModule hashed them in the loader worker; None otherwise."""
    skipped: tuple[Skipped, ...] = ()
    """Rows of this batch that could not be decoded (dropped from every other field)."""

    def __post_init__(self) -> None:
        n = len(self.ids)
        if len(self.references) != n or (self.answers is not None and len(self.answers) != n):
            raise ValueError(f"batch of {n} ids has {len(self.references)} references and "
                             f"{'no' if self.answers is None else len(self.answers)} answers")

    def __len__(self) -> int:
        return len(self.ids)

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> Batch:
        """A copy with every input tensor on `device` (floating tensors also cast to `dtype` when given)."""
        return replace(self, inputs=move_inputs(self.inputs, device, dtype))

    def with_inputs(self, inputs: Mapping[str, Any]) -> Batch:
        """The same rows with other model inputs (e.g. the prompt-only, left-padded view GRPO samples from)."""
        return replace(self, inputs=inputs)

    def reward_inputs(self, group_size: int = 1) -> RewardInputs:
        """What the rewards read for the `group_size` completions of each row, the row's values repeated."""
        return RewardInputs(references=self.references, answers=self.answers).repeat(group_size)


def move_inputs(inputs: Mapping[str, Any], device: torch.device | str,
                dtype: torch.dtype | None = None) -> dict[str, Any]:
    """`inputs` with every tensor on `device`; floating ones cast to `dtype` when given; others as they are."""
    out = {}
    for key, value in inputs.items():
        if isinstance(value, torch.Tensor):
            value = value.to(device)
            if dtype is not None and value.is_floating_point():
                value = value.to(dtype)
        out[key] = value
    return out


def collate_batch(items: Sequence[Example | Skipped], pad_id: int, *, padding_side: str = "right",
                  hash_media: bool = False, gold_letters: bool = False) -> Batch | SkippedBatch:
    """The `Batch` of a loader's built items; skipped rows travel in `Batch.skipped`.

    A batch whose rows were all skipped is a `SkippedBatch` (`RowLoader` turns it into None). `padding_side`:
    "left" for generation (new tokens follow each prompt's last token). `hash_media`: also fill
    `media_keys`, hashed here in the DataLoader worker, off the training path. `gold_letters`: the references
    are MCQ gold letters, exposed as `answers` as well.
    """
    kept = [it for it in items if isinstance(it, Example)]
    skipped = tuple(it for it in items if isinstance(it, Skipped))
    if not kept:
        return SkippedBatch(skipped)
    inputs = collate([it.encoded for it in kept], pad_id, padding_side=padding_side)
    keys = None
    if hash_media:
        from avcot.thinker.encoder_cache import media_keys

        keys = media_keys(inputs)
    references = tuple(it.reference for it in kept)
    return Batch(inputs=inputs, ids=tuple(it.id for it in kept), references=references,
                 answers=references if gold_letters else None, media_keys=keys, skipped=skipped)
