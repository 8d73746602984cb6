"""Generic manifest -> dataset plumbing shared by every DataModule (CAVSR, MCQ/AVRT) and by eval/demo.

What lives here (none of it knows about a particular task):
- `load_manifest(path, ...)`: the manifest read line by line (`avcot.manifest.read_manifest`: a line that is not
  UTF-8, not JSON or not an object is that line's reject), each record checked and typed by the DataModule's
  `build` (the field schema of `avcot.manifest`, shared with the pipeline), duplicate ids refused. Rejects
  name the line; a missing required column is a structural error.
- `RejectLog` + `reject_or_raise`: the on_bad_row policy. "skip" appends one JSONL line per bad row
  (row_id, stage, reason, source) and counts it once per (manifest, line); "error" raises `BadRowError`
  naming manifest file, row and line.
- `resolve_media(value, base_dir)`: relative media paths are relative to the manifest's directory;
  `media_problem(...)`: the cheap up-front media check (files exist, headers readable).
- `load_av(...)`: frames (uniformly sampled, size a multiple of 28, even count) + 16 kHz audio, with the
  video ablations "true" | "black" | "random" (another clip's frames) | "none" (audio only);
  fps = num_frames / clip duration.
- `split_rows(...)`: seeded train/val split by a fraction, optionally by a group column (e.g. sentence_id)
  so that validation sentences are unseen in training.
- `ExampleDataset`: decodes media in `__getitem__` (nothing is cached); a decode failure is a `Skipped`
  marker (skip) or a `BadRowError` (error). `collate_examples` drops the skipped rows, keeps ids in
  `batch["ids"]` and carries the `Skipped` to the main process (`datamodules.loader.RowLoader` records them).
- `EpochSeededSampler`: a shuffle that depends only on (seed, epoch); with `RowLoader` a run resumed from a
  checkpoint sees the same batches as an uninterrupted one.
"""
from __future__ import annotations

import json
import logging
import math
import random
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from avcot.chat import PATCH_FACTOR, Encoded, collate
from avcot.manifest import read_manifest
from avcot.records import Reject

log = logging.getLogger(__name__)

BadRowPolicy = Literal["skip", "error"]
VideoMode = Literal["true", "black", "random", "none"]


class BadRowError(ValueError):
    """A manifest row (or its media) is unusable and on_bad_row="error"."""


@dataclass(frozen=True)
class RowCounts:
    """How many manifest rows came in, were used, and were rejected (rows_in = rows_used + rows_rejected)."""

    rows_in: int
    rows_used: int
    rows_rejected: int


@dataclass(frozen=True)
class Example:
    """One encoded dataset item; `id` travels to the batch (batch["ids"]) for predictions and rejects."""

    id: str
    encoded: Encoded
    reference: str = ""
    """Reference text (transcript / answer letter), kept for eval; never fed to the model."""


# ----------------------------------------------------------------------------------------------- manifests


class StageError(ValueError):
    """A row check failed at a named stage ("manifest", "target", "media"); the message is the reason."""

    def __init__(self, stage: str, reason: str):
        super().__init__(reason)
        self.stage = stage


@dataclass(frozen=True)
class ManifestRow:
    """A manifest row that passed the up-front checks: its line, the raw record and the typed item built from it."""

    line: int
    record: dict
    item: Any
    """The `Clip` / `McqItem` the DataModule built (its `.id` is the row id)."""


class RejectLog:
    """Rejects JSONL (one `Reject` per line) and the count of rejected rows per manifest.

    A row is recorded once per (manifest, line) however often it fails (every epoch, on several ranks);
    `rejected(source)` counts those rows. Thread-safe; lines are written whole and flushed.
    """

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path is not None else None
        self.count = 0
        self.lines: dict[str, set[int]] = {}
        """Rejected line numbers per manifest (source)."""
        self._lock = threading.Lock()

    def add(self, reject: Reject, line: int | None = None) -> bool:
        """Record `reject` (of manifest line `line`); False when that row was already recorded."""
        with self._lock:
            if line is not None:
                seen = self.lines.setdefault(reject.source, set())
                if line in seen:
                    return False
                seen.add(line)
            self.count += 1
            log.warning("rejected row %s from %s at %s: %s", reject.row_id, reject.source, reject.stage,
                        reject.reason)
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with self.path.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(asdict(reject), ensure_ascii=False) + "\n")
            return True

    def rejected(self, source: str) -> int:
        """Rows of manifest `source` rejected so far (each row once)."""
        return len(self.lines.get(source, ()))


