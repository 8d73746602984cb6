"""Loading the model the demo serves: the embedded tiny thinker, a checkpoint, or base + LoRA adapter."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from avcot.processor import TINY

TINY_BANNER = (
    "**Smoke-test model.** This demo is serving the embedded *tiny* Qwen2.5-Omni thinker: it has the real "
    "architecture but random weights, so its text is gibberish. The interface works end to end; for real "
    "output start it with a checkpoint, e.g. `python -m demo.app --base /path/to/Qwen2.5-Omni-7B "
    "--adapter runs/cavsr/adapter` (or `--base` a merged checkpoint directory)."
)


class ModelLoadError(RuntimeError):
    """The base checkpoint or adapter could not be loaded (message names the path and the cause)."""


@dataclass(frozen=True)
class LoadedModel:
    """A ready-to-generate thinker with its processor and a record of where it came from."""

    model: Any
    processor: Any
    base: str
    """"tiny" or the checkpoint path/id that was loaded."""
    adapter: str | None
    """LoRA adapter directory attached on top of `base`, if any."""

    @property
    def is_tiny(self) -> bool:
        """True for the embedded random-init smoke-test model."""
        return self.base == TINY

    @property
    def description(self) -> str:
        """One line for the UI saying what is loaded."""
        base = "embedded tiny thinker (random weights)" if self.is_tiny else f"checkpoint `{self.base}`"
        if self.adapter:
            return f"Loaded: {base} + LoRA adapter `{self.adapter}`"
        merged = "" if self.is_tiny else " (full or merged model, no adapter)"
        return f"Loaded: {base}{merged}"


def load_model(base: str = TINY, adapter: str | None = None, *, dtype: str = "float32",
               quantization: str = "none", seed: int = 0) -> LoadedModel:
    """Load thinker (+ adapter) with `avcot.model.load_model` and the base's processor, in eval mode;
    `ModelLoadError` with a clear message on failure (an adapter passed as --base gets a hint)."""
    from avcot.model import AdapterLoadError
    from avcot.model import load_model as load_thinker_model
    from avcot.processor import load_processor

    try:
        model = load_thinker_model(base, adapter, dtype=dtype, quantization=quantization, seed=seed)
        processor = load_processor(base)
    except AdapterLoadError as e:
        raise ModelLoadError(str(e)) from e
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"cannot load base model {base!r}: {e}") from e
    return LoadedModel(model=model, processor=processor, base=base, adapter=adapter)
