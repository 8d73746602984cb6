"""Which model the demo serves when no --base/--adapter is given: the newest training run's, else the tiny one.

A training run leaves `checkpoints/model-last/` (full fine-tuning: a loadable thinker directory) or
`checkpoints/adapter-last/` (LoRA: a PEFT adapter over the run's base) under its default_root_dir, e.g.
`runs/tiny/checkpoints/model-last`. The newest of those by modification time (each is rewritten at
the end of every epoch, so the newest is the last run that trained) is the one served. The media settings it
was trained with come from its `training_settings.json` through `avcot.training_settings`, the same reader
and precedence as `avcot.eval` (a flag wins over the recorded value, which wins over the task's default).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from avcot.processor import TINY

LAST_DIRS = ("model-last", "adapter-last")
"""The directories a run writes at the end of each epoch: a full thinker, or a LoRA adapter."""
MEDIA_KEYS = ("num_frames", "frame_size", "max_seconds")
"""The media settings the demo takes from a run (its flags of the same names win)."""


@dataclass(frozen=True)
class RunModel:
    """A model directory one training run left behind."""

    path: Path
    """`.../checkpoints/model-last` or `.../checkpoints/adapter-last`."""
    kind: Literal["model", "adapter"]
    """'model': a full thinker directory (served as --base); 'adapter': a LoRA adapter (served as --adapter)."""
    mtime: float
    """Modification time of the directory (seconds since the epoch)."""


@dataclass(frozen=True)
class ModelChoice:
    """What the demo loads and the line it prints about why."""

    base: str
    adapter: str | None
    message: str
    """Why this model ('' when the flags chose it)."""
    run: RunModel | None = None
    """The run model picked from the runs folder (None: flags, or no run found)."""


def run_models(runs: Path) -> list[RunModel]:
    """Every `checkpoints/{model-last,adapter-last}` directory under `runs` (any depth), oldest first."""
    if not runs.is_dir():
        return []
    found = []
    for ckpt_dir in runs.rglob("checkpoints"):
        for name in LAST_DIRS:
            path = ckpt_dir / name
            if path.is_dir():
                kind: Literal["model", "adapter"] = "model" if name == "model-last" else "adapter"
                found.append(RunModel(path, kind, path.stat().st_mtime))
    return sorted(found, key=lambda r: (r.mtime, str(r.path)))


def newest_run_model(runs: Path) -> RunModel | None:
    """The most recently written run model under `runs`, or None when there is none."""
    found = run_models(runs)
    return found[-1] if found else None


def choose_model(base: str | None, adapter: str | None, runs: Path) -> ModelChoice:
    """The model to serve: the flags when either is given; else the newest run model under `runs`; else tiny.

    An adapter found in `runs` goes on top of `base` as given, else the embedded tiny model (the base of
    the repository's CPU recipe).
    """
    if base is not None or adapter is not None:
        return ModelChoice(base or TINY, adapter, "")  # the user chose: nothing to explain, and an error stays one line
    run = newest_run_model(runs)
    if run is None:
        return ModelChoice(TINY, None, f"no trained model under {runs}/ (checkpoints/model-last or adapter-last): "
                                       "serving the embedded tiny random-init thinker; train one with "
                                       "`python -m avcot.cli fit --config configs/tiny.yaml`")
    if run.kind == "model":
        return ModelChoice(str(run.path), None, f"serving the newest run's model {run.path}", run)
    return ModelChoice(TINY, str(run.path), f"serving the newest run's adapter {run.path} on the tiny base", run)


def media_overrides(flags: dict[str, object], model_dir: str | None) -> tuple[dict[str, object], str]:
    """Media settings for the demo: each flag given (not None), else the value `model_dir`'s
    training_settings.json records, else left out (the task's default applies). Returns (values, a line
    saying where each came from)."""
    from avcot.training_settings import merge_media, read_training_settings

    is_dir = bool(model_dir) and model_dir != TINY and Path(model_dir).expanduser().is_dir()
    saved = read_training_settings(model_dir) if is_dir else None
    recorded = saved.known() if saved is not None else {}
    defaults = {k: None for k in MEDIA_KEYS}
    values, sources = merge_media({k: flags.get(k) for k in MEDIA_KEYS}, recorded, defaults)
    where = ", ".join(f"{k}={'task default' if values[k] is None else values[k]} ({sources[k]})"
                      for k in MEDIA_KEYS)
    return {k: v for k, v in values.items() if v is not None}, where
