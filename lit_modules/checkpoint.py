"""What a training run writes beside its Lightning checkpoints: small checkpoints, PEFT adapter dirs, predictions.

- `keep_trainable_only(checkpoint, module)`: drop frozen base weights from a Lightning checkpoint's
  state_dict, so a 7B run's checkpoint holds only LoRA weights + optimizer state (load with
  `strict_loading = False`; the frozen base is rebuilt from `base` in `configure_model`).
- `AdapterSaver`: a callback that, on every Lightning checkpoint save, writes the PEFT adapter
  (safetensors, loadable by `PeftModel.from_pretrained` / `avcot.model.load_adapter`) to
  `<ckpt_dir>/adapter-step{N}/` and `<ckpt_dir>/adapter-last/`. Each is written to a temporary
  sibling directory first and renamed into place, so a crash never leaves a half-written adapter
  under the final name (`adapter-last` is swapped by two renames: for a moment it may be absent,
  never partial).
- `PredictionWriter`: a prediction writer callback: one JSONL line {id, text, extracted} per clip, by default
  in `<default_root_dir>/predictions.jsonl`.
- `AtomicCheckpointIO` / `use_atomic_checkpoints(trainer)`: Lightning checkpoints are written to a temporary
  file in the same directory, fsync-ed and renamed over the target, so a crash (even kill -9) mid-save never
  leaves a truncated `.ckpt` for `--ckpt_path` to pick up. (FSDP2 distributed checkpoints are directories
  written by torch.distributed.checkpoint and keep their own save path.)
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import BasePredictionWriter, Callback

from avcot.atomic import atomic_dir
from avcot.records import Generation


class AtomicCheckpointIO(TorchCheckpointIO):
    """TorchCheckpointIO whose saves are atomic: temp file + fsync + os.replace."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def use_atomic_checkpoints(trainer: L.Trainer) -> None:
    """Swap the strategy's plain TorchCheckpointIO for `AtomicCheckpointIO` (other IO plugins are kept)."""
    strategy = trainer.strategy
    if type(getattr(strategy, "_checkpoint_io", None)) in (TorchCheckpointIO, type(None)):
        strategy.checkpoint_io = AtomicCheckpointIO()


def trainable_names(module: torch.nn.Module) -> set[str]:
    """Names (as in `module.state_dict()`) of parameters that require grad."""
    return {n for n, p in module.named_parameters() if p.requires_grad}


def keep_trainable_only(checkpoint: dict, module: torch.nn.Module) -> None:
    """Filter `checkpoint["state_dict"]` in place to the module's trainable parameters."""
    names = trainable_names(module)
    state = checkpoint.get("state_dict") or {}
    checkpoint["state_dict"] = {k: v for k, v in state.items() if k in names}


def adapter_state(peft_model) -> dict[str, torch.Tensor]:
    """The PEFT adapter weights as full CPU tensors (gathers DTensor shards: call on every rank)."""
    from peft import get_peft_model_state_dict

    out = {}
    for k, v in get_peft_model_state_dict(peft_model).items():
        full = v.full_tensor() if hasattr(v, "full_tensor") else v
        out[k] = full.detach().to("cpu").contiguous()
    return out


def write_adapter(peft_model, state: dict[str, torch.Tensor], target: Path) -> None:
    """Write a PEFT adapter dir (adapter_config.json + adapter_model.safetensors) atomically to `target`."""
    from safetensors.torch import save_file

    with atomic_dir(target) as tmp:
        peft_model.peft_config["default"].save_pretrained(str(tmp))
        save_file(state, str(tmp / "adapter_model.safetensors"), metadata={"format": "pt"})


def checkpoint_dir(trainer: L.Trainer) -> Path:
    """Where this run's checkpoints go: the ModelCheckpoint's dirpath, else `<default_root_dir>/checkpoints`
    (the layout `avcot.cli` gives every run, so adapters land in one known place with or without one)."""
    cb = trainer.checkpoint_callback
    if cb is not None and getattr(cb, "dirpath", None):
        return Path(cb.dirpath)
    return Path(trainer.default_root_dir) / "checkpoints"


