"""MCQ (AVRT) DataModule: manifest rows -> `McqItem` -> media -> student prompt -> encoded example -> batch.

Manifest (Parquet or JSONL, the layout `avcot.synth --mcq` writes): id, question, options (2-4 strings, letter
order), answer (letter), video / audio / image paths (relative = under the manifest's directory; a row with a
video and no audio takes the video's own audio stream), optional trace (merged `<think>…</think><answer>X</answer>`),
modality, difficulty.

Targets: `target="trace"` trains on each row's merged trace (SFT cold start; rows without one are rejected);
`target="none"` gives prompt-only, LEFT-padded batches for GRPO rollouts, eval and predict. Every batch
carries `meta = {"answers": [...], "references": [...]}` (the gold letters) for `avcot.rewards.accuracy_reward`.

`modality` drops streams for the per-modality evaluation: "a" removes video and image (audio kept, taken from the
video when the row has no separate audio file), "v" removes audio, "av" keeps everything. Rows whose media are
all dropped are still asked (text only): that is what the ablation measures.
"""
from __future__ import annotations

import logging
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np
from torch.utils.data import DataLoader

from avcot.chat import Prompt, encode_example
from avcot.manifest import mcq_fields
from avcot.records import McqItem
from datamodules.base import ManifestDataModule
from datamodules.common import (
    BadRowPolicy,
    Example,
    ExampleDataset,
    ManifestRow,
    MediaSettings,
    RejectLog,
    RowCounts,
    StageError,
    audio_seconds,
    collate_examples,
    load_av,
    load_manifest,
    media_problem,
    require_rows,
    resolve_media,
    text_tokens,
)

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("id", "question", "options", "answer")
Modality = Literal["av", "a", "v"]
Target = Literal["trace", "none"]


def item_from_row(row: dict, base_dir: Path) -> McqItem:
    """A manifest row as an `McqItem` (fields checked by `avcot.manifest.mcq_fields`, the pipeline's schema too;
    ValueError saying what is wrong), media paths made absolute."""
    f = mcq_fields(row)
    return McqItem(id=f.id, question=f.question, options=f.options, answer=f.answer,
                   video=resolve_media(f.video, base_dir), audio=resolve_media(f.audio, base_dir),
                   image=resolve_media(f.image, base_dir), trace=f.trace, modality=f.modality,
                   difficulty=f.difficulty)


def drop_streams(item: McqItem, modality: Modality) -> McqItem:
    """The item with the streams `modality` excludes removed ('a': no video/image; 'v': no audio)."""
    from dataclasses import replace

    if modality == "av":
        return item
    if modality == "a":
        # Audio-only: keep the soundtrack of the video as the audio file, drop the pictures.
        return replace(item, video=None, image=None, audio=item.audio or item.video)
    if modality == "v":
        return replace(item, audio=None)
    raise ValueError(f"modality must be 'av', 'a' or 'v', got {modality!r}")


def target_text(item: McqItem, target: Target) -> str | None:
    """The assistant turn: the merged trace ('trace'), nothing ('none'); ValueError if the row lacks it."""
    if target == "none":
        return None
    if target == "trace":
        if item.trace is None:
            raise ValueError("target='trace' but the row has no merged trace")
        return item.trace
    raise ValueError(f"target must be 'trace' or 'none', got {target!r}")


def load_image(path: str, size: int) -> np.ndarray:
    """uint8 [size, size, 3] RGB image (resized square, size a multiple of 28)."""
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB").resize((size, size)), dtype=np.uint8)


def mcq_prompt_for(item: McqItem, settings: MediaSettings, modality: Modality) -> Prompt:
    """Decode the item's remaining streams (after `modality` dropping) into the AVRT student prompt."""
    from avcot.prompts import SYSTEM_PROMPT, mcq_student_prompt

    item = drop_streams(item, modality)
    frames, audio, fps = (None, None, 2.0)
    if item.video is not None or item.audio is not None:
        frames, audio, fps = load_av(item.video, item.audio, settings)
    if modality == "v":
        audio = None  # load_av reads the video's soundtrack when there is no audio file
    image = load_image(item.image, settings.frame_size) if item.image is not None else None
    return Prompt(instruction=mcq_student_prompt(item.question, item.options), system=SYSTEM_PROMPT,
                  video=frames, audio=audio, image=image, fps=fps)


