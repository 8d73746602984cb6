"""MCQ (AVRT) DataModule: wires `avcot.data.mcq` (manifest rows -> `McqItem` -> media -> student prompt ->
encoded example) into Lightning's fit / validate / test / predict.

Manifest (Parquet or JSONL, the layout `avcot.synth --mcq` writes): id, question, options (2-4 strings, letter
order), answer (letter), video / audio / image paths (relative = under the manifest's directory; a row with a
video and no audio takes the video's own audio stream), optional trace (merged `<think>…</think><answer>X</answer>`),
modality, difficulty.

Targets: `target="trace"` trains on each row's merged trace (SFT cold start; rows without one are rejected);
`target="none"` gives prompt-only, LEFT-padded batches for GRPO rollouts, eval and predict. Every batch
is an `avcot.batch.Batch` whose `answers` (= `references`) are the gold letters `avcot.rewards.accuracy_reward` reads.

`modality` drops streams for the per-modality evaluation (`avcot.data.mcq.drop_streams`).
"""
from __future__ import annotations

from collections.abc import Callable
from functools import partial

from avcot.batch import collate_batch
from avcot.data.clips import MCQ_MEDIA, MediaSettings
from avcot.data.examples import ExampleDataset
from avcot.data.mcq import McqTask, Modality, Target
from avcot.data.rows import BadRowPolicy
from datamodules.base import ManifestDataModule


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
        num_frames: int = MCQ_MEDIA.num_frames,
        frame_size: int = MCQ_MEDIA.frame_size,
        max_seconds: float = MCQ_MEDIA.max_seconds,
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
            num_frames: Frames sampled uniformly per clip (even; 8, what the AVRT teachers see, by default).
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
        self.media = MediaSettings(num_frames=num_frames, frame_size=frame_size, max_seconds=max_seconds)
        self.task = McqTask(target=target, modality=modality, media=self.media, use_audio_in_video=use_audio_in_video)
        self.datasets: dict[str, ExampleDataset] = {}

    generating_stages = ("test", "predict")  # evaluation always generates: prompt-only, left-padded

    def stage_manifest(self, stage: str) -> str:
        path = self.hparams.test_manifest or self.hparams.val_manifest
        if not path:
            raise ValueError(f"{stage} needs a manifest: set data.test_manifest in the config")
        return path

    def collate_fn(self, split: str) -> Callable:
        prompt_only = split in self.generating_stages or self.hparams.target == "none"
        # the references are the gold letters: Batch.answers, what accuracy_reward reads
        return partial(collate_batch, pad_id=self.processor.tokenizer.pad_token_id,
                       padding_side="left" if prompt_only else "right", hash_media=self.hash_media, gold_letters=True)