class AdapterSaver(Callback):
    """Writes `adapter-step{N}/` and `adapter-last/` beside every Lightning checkpoint.

    Expects the LightningModule to expose its PEFT model as `.model`. Step adapters follow the
    checkpoints' retention: an `adapter-step{N}/` whose `*step=N*.ckpt` was pruned by ModelCheckpoint
    is removed too, so a long run does not pile up one adapter per epoch.
    """

    def __init__(self, keep_every_step: bool = True):
        """
        Args:
            keep_every_step: Also keep `adapter-step{N}/` for each save (adapters are small); else only last.
        """
        self.keep_every_step = keep_every_step

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        model = getattr(pl_module, "model", None)
        if model is None or not hasattr(model, "peft_config"):
            return
        state = adapter_state(model)  # collective under FSDP: every rank runs this
        if not trainer.is_global_zero:
            return
        ckdir = checkpoint_dir(trainer)
        if self.keep_every_step:
            write_adapter(model, state, ckdir / f"adapter-step{trainer.global_step}")
            prune_step_adapters(ckdir, keep=trainer.global_step)
        write_adapter(model, state, ckdir / "adapter-last")


def prune_step_adapters(ckdir: Path, keep: int) -> list[Path]:
    """Remove `adapter-step{N}/` dirs with no `*step=N*.ckpt` beside them (except step `keep`)."""
    import re

    steps = {int(m.group(1)) for c in ckdir.glob("*.ckpt") if (m := re.search(r"step=(\d+)", c.name))}
    removed = []
    for d in ckdir.glob("adapter-step*"):
        m = re.fullmatch(r"adapter-step(\d+)", d.name)
        if m and int(m.group(1)) not in steps | {keep}:
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    return removed


class PredictionWriter(BasePredictionWriter):
    """Writes `predict_step`'s `Generation`s as JSONL: one line {id, text, extracted} per clip."""

    def __init__(self, output_path: str | None = None):
        """
        Args:
            output_path: JSONL file written by `predict`; None: `<trainer.default_root_dir>/predictions.jsonl`
                (relative paths: relative to the working directory).
        """
        super().__init__(write_interval="batch")
        self.path = Path(output_path) if output_path is not None else None
        self._root: str | None = None

    @property
    def output_path(self) -> Path:
        """The JSONL file: `output_path`, else `predictions.jsonl` in the run's default_root_dir."""
        if self.path is not None:
            return self.path
        if self._root is None:
            raise RuntimeError("PredictionWriter has no output_path and no trainer to place it under")
        return Path(self._root) / "predictions.jsonl"

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._root = trainer.default_root_dir

    def _part(self, trainer: L.Trainer) -> Path:
        if trainer.world_size == 1:
            return self.output_path
        return self.output_path.with_name(f"{self.output_path.name}.rank{trainer.global_rank}")

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._part(trainer).parent.mkdir(parents=True, exist_ok=True)
        self._part(trainer).write_text("", encoding="utf-8")

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx,
                           dataloader_idx=0) -> None:
        gens: list[Generation] = list(prediction or [])
        with self._part(trainer).open("a", encoding="utf-8") as f:
            for g in gens:
                f.write(json.dumps({"id": g.id, "text": g.text, "extracted": g.extracted,
                                    **({"extra": g.extra} if g.extra else {})}, ensure_ascii=False) + "\n")

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.world_size == 1:
            return
        trainer.strategy.barrier()
        if trainer.is_global_zero:  # merge the rank parts into the one file the config names
            parts = [self.output_path.with_name(f"{self.output_path.name}.rank{r}") for r in range(trainer.world_size)]
            with self.output_path.open("w", encoding="utf-8") as out:
                for p in parts:
                    out.write(p.read_text(encoding="utf-8"))
                    p.unlink()
