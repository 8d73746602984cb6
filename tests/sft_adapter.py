"""A trained-looking SFT LoRA adapter for GRPO tests: LoRA on the tiny thinker, every LoRA weight perturbed (a
fresh LoRA has B = 0, i.e. equals the base), written the way the SFT module's AdapterSaver writes it."""
from __future__ import annotations

from pathlib import Path


def make_sft_adapter(target: Path, *, seed: int = 5, dropout: float = 0.0, scale: float = 0.3) -> Path:
    """Write a non-zero LoRA adapter for `load_thinker("tiny")` to `target`; returns `target`."""
    import torch

    from avcot.model import LoraSettings, apply_lora, load_thinker
    from lit_modules.checkpoint import adapter_state, write_adapter

    model = apply_lora(load_thinker("tiny"), LoraSettings(dropout=dropout))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * scale)
    write_adapter(model, adapter_state(model), Path(target))
    return Path(target)
