"""What an SFT run exports beside its Lightning checkpoints, besides adapters (`lit_modules.checkpoint`).

- `TrainingSettingsSaver`: on every checkpoint save, `<ckpt_dir>/training_settings.json` records the
  DataModule's media settings (`avcot.training_settings`), beside `adapter-last/` or `model-last/`, so
  `avcot.eval` decodes clips as training did.
- `FullModelSaver`: for full fine-tuning, `<ckpt_dir>/model-last/` is a Hugging Face thinker directory
  (config.json, safetensors weights, processor files, training_settings.json) that `avcot.model.load_thinker`
  and `from_pretrained` load. Under FSDP2 the full weights are gathered first (a collective: every rank
  runs it, rank 0 writes). Written to a temporary sibling and renamed into place, so a crash never leaves
  a half-written `model-last/` (while it is swapped it may be absent for a moment, never partial).
"""
from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from avcot.atomic import atomic_dir
from avcot.training_settings import TrainingSettings, settings_from_hparams, write_training_settings
from lit_modules.checkpoint import checkpoint_dir


def training_settings_of(trainer: L.Trainer) -> TrainingSettings | None:
    """The training media settings of the trainer's DataModule (None without one)."""
    dm = getattr(trainer, "datamodule", None)
    hparams = getattr(dm, "hparams", None)
    return settings_from_hparams(hparams) if hparams is not None else None


class TrainingSettingsSaver(Callback):
    """Writes `<ckpt_dir>/training_settings.json` at every checkpoint save (rank 0)."""

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        settings = training_settings_of(trainer)
        if settings is not None and trainer.is_global_zero:
            write_training_settings(checkpoint_dir(trainer), settings)


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every weight of `model` as a full CPU tensor; under FSDP2 a collective (call on every rank: rank 0
    gets the tensors, the other ranks may get an empty dict)."""
    if any(hasattr(p, "full_tensor") for p in model.parameters()):  # sharded DTensors: gather
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return {k: v.detach().to("cpu") for k, v in model.state_dict().items()}


def plain_thinker(model, state: dict[str, torch.Tensor]):
    """A plain thinker (no FSDP wrapper) of `model`'s config whose weights are the tensors of `state`.

    Built on the meta device and given `state`'s tensors as they are, so it costs no memory. Saving through
    it rather than `model` matters under FSDP2: the sharded module's class is a generated subclass, which
    transformers would not map back to the released checkpoint's weight names.
    """
    from transformers import Qwen2_5OmniThinkerForConditionalGeneration

    from avcot.thinker.forward import unwrap_thinker

    thinker = unwrap_thinker(model)
    with torch.device("meta"):
        plain = Qwen2_5OmniThinkerForConditionalGeneration(thinker.config)
    plain.load_state_dict(state, assign=True)
    plain.generation_config = thinker.generation_config
    return plain


def write_model_dir(model, state: dict[str, torch.Tensor], processor, target: Path,
                    settings: TrainingSettings | None = None) -> None:
    """Write `state` as a Hugging Face thinker directory (safetensors) + processor files, atomically."""
    with atomic_dir(target) as tmp:
        plain_thinker(model, state).save_pretrained(str(tmp), safe_serialization=True)
        processor.save_pretrained(str(tmp))
        if settings is not None:
            write_training_settings(tmp, settings)


class FullModelSaver(Callback):
    """Writes `<ckpt_dir>/model-last/` (a loadable thinker directory) at every checkpoint save.

    Expects the LightningModule to expose the thinker as `.model` and its processor source as
    `hparams.base`. Only the last one is kept: a full 3B/7B directory is several GB.
    """

    def __init__(self) -> None:
        self._processor = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Loaded before the first step, not at the first save: a base without processor files then fails in
        # seconds with the processor's own message, not after an epoch of training.
        self._processor = self._load(pl_module)

    @staticmethod
    def _load(pl_module: L.LightningModule):
        from avcot.processor import load_processor

        return load_processor(pl_module.hparams.base)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        model = pl_module.model
        state = full_state_dict(model)  # collective under FSDP2: every rank runs this
        if not trainer.is_global_zero:
            return
        processor = self._processor if self._processor is not None else self._load(pl_module)
        write_model_dir(model, state, processor, checkpoint_dir(trainer) / "model-last", training_settings_of(trainer))