def require_rows(kept: list, counts: RowCounts, path: str, rejects: RejectLog) -> list:
    """`kept` unchanged, or a clear error when every row of the manifest was rejected.

    Training on an empty set would "succeed" with zero steps; say which file and where the reasons are.
    """
    if not kept:
        where = f"; reasons in {rejects.path}" if rejects.path else ""
        raise BadRowError(f"{path}: no usable rows: all {counts.rows_in} rows were rejected{where}")
    return kept


def reject_or_raise(reject: Reject, policy: BadRowPolicy, rejects: RejectLog | None, line: int | None = None) -> None:
    """Apply the bad-row policy: raise naming file and row ("error"), or record the reject ("skip")."""
    if policy == "error":
        raise BadRowError(f"{reject.source}: row {reject.row_id}: {reject.stage}: {reject.reason}")
    if policy != "skip":
        raise ValueError(f"on_bad_row must be 'skip' or 'error', got {policy!r}")
    if rejects is not None:
        rejects.add(reject, line)


def check_columns(records: Sequence[dict], required: Iterable[str], source: str) -> None:
    """Missing required columns is a structural error (never skippable): every row would be rejected."""
    present = set().union(*(r.keys() for r in records))
    missing = [c for c in required if c not in present]
    if records and missing:
        raise ValueError(f"manifest {source!r} lacks required column(s) {missing}; it has {sorted(present)}")


def load_manifest(path: Path, *, required: Iterable[str], build: Callable[[dict], Any], policy: BadRowPolicy,
                  rejects: RejectLog | None) -> tuple[list[ManifestRow], int]:
    """(rows that passed, rows_in) of a manifest read line by line (`avcot.manifest.read_manifest`).

    `build(record)` returns the typed item or raises ValueError (`StageError` to name the stage). An
    unreadable line, a failed check or a duplicate id is a reject naming the line (or an error, per
    `policy`); a missing required column or a file with no rows at all is a structural error.
    """
    source = str(path)
    entries = read_manifest(path)
    if not entries:
        raise ValueError(f"manifest {source!r} has no rows")
    check_columns([e.record for e in entries if e.record is not None], required, source)
    kept: list[ManifestRow] = []
    seen: set[str] = set()
    for e in entries:
        rid = row_label(e.record or {}, e.line)
        try:
            if e.error is not None:
                raise StageError("manifest", e.error)
            item = build(e.record)
            if item.id in seen:
                raise StageError("manifest", f"duplicate id {item.id!r}")
        except ValueError as exc:
            stage = exc.stage if isinstance(exc, StageError) else "manifest"
            reject_or_raise(Reject(rid, stage, f"line {e.line}: {exc}", source), policy, rejects, e.line)
            continue
        seen.add(item.id)
        kept.append(ManifestRow(e.line, e.record, item))
    return kept, len(entries)


def row_label(row: dict, line: int) -> str:
    """How a row is named in errors and rejects: its id when it has a usable one, else its line."""
    rid = row.get("id")
    return str(rid) if isinstance(rid, str | int) and str(rid).strip() else f"line {line}"


def media_problem(media: Sequence[str | None], files: Sequence[str | None] = ()) -> str | None:
    """Why a row's media cannot be used up front, or None: a file is missing, or a video/audio file in
    `media` has unreadable headers (`avcot.media.probe`, cached per file). `files` (images) must only exist.
    Decoding can still fail later (a truncated stream): `check_media` decodes every row to find those."""
    from avcot import media as av

    for p in [*media, *files]:
        if p is not None and not Path(p).is_file():
            return f"media file {p!r} does not exist"
    for p in media:
        if p is None:
            continue
        try:
            av.probe(p)
        except Exception as e:  # noqa: BLE001 - any probe failure means the file is unusable
            return f"media file {p!r} cannot be read: {e}"
    return None


