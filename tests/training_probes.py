"""Lightning probes shared by the resume and row-accounting tests: a module that records the ids of every
training batch, and a callback that interrupts a fit after a given step (see tests/conftest.py)."""
from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback


class BatchIds(L.LightningModule):
    """A one-weight module that records the ids of every training batch: the order is the property under test."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.ids: list[tuple[str, ...]] = []

    def training_step(self, batch, batch_idx):
        self.ids.append(tuple(batch.ids))
        return self.w.sum() * batch.inputs["input_ids"].float().mean()

    def validation_step(self, batch, batch_idx):
        return None

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class StopAtStep(Callback):
    """Stops the fit once `trainer.global_step` reaches `step`."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step >= self.step:
            trainer.should_stop = True  # the interruption, right after the step-checkpoint is written