def build_example(item: McqItem, *, processor, target: Target, settings: MediaSettings, modality: Modality,
                  use_audio_in_video: bool) -> Example:
    """One `Example` for `item`; `reference` is the gold letter."""
    prompt = mcq_prompt_for(item, settings, modality)
    enc = encode_example(processor, prompt, target_text(item, target), use_audio_in_video=use_audio_in_video)
    return Example(id=item.id, encoded=enc, reference=item.answer)


def item_length(item: McqItem, tokenizer, target: Target, modality: Modality, settings: MediaSettings) -> int:
    """Estimated tokens of the item's example that vary between items: question, options, target, media."""
    from avcot.length_batching import estimated_length, visual_tokens

    item = drop_streams(item, modality)
    texts = (item.question, *item.options, target_text(item, target))
    seconds = audio_seconds(item.audio, item.video) if modality != "v" else 0.0
    visual = (visual_tokens(settings.num_frames, settings.frame_size) if item.video else 0) + \
        (visual_tokens(2, settings.frame_size) if item.image else 0)
    return estimated_length(text_tokens(tokenizer, *texts), seconds, settings.max_seconds, visual)


def collate_mcq(items, pad_id: int, *, padding_side: str, hash_media: bool = False) -> dict | None:
    """`collate_examples` plus the gold letters as meta["answers"] (what accuracy_reward reads)."""
    batch = collate_examples(items, pad_id, padding_side=padding_side, hash_media=hash_media)
    if isinstance(batch, dict):
        batch["meta"]["answers"] = list(batch["meta"]["references"])
    return batch


def checked_item(row: dict, base_dir: Path, target: Target) -> McqItem:
    """The row's `McqItem` after the up-front checks (fields, target, media files); `StageError` naming the stage."""
    item = item_from_row(row, base_dir)
    try:
        target_text(item, target)
    except ValueError as e:
        raise StageError("target", str(e)) from e
    problem = media_problem([item.video, item.audio], [item.image])
    if problem is not None:
        raise StageError("media", problem)
    return item


def prepare_items(path: str | Path, *, target: Target, policy: BadRowPolicy,
                  rejects: RejectLog | None) -> tuple[list[ManifestRow], RowCounts]:
    """Read + check an MCQ manifest: the rows that passed (items are `McqItem`s), and the up-front row counts."""
    path = Path(path).expanduser().resolve()
    kept, rows_in = load_manifest(path, required=REQUIRED_COLUMNS, policy=policy, rejects=rejects,
                                  build=partial(checked_item, base_dir=path.parent, target=target))
    counts = RowCounts(rows_in=rows_in, rows_used=len(kept), rows_rejected=rows_in - len(kept))
    log.info("manifest %s: rows_in=%d rows_used=%d rows_rejected=%d (before decoding)", path, counts.rows_in,
             counts.rows_used, counts.rows_rejected)
    return kept, counts


