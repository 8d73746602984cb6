"""CAVSR DataModule: manifest rows -> `Clip` -> media -> student prompt -> encoded example -> batch.

Manifest (Parquet or JSONL): columns id, video, audio, text, pinyin, cue, and optionally trace and
sentence_id. Relative media paths are relative to the manifest's directory. Each row becomes an
`avcot.records.Clip`; its media are decoded in `Dataset.__getitem__` (nothing cached), and the prompt is
the student CAVSR instruction from `avcot.prompts` under `avcot.prompts.SYSTEM_PROMPT`.

Targets: `target="avcot"` trains on the row's AV-CoT trace (a row without one is rejected, never
silently trained on its transcript); `target="transcript"` trains on the plain transcript with the plain
instruction (the paper's "w/o AV-CoT" ablation). Predict batches are left-padded and carry no target.

Bad rows follow `on_bad_row`: "skip" writes one line per reject (row id, stage, reason naming the line,
source file) to `<run_dir>/rejects.jsonl` and carries on; "error" raises naming the manifest file, row and
line. Rows are checked up front (each line readable, the `avcot.manifest` field schema shared with the
pipeline, unique ids, target, media files present with readable headers); a clip that still fails to decode
is rejected when it is first decoded, or up front with `check_media: true`. rows_in = rows_used +
rows_rejected per manifest is printed at each epoch end and at the end of the run (`datamodules.report`).
"""
from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Literal

from torch.utils.data import DataLoader

from avcot.chat import Prompt, encode_example
from avcot.manifest import cavsr_fields
from avcot.records import Clip
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
    VideoMode,
    audio_seconds,
    collate_examples,
    load_av,
    load_manifest,
    media_problem,
    require_rows,
    resolve_media,
    stable_seed,
    text_tokens,
)

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("id", "video", "text")
Target = Literal["avcot", "transcript"]


def clip_from_row(row: dict, base_dir: Path) -> Clip:
    """A manifest row as a `Clip` (fields checked by `avcot.manifest.cavsr_fields`, the pipeline's schema
    too; ValueError saying what is wrong), media paths made absolute (relative = under the manifest's dir)."""
    f = cavsr_fields(row)
    return Clip(id=f.id, video=resolve_media(f.video, base_dir), audio=resolve_media(f.audio, base_dir),
                text=f.text, pinyin=f.pinyin, cue=f.cue, trace=f.trace)


def target_text(clip: Clip, target: Target) -> str:
    """The assistant turn to train on; raises ValueError when the row cannot supply it."""
    if target == "transcript":
        return clip.text
    if target == "avcot":
        if clip.trace is None:
            raise ValueError("target='avcot' but the row has no trace (use target='transcript' for plain SFT)")
        return clip.trace
    raise ValueError(f"target must be 'avcot' or 'transcript', got {target!r}")


def random_partner(clip: Clip, clips: Sequence[Clip], seed: int) -> str | None:
    """Video of another clip for the 'random video' ablation; fixed per (clip id, seed) across runs."""
    from avcot.media import random_video

    ids = [c.id for c in clips]
    index = ids.index(clip.id)
    return clips[random_video(ids, index, random.Random(seed * 1_000_003 + stable_seed(clip.id)))].video


def student_prompt_for(clip: Clip, target: Target, settings: MediaSettings, other_video: str | None = None) -> Prompt:
    """Decode the clip's media and wrap it in the student CAVSR prompt."""
    from avcot.prompts import SYSTEM_PROMPT, student_prompt

    frames, audio, fps = load_av(clip.video, clip.audio, settings, other_video=other_video)
    kind = "avcot" if target == "avcot" else "plain"
    return Prompt(instruction=student_prompt(kind), system=SYSTEM_PROMPT, video=frames, audio=audio, fps=fps)


def build_example(clip: Clip, *, processor, target: Target, settings: MediaSettings, use_audio_in_video: bool,
                  with_target: bool = True, other_video: str | None = None) -> Example:
    """One `Example` for `clip` (no assistant turn when `with_target` is False: predict/generation)."""
    prompt = student_prompt_for(clip, target, settings, other_video)
    text = target_text(clip, target) if with_target else None
    enc = encode_example(processor, prompt, text, use_audio_in_video=use_audio_in_video)
    return Example(id=clip.id, encoded=enc, reference=clip.text)


def clip_length(clip: Clip, tokenizer, target: Target, settings: MediaSettings) -> int:
    """Estimated tokens of the clip's example that vary between clips: its target text, audio and video."""
    from avcot.length_batching import estimated_length, visual_tokens

    video = clip.video is not None and settings.video != "none"
    visual = visual_tokens(settings.num_frames, settings.frame_size) if video else 0
    return estimated_length(text_tokens(tokenizer, target_text(clip, target)),
                            audio_seconds(clip.audio, clip.video), settings.max_seconds, visual)