def resolve_media(value: Any, base_dir: Path) -> str | None:
    """Absolute media path for a manifest cell: None/empty stays None; relative is under the manifest's dir."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        raise ValueError(f"media path must be a string, got {type(value).__name__}")
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (base_dir / path))


# ------------------------------------------------------------------------------------------------ splits


def split_rows(rows: Sequence[dict], val_fraction: float, seed: int,
               group_column: str | None = None) -> tuple[list[dict], list[dict]]:
    """Seeded (train, val) split. With `group_column` present in the rows, whole groups go to one side.

    At least one row (group) goes to val whenever val_fraction > 0 and there are two or more.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    use_groups = group_column is not None and all(r.get(group_column) is not None for r in rows)
    keys = [str(r[group_column]) if use_groups else str(r["id"]) for r in rows]
    groups = sorted(set(keys))
    random.Random(seed).shuffle(groups)
    n_val = math.floor(len(groups) * val_fraction)
    if val_fraction > 0 and n_val == 0 and len(groups) > 1:
        n_val = 1
    val_keys = set(groups[:n_val])
    train = [r for r, k in zip(rows, keys) if k not in val_keys]
    val = [r for r, k in zip(rows, keys) if k in val_keys]
    return train, val


class EpochSeededSampler(Sampler[int]):
    """Shuffled (or ordered) indices that depend only on (seed, epoch); the global RNG is never touched.

    Lightning calls `set_epoch` before each epoch; `RowLoader` reads it when the epoch's first batch is
    taken and skips the batches a resumed checkpoint had already trained, so a resumed run draws the same
    order as an uninterrupted one.
    """

    def __init__(self, n: int, *, seed: int = 0, shuffle: bool = True):
        self.n, self.seed, self.shuffle, self.epoch = n, seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.n))
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


# ------------------------------------------------------------------------------------------------- media


@dataclass(frozen=True)
class MediaSettings:
    """How clips are decoded for the model."""

    num_frames: int = 4
    """Frames sampled uniformly over the clip (even: Qwen's temporal patch is 2)."""
    frame_size: int = 112
    """Square frame side in pixels (multiple of 28)."""
    max_seconds: float = 30.0
    """Clip length cap for both streams (Whisper features cover 30 s)."""
    video: VideoMode = "true"
    """'true' real frames; 'black' all-zero frames; 'random' another clip's frames; 'none' audio only."""

    def __post_init__(self):
        if self.num_frames < 2 or self.num_frames % 2:
            raise ValueError(f"num_frames must be even and >= 2, got {self.num_frames}")
        if self.frame_size % PATCH_FACTOR or self.frame_size <= 0:
            raise ValueError(f"frame_size must be a positive multiple of {PATCH_FACTOR}, got {self.frame_size}")
        if self.video not in ("true", "black", "random", "none"):
            raise ValueError(f"video must be one of true|black|random|none, got {self.video!r}")


def stable_seed(text: str) -> int:
    """A process-independent seed from a row id (Python's hash() is salted per process)."""
    import zlib

    return zlib.crc32(text.encode("utf-8"))


def load_av(video: str | None, audio: str | None, settings: MediaSettings, *,
            other_video: str | None = None) -> tuple[np.ndarray | None, np.ndarray | None, float]:
    """(frames uint8 [T,S,S,3] | None, waveform float32 16 kHz | None, fps) for one clip.

    Audio comes from `audio` when given, else from the video's own audio stream. fps = T / clip
    duration (duration capped at max_seconds), which sets the temporal M-RoPE positions. Ablations:
    "black" zeroes the frames, "random" uses the frames of `other_video` (another clip, chosen by the
    caller) at this clip's fps, "none" drops the video. Raises `avcot.media.MediaError` naming the file.
    """
    from avcot import media

    s = settings
    source = audio or video
    waveform = media.load_audio(source, sr=16000, max_seconds=s.max_seconds) if source else None
    if video is None or s.video == "none":
        return None, waveform, 2.0
    size = (s.frame_size, s.frame_size)
    frames = media.load_frames(video, num_frames=s.num_frames, size=size, max_seconds=s.max_seconds)
    duration = min(media.probe(video).duration_s, s.max_seconds)
    if duration <= 0 and waveform is not None:
        duration = len(waveform) / 16000
    fps = len(frames) / duration if duration > 0 else 2.0
    if s.video == "true":
        return frames, waveform, fps
    other = None
    if s.video == "random":
        if other_video is None:
            raise ValueError("video='random' needs another clip's video (other_video)")
        other = media.load_frames(other_video, num_frames=s.num_frames, size=size, max_seconds=s.max_seconds)
    # avcot.media names the no-ablation mode "none"; here "none" means no video at all (handled above).
    return media.ablate_video(frames, s.video, other), waveform, fps


