"""Generic manifest -> dataset plumbing shared by every DataModule (CAVSR, MCQ/AVRT) and by eval/demo.

What lives here (none of it knows about a particular task):
- `read_manifest(path)`: Parquet or JSONL/JSON via polars, one dict per row, with a clear error naming the file.
- `validate_rows(...)`: required columns (structural: always an error), duplicate ids and empty/non-string
  text fields (per row: raised in "error" mode, recorded as a `Reject` in "skip" mode).
- `RejectLog` + `reject_or_raise`: the on_bad_row policy. "skip" appends one JSONL line per bad row
  (row_id, source, stage, reason) and carries on; "error" raises `BadRowError` naming manifest file and row.
- `resolve_media(value, base_dir)`: relative media paths are relative to the manifest's directory.
- `load_av(...)`: frames (uniformly sampled, size a multiple of 28, even count) + 16 kHz audio, with the
  video ablations "true" | "black" | "random" (another clip's frames) | "none" (audio only);
  fps = num_frames / clip duration.
- `split_rows(...)`: seeded train/val split by a fraction, optionally by a group column (e.g. sentence_id)
  so that validation sentences are unseen in training.
- `ExampleDataset`: decodes media in `__getitem__` (nothing is cached), turns decode failures into rejects
  or errors; `collate_examples` drops skipped rows and keeps ids in `batch["ids"]`.
- `EpochSeededSampler`: a shuffle that depends only on (seed, epoch), so a run resumed from a checkpoint
  sees the same batches as an uninterrupted one.
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
from avcot.records import Reject

log = logging.getLogger(__name__)

BadRowPolicy = Literal["skip", "error"]
VideoMode = Literal["true", "black", "random", "none"]
MANIFEST_SUFFIXES = (".jsonl", ".json", ".parquet")


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


def read_manifest(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a Parquet or JSONL (or JSON array) manifest as dicts, in file order."""
    import polars as pl

    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"manifest {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            frame = pl.read_parquet(path)
        elif suffix == ".jsonl":
            frame = pl.read_ndjson(path, infer_schema_length=None)
        elif suffix == ".json":
            frame = pl.read_json(path, infer_schema_length=None)
        else:
            raise ValueError(f"unsupported manifest suffix {suffix!r}; expected one of {MANIFEST_SUFFIXES}")
    except (pl.exceptions.PolarsError, OSError) as e:
        raise ValueError(f"cannot read manifest {str(path)!r}: {e}") from e
    return frame.to_dicts()


def row_label(row: dict, index: int) -> str:
    """How a row is named in errors and rejects: its id when it has a usable one, else its position."""
    rid = row.get("id")
    return str(rid) if isinstance(rid, str | int) and str(rid).strip() else f"#{index}"