def checked_clip(row: dict, base_dir: Path, target: Target | None) -> Clip:
    """The row's `Clip` after the up-front checks (fields, target, media files); `StageError` naming the stage."""
    clip = clip_from_row(row, base_dir)
    if target is not None:
        try:
            target_text(clip, target)
        except ValueError as e:
            raise StageError("target", str(e)) from e
    problem = media_problem([clip.video, clip.audio])
    if problem is not None:
        raise StageError("media", problem)
    return clip


def prepare_clips(path: str | Path, *, target: Target | None, policy: BadRowPolicy,
                  rejects: RejectLog | None) -> tuple[list[ManifestRow], RowCounts]:
    """Read + check a CAVSR manifest: the rows that passed (items are `Clip`s), and the up-front row counts.

    `target=None` skips the target check (predict needs no trace).
    """
    path = Path(path).expanduser().resolve()
    kept, rows_in = load_manifest(path, required=REQUIRED_COLUMNS, build=partial(checked_clip, base_dir=path.parent,
                                  target=target), policy=policy, rejects=rejects)
    counts = RowCounts(rows_in=rows_in, rows_used=len(kept), rows_rejected=rows_in - len(kept))
    log.info("manifest %s: rows_in=%d rows_used=%d rows_rejected=%d (before decoding)", path, counts.rows_in,
             counts.rows_used, counts.rows_rejected)
    return kept, counts