def audio_seconds(audio: str | None, video: str | None) -> float:
    """Seconds of audio the model hears (the audio file, else the video's own soundtrack), from the headers.

    Only orders batches by length (`group_by_length`); a file that cannot be probed counts 0 s here and
    is rejected, with its reason, when its row is decoded.
    """
    from avcot import media

    for path in (audio, video):
        if not path:
            continue
        try:
            info = media.probe(path)
        except Exception:  # noqa: BLE001 - see the docstring: the decode step reports it
            return 0.0
        if info.has_audio:
            return info.duration_s
    return 0.0


def text_tokens(tokenizer, *texts: str | None) -> int:
    """Tokens of the given texts (None skipped), without special tokens."""
    return sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts if t)


# ----------------------------------------------------------------------------------------------- dataset


@dataclass(frozen=True)
class Skipped:
    """A row whose example could not be built ("skip" policy). Built in a loader worker, it travels in the
    batch to the main process, where `RowLoader` records it once in the `RejectLog` (workers cannot share
    one)."""

    line: int
    reject: Reject


@dataclass(frozen=True)
class SkippedBatch:
    """What `collate_examples` returns when every row of a batch was skipped; `RowLoader` turns it into None."""

    skipped: tuple[Skipped, ...]


class ExampleDataset(Dataset):
    """Manifest rows -> `Example`s via `build(record)`, decoded lazily in `__getitem__` (nothing cached).

    `build` may raise any exception for a bad row (media decode, missing target); with policy "skip"
    `__getitem__` returns a `Skipped` (the reject, recorded by the main process and dropped by
    `collate_examples`); with "error" a `BadRowError` names the manifest, row and line.
    """

    def __init__(self, rows: Sequence[ManifestRow], build: Callable[[dict], Example], *, source: str,
                 policy: BadRowPolicy = "skip", stage: str = "decode"):
        self.rows = [r.record for r in rows]
        """The raw records, in dataset order."""
        self.lines = [r.line for r in rows]
        self.build, self.source, self.policy, self.stage = build, source, policy, stage

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> Example | Skipped:
        row, line = self.rows[index], self.lines[index]
        try:
            return self.build(row)
        except Exception as e:  # noqa: BLE001 - any failure of one row is that row's reject
            rid = row_label(row, line)
            if self.policy == "error":
                raise BadRowError(f"{self.source}: row {rid}: {self.stage}: line {line}: {e}") from e
            return Skipped(line, Reject(rid, self.stage, f"line {line}: {type(e).__name__}: {e}", self.source))


def collate_examples(items: Sequence[Example | Skipped], pad_id: int, *, padding_side: str = "right",
                     hash_media: bool = False) -> dict | SkippedBatch:
    """`avcot.chat.collate` over the built items, ids in batch["ids"], skipped rows in batch["meta"]["skipped"].

    A batch whose rows were all skipped is a `SkippedBatch`. `hash_media`: also put the encoder-cache keys
    of the batch's media in batch["meta"]["media_keys"] (`avcot.thinker.encoder_cache.media_keys`), hashed
    here in the DataLoader worker, off the training path.
    """
    kept = [it for it in items if isinstance(it, Example)]
    skipped = [it for it in items if isinstance(it, Skipped)]
    if not kept:
        return SkippedBatch(tuple(skipped))
    batch = collate([it.encoded for it in kept], pad_id, padding_side=padding_side)
    batch["ids"] = [it.id for it in kept]
    batch["meta"] = {"references": [it.reference for it in kept], "skipped": skipped}
    if hash_media:
        from avcot.thinker.encoder_cache import media_keys

        batch["meta"]["media_keys"] = media_keys(batch)
    return batch
