"""Activation checkpointing on the language model's decoder layers only.

`model.gradient_checkpointing_enable()` switches on every checkpointable layer, the frozen audio and
vision towers' included, and the usual companion `enable_input_require_grads()` makes their inputs
require grad, so the backward replays and differentiates through the frozen encoders (measured 4x
slower on the GPU). Here only `language_model.layers` are checkpointed, with the
non-reentrant implementation, which needs no input that requires grad; the towers stay as they are
(run under no_grad by `avcot.thinker.forward`). Loss and LoRA gradients equal the uncheckpointed ones.
"""
from __future__ import annotations

from functools import partial

import torch.utils.checkpoint

from avcot.thinker.forward import unwrap_thinker


def lm_decoder_layers(model) -> list:
    """The language model's decoder layers (the only layers this module checkpoints)."""
    return list(unwrap_thinker(model).model.language_model.layers)


def enable_lm_checkpointing(model) -> int:
    """Checkpoint every LM decoder layer in training mode; returns how many layers were switched on."""
    fn = partial(torch.utils.checkpoint.checkpoint, use_reentrant=False)
    layers = lm_decoder_layers(model)
    for layer in layers:
        layer.gradient_checkpointing = True
        layer._gradient_checkpointing_func = fn
    return len(layers)


def disable_lm_checkpointing(model) -> None:
    """Undo `enable_lm_checkpointing`."""
    for layer in lm_decoder_layers(model):
        layer.gradient_checkpointing = False


def checkpointed_layer_names(model) -> list[str]:
    """Qualified names of every module with checkpointing on (to check the towers are not among them)."""
    return [name for name, mod in model.named_modules() if getattr(mod, "gradient_checkpointing", False) is True]