class RejectLog:
    """Append-only rejects JSONL (one `Reject` per line). Thread-safe; lines are written whole and flushed."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path is not None else None
        self.count = 0
        self._lock = threading.Lock()

    def add(self, reject: Reject) -> None:
        with self._lock:
            self.count += 1
            log.warning("rejected row %s from %s at %s: %s", reject.row_id, reject.source, reject.stage,
                        reject.reason)
            if self.path is None:
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(asdict(reject), ensure_ascii=False) + "\n")


def require_rows(kept: list, counts: RowCounts, path: str, rejects: RejectLog) -> list:
    """`kept` unchanged, or a clear error when every row of the manifest was rejected.

    Training on an empty set would "succeed" with zero steps; say which file and where the reasons are.
    """
    if not kept:
        where = f"; reasons in {rejects.path}" if rejects.path else ""
        raise BadRowError(f"{path}: no usable rows: all {counts.rows_in} rows were rejected{where}")
    return kept


def reject_or_raise(reject: Reject, policy: BadRowPolicy, rejects: RejectLog | None) -> None:
    """Apply the bad-row policy: raise naming file and row ("error"), or record the reject ("skip")."""
    if policy == "error":
        raise BadRowError(f"{reject.source}: row {reject.row_id}: {reject.stage}: {reject.reason}")
    if policy != "skip":
        raise ValueError(f"on_bad_row must be 'skip' or 'error', got {policy!r}")
    if rejects is not None:
        rejects.add(reject)


def check_columns(rows: Sequence[dict], required: Iterable[str], source: str) -> None:
    """Missing required columns is a structural error (never skippable): every row would be rejected."""
    if not rows:
        raise ValueError(f"manifest {source!r} has no rows")
    present = set().union(*(r.keys() for r in rows))
    missing = [c for c in required if c not in present]
    if missing:
        raise ValueError(f"manifest {source!r} lacks required column(s) {missing}; it has {sorted(present)}")


def row_problem(row: dict, text_fields: Iterable[str], seen: set[str]) -> str | None:
    """Why a row is unusable (id missing/duplicate, text field empty or not a string), or None."""
    rid = row.get("id")
    if not isinstance(rid, str | int) or not str(rid).strip():
        return f"id must be a non-empty string, got {rid!r}"
    if str(rid) in seen:
        return f"duplicate id {str(rid)!r}"
    for name in text_fields:
        value = row.get(name)
        if not isinstance(value, str):
            return f"column {name!r} must be a string, got {type(value).__name__}"
        if not value.strip():
            return f"column {name!r} is empty"
    return None


def validate_rows(rows: Sequence[dict], *, required: Iterable[str], text_fields: Iterable[str], source: str,
                  policy: BadRowPolicy, rejects: RejectLog | None) -> list[dict]:
    """Rows that pass the up-front checks; bad ones are rejected or raised per `policy`."""
    check_columns(rows, required, source)
    text_fields = tuple(text_fields)
    seen: set[str] = set()
    kept = []
    for i, row in enumerate(rows):
        problem = row_problem(row, text_fields, seen)
        if problem is not None:
            reject_or_raise(Reject(row_label(row, i), "manifest", problem, source), policy, rejects)
            continue
        seen.add(str(row["id"]))
        kept.append(row)
    return kept


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
    """Shuffled (or ordered) indices that depend only on (seed, epoch).

    Lightning calls `set_epoch` before each epoch, so a resumed run draws the same order as an
    uninterrupted one; the global RNG is never touched.
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


class ExampleDataset(Dataset):
    """Rows -> `Example`s via `build(row)`, decoded lazily in `__getitem__`.

    `build` may raise any exception for a bad row (media decode, missing target); with policy "skip"
    the row becomes a reject line and `__getitem__` returns None (dropped by `collate_examples`); with
    "error" a `BadRowError` names the manifest and row. Rejected ids are remembered per process so a
    row is logged once, not every epoch.
    """

    def __init__(self, rows: Sequence[dict], build: Callable[[dict], Example], *, source: str,
                 policy: BadRowPolicy = "skip", rejects: RejectLog | None = None, stage: str = "decode"):
        self.rows, self.build, self.source = list(rows), build, source
        self.policy, self.rejects, self.stage = policy, rejects, stage
        self._rejected: set[str] = set()

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> Example | None:
        row = self.rows[index]
        try:
            return self.build(row)
        except Exception as e:  # noqa: BLE001 - any failure of one row is that row's reject
            rid = row_label(row, index)
            if self.policy == "error":
                raise BadRowError(f"{self.source}: row {rid}: {self.stage}: {e}") from e
            if rid not in self._rejected:
                self._rejected.add(rid)
                reject_or_raise(Reject(rid, self.stage, f"{type(e).__name__}: {e}", self.source), "skip",
                                self.rejects)
            return None


def collate_examples(items: Sequence[Example | None], pad_id: int, *, padding_side: str = "right",
                     hash_media: bool = False) -> dict | None:
    """`avcot.chat.collate` over the non-skipped items, with their ids in batch["ids"] (None if all skipped).

    `hash_media`: also put the encoder-cache keys of the batch's media in batch["meta"]["media_keys"]
    (`avcot.speed.encoder_cache.media_keys`), hashed here in the DataLoader worker, off the training path.
    """
    kept = [it for it in items if it is not None]
    if not kept:
        return None
    batch = collate([it.encoded for it in kept], pad_id, padding_side=padding_side)
    batch["ids"] = [it.id for it in kept]
    batch["meta"] = {"references": [it.reference for it in kept]}
    if hash_media:
        from avcot.speed.encoder_cache import media_keys

        batch["meta"]["media_keys"] = media_keys(batch)
    return batch
