"""CAVSR DataModule: wires `avcot.data.cavsr` (manifest rows -> `Clip` -> media -> student prompt -> encoded
example) into Lightning's fit / validate / test / predict.

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

from collections.abc import Callable
from functools import partial

from avcot.batch import collate_batch
from avcot.data.cavsr import CavsrTask, Target
from avcot.data.clips import CAVSR_MEDIA, MediaSettings, VideoMode
from avcot.data.examples import ExampleDataset
from avcot.data.rows import BadRowPolicy
from datamodules.base import ManifestDataModule


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
        num_frames: int = CAVSR_MEDIA.num_frames,
        frame_size: int = CAVSR_MEDIA.frame_size,
        max_seconds: float = CAVSR_MEDIA.max_seconds,
        video: VideoMode = "true",
        use_audio_in_video: bool = False,
        on_bad_row: BadRowPolicy = "skip",
        rejects_path: str | None = None,
        check_media: bool = False,
        group_by_length: bool = False,
        hash_media: bool = False,
        cache_examples: bool = False,
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
            hash_media: Put the encoder-cache keys of each batch's media in `Batch.media_keys`, hashed in
                the DataLoader workers (pair it with the SFT module's `encoder_cache_dir`; without it the module
                hashes in the training step).
            cache_examples: Keep each decoded example in memory after its first use, so later epochs skip
                decoding (small datasets trained for many epochs, e.g. bench/learn_cavsr.py). Memory grows
                with the dataset; with `num_workers` > 0 the workers persist across epochs to keep their
                caches. A "random" video partner is then drawn once per row, not once per epoch.
        """
        super().__init__()
        self.save_hyperparameters()
        self.media = MediaSettings(num_frames=num_frames, frame_size=frame_size, max_seconds=max_seconds, video=video)
        self.task = CavsrTask(target=target, media=self.media, use_audio_in_video=use_audio_in_video, seed=seed)
        if on_bad_row not in ("skip", "error"):
            raise ValueError(f"on_bad_row must be 'skip' or 'error', got {on_bad_row!r}")
        self.datasets: dict[str, ExampleDataset] = {}

    def stage_manifest(self, stage: str) -> str:
        hp = self.hparams
        if stage == "test":
            path = hp.test_manifest or hp.val_manifest
        else:
            path = hp.predict_manifest or hp.test_manifest or hp.val_manifest or hp.train_manifest
        if not path:
            raise ValueError(f"{stage} needs a manifest: set data.{stage}_manifest in the config")
        return path

    def collate_fn(self, split: str) -> Callable:
        # Left padding for predict: generated tokens must follow each row's last prompt token.
        padding_side = "left" if split == "predict" else "right"
        pad = self.processor.tokenizer.pad_token_id
        return partial(collate_batch, pad_id=pad, padding_side=padding_side, hash_media=self.hash_media)
