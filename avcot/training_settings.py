"""The media settings a checkpoint was trained with, saved beside it so evaluation decodes clips the same way.

A run writes `training_settings.json` next to its adapter / model directories (and inside a full model
directory, which travels alone): frames per clip, frame side, audio seconds, the audio-in-video layout
and the training target. `avcot.eval` reads it when `--ckpt` points at such a directory and takes each
value the command line did not give (`merge_media`): a model trained on 8 frames at 336 px is then not
scored on 4 frames at 112 px by accident.
"""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

FILENAME = "training_settings.json"


@dataclass(frozen=True)
class TrainingSettings:
    """How the training clips were decoded and what the model learnt to write (None: not recorded)."""

    num_frames: int | None = None
    """Frames sampled per clip."""
    frame_size: int | None = None
    """Square frame side in pixels."""
    max_seconds: float | None = None
    """Clip length cap (audio and video)."""
    use_audio_in_video: bool | None = None
    """Audio interleaved with the video frames in time (Qwen2.5-Omni's layout)."""
    target: str | None = None
    """Training target ('avcot' / 'transcript' for CAVSR, 'trace' for MCQ)."""

    def known(self) -> dict[str, Any]:
        """The recorded values only."""
        return {k: v for k, v in asdict(self).items() if v is not None}


def settings_from_hparams(hparams: Mapping[str, Any]) -> TrainingSettings:
    """The training settings among a DataModule's hyper-parameters (fields it lacks stay None)."""
    return TrainingSettings(**{f.name: hparams[f.name] for f in fields(TrainingSettings) if f.name in hparams})


def write_training_settings(directory: str | Path, settings: TrainingSettings) -> Path:
    """Write `directory/training_settings.json` atomically (temp file + rename); returns its path."""
    target = Path(directory) / FILENAME
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{FILENAME}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(settings.known(), f, indent=2, sort_keys=True)
            f.write("\n")
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; the file should read like the rest of the run's outputs
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def settings_file(ckpt_dir: str | Path) -> Path | None:
    """The settings file of a checkpoint directory: inside it, else beside it (in its parent), else None."""
    root = Path(ckpt_dir).expanduser()
    for candidate in (root / FILENAME, root.parent / FILENAME):
        if candidate.is_file():
            return candidate
    return None


def read_training_settings(ckpt_dir: str | Path) -> TrainingSettings | None:
    """The settings saved for `ckpt_dir`, or None when there are none; a malformed file is a ValueError."""
    path = settings_file(ckpt_dir)
    if path is None:
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    names = {f.name for f in fields(TrainingSettings)}
    if not isinstance(data, dict) or set(data) - names:
        raise ValueError(f"{path}: expected a JSON object with keys among {sorted(names)}, got {data!r}")
    return TrainingSettings(**data)


def merge_media(given: Mapping[str, Any], recorded: Mapping[str, Any],
                defaults: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Each key of `defaults`: the value given on the command line (not None), else the recorded one (from
    `training_settings.json`), else the default. Returns (values, where each came from: 'flag' |
    'training_settings.json' | 'default')."""
    values, sources = {}, {}
    for key, default in defaults.items():
        if given.get(key) is not None:
            values[key], sources[key] = given[key], "flag"
        elif key in recorded:
            values[key], sources[key] = recorded[key], FILENAME
        else:
            values[key], sources[key] = default, "default"
    return values, sources