class CavsrDataModule(ManifestDataModule):
    """CAVSR clips for LoRA SFT, validation, test and predict."""

    def __init__(
        self,
        train_manifest: str | None = None,
        val_manifest: str | None = None,
        test_manifest: str | None = None,
        predict_manifest: str | None = None,
        processor: str = "tiny",
        target: Target = "avcot",
        val_fraction: float = 0.1,
        split_column: str | None = "sentence_id",
        seed: int = 0,
        batch_size: int = 2,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        num_frames: int = 4,
        frame_size: int = 112,
        max_seconds: float = 30.0,
        video: VideoMode = "true",
        use_audio_in_video: bool = False,
        on_bad_row: BadRowPolicy = "skip",
        rejects_path: str | None = None,
        check_media: bool = False,
        group_by_length: bool = False,
        hash_media: bool = False,
    ):
        """
        Args:
            train_manifest: Parquet/JSONL manifest for training (fit).
            val_manifest: Manifest for validation; when None, `val_fraction` of the train rows is held out.
            test_manifest: Manifest for `test` (falls back to the validation rows).
            predict_manifest: Manifest for `predict` (falls back to test, then validation rows).
            processor: "tiny" or a Qwen2.5-Omni checkpoint directory; must match the model's base.
            target: "avcot" trains on each row's trace (rows without one are rejected); "transcript" trains on
                the plain transcript with the plain instruction (the w/o AV-CoT ablation).
            val_fraction: Fraction of train rows (or sentence groups) held out when no val_manifest is given.
            split_column: Column whose values are kept on one side of the split (unseen val sentences); ignored
                when absent from the manifest.
            seed: Seed of the train/val split and of the per-epoch shuffle.
            batch_size: Training batch size per device.
            eval_batch_size: Batch size for val/test/predict (defaults to batch_size).
            num_workers: DataLoader workers decoding media (0 = in the main process).
            num_frames: Frames sampled uniformly per clip (even).
            frame_size: Square frame side in pixels (multiple of 28).
            max_seconds: Clip length cap for audio and video.
            video: Video ablation: "true" | "black" | "random" | "none" (audio only).
            use_audio_in_video: Interleave audio with the video frames (Qwen2.5-Omni layout); travels in each batch.
            on_bad_row: "skip" writes rejects and carries on; "error" raises naming the manifest file and row.
            rejects_path: Rejects JSONL; default `<trainer log dir>/rejects.jsonl` (only logged without a trainer).
            check_media: Decode (and encode) every row in setup, in `num_workers` workers, so rows whose media
                fail to decode are rejected before training and rows_used/rows_rejected are final from the
                start (one extra decode pass). Off: files must exist with readable headers up front, and a
                clip that fails to decode is rejected when an epoch first reaches it.
            group_by_length: Training batches of similar length (target tokens + audio seconds, estimated from
                the text and the media headers), shuffled per epoch: less padding (speed lever, bench/README.md).
            hash_media: Put the encoder-cache keys of each batch's media in batch["meta"]["media_keys"], hashed in
                the DataLoader workers (pair it with the SFT module's `encoder_cache_dir`; without it the module
                hashes in the training step).
        """
        super().__init__()
        self.save_hyperparameters()
        self.media = MediaSettings(num_frames=num_frames, frame_size=frame_size, max_seconds=max_seconds, video=video)
        if target not in ("avcot", "transcript"):
            raise ValueError(f"target must be 'avcot' or 'transcript', got {target!r}")
        if on_bad_row not in ("skip", "error"):
            raise ValueError(f"on_bad_row must be 'skip' or 'error', got {on_bad_row!r}")
        self.datasets: dict[str, ExampleDataset] = {}

    # -- helpers -------------------------------------------------------------------------------------------

    def _clips(self, path: str, with_target: bool) -> list[ManifestRow]:
        source = str(Path(path).expanduser().resolve())
        kept, counts = prepare_clips(source, target=self.hparams.target if with_target else None,
                                     policy=self.hparams.on_bad_row, rejects=self.rejects)
        self.rows_in[source] = counts.rows_in
        return require_rows(kept, counts, path, self.rejects)

    def _builder(self, clips: list[Clip], with_target: bool, settings: MediaSettings | None = None) -> _RowBuilder:
        return _RowBuilder(clips, self.hparams.seed, processor=self.processor, target=self.hparams.target,
                           settings=settings or self.media, use_audio_in_video=self.hparams.use_audio_in_video,
                           with_target=with_target)

    def _dataset(self, rows: list[ManifestRow], path: str, with_target: bool = True) -> ExampleDataset:
        source = str(Path(path).expanduser().resolve())
        # The decode check reads each clip's own frames: a 'random' partner is drawn among the rows that pass.
        own = replace(self.media, video="true") if self.media.video == "random" else self.media
        rows = self.decoded_rows(rows, self._builder([r.item for r in rows], with_target, own), source)
        return ExampleDataset(rows, self._builder([r.item for r in rows], with_target), source=source,
                              policy=self.hparams.on_bad_row)

    # -- Lightning hooks -----------------------------------------------------------------------------------

    def setup(self, stage: str | None = None) -> None:
        hp = self.hparams
        self.attach_report()
        if stage in ("fit", "validate", None) and "train" not in self.datasets and hp.train_manifest:
            rows = self._clips(hp.train_manifest, True)
            if hp.val_manifest:
                train, val = rows, self._clips(hp.val_manifest, True)
            else:
                train, val = self.split(rows)
            self.datasets["train"] = self._dataset(train, hp.train_manifest)
            self.records["train"] = self.items(train, self.datasets["train"])
            self.datasets["val"] = self._dataset(val, hp.val_manifest or hp.train_manifest)
        if stage == "validate" and "val" not in self.datasets and hp.val_manifest:
            self.datasets["val"] = self._dataset(self._clips(hp.val_manifest, True), hp.val_manifest)
        if stage == "test" and "test" not in self.datasets:
            self.datasets["test"] = self._stage_dataset(hp.test_manifest or hp.val_manifest, "test", True)
        if stage == "predict" and "predict" not in self.datasets:
            path = hp.predict_manifest or hp.test_manifest or hp.val_manifest or hp.train_manifest
            self.datasets["predict"] = self._stage_dataset(path, "predict", False)

    def _stage_dataset(self, path: str | None, stage: str, with_target: bool) -> ExampleDataset:
        if not path:
            raise ValueError(f"{stage} needs a manifest: set data.{stage}_manifest in the config")
        return self._dataset(self._clips(path, with_target), path, with_target)

    def record_length(self, record: Clip, tokenizer) -> int:
        return clip_length(record, tokenizer, self.hparams.target, self.media)

    def _loader(self, split: str, *, shuffle: bool, padding_side: str = "right") -> DataLoader:
        bs = self.hparams.batch_size if split == "train" else (self.hparams.eval_batch_size or self.hparams.batch_size)
        pad = self.processor.tokenizer.pad_token_id
        return self.row_loader(split, bs, partial(collate_examples, pad_id=pad, padding_side=padding_side,
                                                  hash_media=self.hash_media), shuffle=shuffle)

    def predict_dataloader(self) -> DataLoader:
        # Left padding: generated tokens must follow each row's last prompt token.
        return self._loader("predict", shuffle=False, padding_side="left")


class _RowBuilder:
    """Picklable row -> Example function for DataLoader workers (clips indexed once, not per item)."""

    def __init__(self, clips: list[Clip], seed: int, **kwargs):
        self.clips, self.seed, self.kwargs = clips, seed, kwargs
        self.by_id = {c.id: c for c in clips}

    def __call__(self, row: dict) -> Example:
        clip = self.by_id[str(row["id"])]
        other = random_partner(clip, self.clips, self.seed) if self.kwargs["settings"].video == "random" else None
        return build_example(clip, other_video=other, **self.kwargs)