class McqDataModule(ManifestDataModule):
    """AVRT multiple-choice questions for the SFT cold start (merged traces), GRPO and per-modality eval."""

    def __init__(
        self,
        train_manifest: str | None = None,
        val_manifest: str | None = None,
        test_manifest: str | None = None,
        processor: str = "tiny",
        target: Target = "trace",
        modality: Modality = "av",
        val_fraction: float = 0.0,
        split_column: str | None = None,
        seed: int = 0,
        batch_size: int = 2,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        num_frames: int = 4,
        frame_size: int = 112,
        max_seconds: float = 30.0,
        use_audio_in_video: bool = False,
        on_bad_row: BadRowPolicy = "skip",
        rejects_path: str | None = None,
        check_media: bool = False,
        group_by_length: bool = False,
        hash_media: bool = False,
    ):
        """
        Args:
            train_manifest: Parquet/JSONL MCQ manifest for training.
            val_manifest: Manifest for validation; when None, `val_fraction` of the train rows is held out.
            test_manifest: Manifest for `test` and `predict` (falls back to the validation rows).
            processor: "tiny" or a Qwen2.5-Omni checkpoint directory; must match the model's base.
            target: "trace" = merged <think>/<answer> trace as the SFT target; "none" = prompt-only, left-padded
                batches (GRPO rollouts, eval).
            modality: "av" keeps all streams; "a" drops video/image; "v" drops audio (per-modality eval).
            val_fraction: Fraction of train rows (or groups) held out when no val_manifest is given.
            split_column: Column kept on one side of the split (e.g. the source clip); ignored when absent.
            seed: Seed of the split and the per-epoch shuffle.
            batch_size: Training batch size per device (prompts, for GRPO).
            eval_batch_size: Batch size for val/test/predict (defaults to batch_size).
            num_workers: DataLoader workers decoding media.
            num_frames: Frames sampled uniformly per clip (even; the AVRT teachers use 8).
            frame_size: Square frame side in pixels (multiple of 28).
            max_seconds: Clip length cap (the AVRT audio teacher hears 10 s).
            use_audio_in_video: Interleave the video's audio with its frames (Qwen2.5-Omni layout).
            on_bad_row: "skip" writes rejects and carries on; "error" raises naming the manifest file and row.
            rejects_path: Rejects JSONL; default `<trainer log dir>/rejects.jsonl`.
            check_media: Decode (and encode) every row in setup, in `num_workers` workers, so rows whose media
                fail to decode are rejected before training and rows_used/rows_rejected are final from the
                start. Off: media files must exist (video/audio with readable headers) up front, and a row
                that fails to decode is rejected when an epoch first reaches it.
            group_by_length: Training batches of similar length (question, options, target, audio seconds and
                pictures, estimated without decoding), shuffled per epoch: less padding (speed lever).
            hash_media: Put the encoder-cache keys of each batch's media in batch["meta"]["media_keys"], hashed in
                the DataLoader workers (pair it with the SFT module's `encoder_cache_dir`; without it the module
                hashes in the training step).
        """
        super().__init__()
        self.save_hyperparameters()
        if modality not in ("av", "a", "v"):
            raise ValueError(f"modality must be 'av', 'a' or 'v', got {modality!r}")
        if target not in ("trace", "none"):
            raise ValueError(f"target must be 'trace' or 'none', got {target!r}")
        self.media = MediaSettings(num_frames=num_frames, frame_size=frame_size, max_seconds=max_seconds)
        self.datasets: dict[str, ExampleDataset] = {}

    def _items(self, path: str, target: Target) -> list[ManifestRow]:
        source = str(Path(path).expanduser().resolve())
        kept, counts = prepare_items(source, target=target, policy=self.hparams.on_bad_row, rejects=self.rejects)
        self.rows_in[source] = counts.rows_in
        return require_rows(kept, counts, path, self.rejects)

    def _dataset(self, rows: list[ManifestRow], path: str, target: Target) -> ExampleDataset:
        hp = self.hparams
        source = str(Path(path).expanduser().resolve())
        build = partial(_build_from_row, items={r.item.id: r.item for r in rows}, processor=self.processor,
                        target=target, settings=self.media, modality=hp.modality,
                        use_audio_in_video=hp.use_audio_in_video)
        return ExampleDataset(self.decoded_rows(rows, build, source), build, source=source, policy=hp.on_bad_row)

    def setup(self, stage: str | None = None) -> None:
        hp = self.hparams
        self.attach_report()
        if stage in ("fit", "validate", None) and "train" not in self.datasets and hp.train_manifest:
            rows = self._items(hp.train_manifest, hp.target)
            if hp.val_manifest:
                train, val = rows, self._items(hp.val_manifest, hp.target)
            else:
                train, val = self.split(rows)
            self.datasets["train"] = self._dataset(train, hp.train_manifest, hp.target)
            self.records["train"] = self.items(train, self.datasets["train"])
            self.datasets["val"] = self._dataset(val, hp.val_manifest or hp.train_manifest, hp.target)
        if stage in ("test", "predict") and stage not in self.datasets:
            path = hp.test_manifest or hp.val_manifest
            if not path:
                raise ValueError(f"{stage} needs a manifest: set data.test_manifest in the config")
            # Evaluation always generates: prompt-only, left-padded.
            self.datasets[stage] = self._dataset(self._items(path, "none"), path, "none")

    def record_length(self, record: McqItem, tokenizer) -> int:
        return item_length(record, tokenizer, self.hparams.target, self.hparams.modality, self.media)

    def _loader(self, split: str, *, shuffle: bool) -> DataLoader:
        hp = self.hparams
        prompt_only = split in ("test", "predict") or hp.target == "none"
        bs = hp.batch_size if split == "train" else (hp.eval_batch_size or hp.batch_size)
        collate = partial(collate_mcq, pad_id=self.processor.tokenizer.pad_token_id,
                          padding_side="left" if prompt_only else "right", hash_media=self.hash_media)
        return self.row_loader(split, bs, collate, shuffle=shuffle)


def _build_from_row(row: dict, *, items: dict[str, McqItem], **kwargs) -> Example:
    return build_example(items[str(row["id"])], **kwargs)
