"""`python -m avcot.export`: merge a LoRA adapter (or take a full fine-tuned thinker) into a servable directory.

  python -m avcot.export --base DIR|tiny --adapter ADAPTER_DIR --out DIR [--layout auto|thinker|vllm|full]
  python -m avcot.export --base DIR --thinker model-last --out DIR     # full fine-tuning: validate + re-save

The output is a standard Hugging Face directory (safetensors weights, config, generation config and the
processor files) in one of three layouts:

- `thinker`: a Qwen2.5-Omni *thinker* checkpoint (`Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained`,
  `avcot.eval --ckpt DIR`, `python -m demo.app --base DIR`). vLLM does not serve this layout: its registry
  knows the full-model architecture names only and reads the thinker settings from a full-model config.
- `vllm`: what `vllm serve` expects for Qwen2.5-Omni: a `Qwen2_5OmniForConditionalGeneration` config wrapping
  the thinker config with `enable_audio_output: false`, the thinker's tensors under `thinker.`, no talker
  or token2wav tensors (vLLM skips those anyway). `spk_dict.pt` holds an empty speaker map because the
  stock full class's `from_pretrained` refuses a directory without one; it is loaded with weights_only.
- `full`: the base is a full Qwen2.5-Omni checkpoint (thinker + talker + token2wav): the merged thinker is
  written under `thinker.`, every other tensor is carried from the base shards byte for byte (streamed
  shard by shard, never built as a model), the base's config.json, generation config and speaker map are
  kept, and the index is rewritten. vLLM and the stock full class load it as they load the base.

`--layout auto` (the default) is `full` for a full base and `thinker` otherwise.

Merging into a quantized (nf4/int8) base is refused: the merged weights would be rounded to 4 bits, and the
result would not be a standard checkpoint. Load the base in bf16 instead.
"""
from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from avcot.atomic import atomic_dir
from avcot.export_layouts import ExportError, read_config, write_full_layout, write_thinker_layout, write_vllm_layout
from avcot.processor import TINY

log = logging.getLogger(__name__)

Layout = Literal["auto", "thinker", "vllm", "full"]
LAYOUTS = ("auto", "thinker", "vllm", "full")
DTYPES = ("auto", "float32", "bfloat16", "float16")
QUANTIZED_MODULES = ("Linear4bit", "Linear8bitLt", "Params4bit", "Int8Params")


@dataclass(frozen=True)
class ExportReport:
    """What `export` wrote."""

    out: Path
    """The exported directory."""
    layout: str
    """The layout written: thinker, vllm or full ('auto' resolved)."""
    dtype: str
    """Dtype the thinker was loaded, merged and written in."""
    adapter: str | None
    """The LoRA adapter merged in, if any."""
    thinker_source: str
    """Where the thinker weights came from: the base, or a full fine-tuned thinker directory."""
    lm_head_from_adapter: bool
    """The adapter carried a full LM head (modules_to_save) that replaced the base's."""
    thinker_tensors: int
    """Thinker tensors written."""
    carried_tensors: int
    """Talker/token2wav tensors copied untouched from the base (full layout)."""
    files: tuple[str, ...]
    """Files in the exported directory."""


def quantization_of(model) -> tuple[str, str] | None:
    """(how it is loaded, what its weights are), e.g. ('4-bit', 'nf4'), when `model` (or a PEFT model's base)
    is quantized; None for full-precision weights."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    qc = getattr(getattr(base, "config", None), "quantization_config", None)
    qc = qc if isinstance(qc, dict) else (qc.to_dict() if hasattr(qc, "to_dict") else {})
    method = str(qc.get("quant_method", "quantized"))
    if getattr(base, "is_loaded_in_4bit", False):
        return "4-bit", str(qc.get("bnb_4bit_quant_type", "4-bit"))
    if getattr(base, "is_loaded_in_8bit", False):
        return "8-bit", "int8"
    if qc or any(type(m).__name__ in QUANTIZED_MODULES for m in base.modules()):
        return method, method
    return None


def quantized_refusal(loaded: str, weights: str) -> ExportError:
    """The one error for every quantized-base case."""
    return ExportError(f"the base is loaded in {loaded}: merging into {weights} weights loses precision and is not "
                       "supported; load the base in bfloat16: --dtype bfloat16")


def merge_adapter(model, *, progress: bool = True):
    """Fold a PEFT LoRA model's adapter into its base weights; the plain transformers model.

    A `modules_to_save` LM head (LoraSettings.train_lm_head) replaces the base's head. A quantized base is
    refused (`ExportError`); NaNs in a merged weight raise instead of being written.
    """
    if not hasattr(model, "merge_and_unload"):
        raise TypeError(f"merge_adapter expects a PEFT model, got {type(model).__name__}")
    quantized = quantization_of(model)
    if quantized is not None:
        raise quantized_refusal(*quantized)
    try:
        return model.merge_and_unload(progressbar=progress, safe_merge=True)
    except ValueError as e:  # safe_merge found NaNs: a broken adapter
        raise ExportError(f"the merged weights are not finite: {e}") from e


def adapter_trains_lm_head(peft_model) -> bool:
    """True when the adapter saves a full LM head copy (modules_to_save)."""
    config = peft_model.peft_config[getattr(peft_model, "active_adapter", "default")]
    return any("lm_head" in m for m in (config.modules_to_save or ()))


def _local_dir(where: str) -> Path:
    """The directory a checkpoint path or cached hub id lives in."""
    from avcot.processor import checkpoint_location

    try:
        resolved = checkpoint_location(where)
    except OSError as e:
        raise ExportError(str(e)) from e
    if Path(resolved).is_dir():
        return Path(resolved)
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(resolved, local_files_only=True))
    except Exception as e:  # noqa: BLE001 - any hub failure means: not on this machine
        raise ExportError(f"{where!r} is neither a directory nor a checkpoint in the local HF cache") from e


def base_layout(where: str) -> Literal["tiny", "thinker", "full"]:
    """Which weights an export base carries: 'tiny', 'thinker' (thinker-only) or 'full' (the whole
    Qwen2.5-Omni: talker and token2wav too). Refuses quantized checkpoints. (Whether a path is an adapter, a
    model or a hub id is `avcot.model.checkpoint_kind`'s question; this one picks the export layout.)"""
    if where == TINY:
        return "tiny"
    directory = _local_dir(where)
    cfg = read_config(directory)
    quant = cfg.get("quantization_config") or (cfg.get("thinker_config") or {}).get("quantization_config")
    if quant:
        method = quant.get("quant_method", "quantized") if isinstance(quant, dict) else "quantized"
        raise ExportError(f"{directory} is a quantized checkpoint ({method}): merging into quantized weights "
                          "loses precision and is not supported; export from the unquantized checkpoint, "
                          "loaded in bfloat16: --dtype bfloat16")
    kinds = {"qwen2_5_omni": "full", "qwen2_5_omni_thinker": "thinker"}
    if cfg.get("model_type") not in kinds:
        raise ExportError(f"{directory} is a {cfg.get('model_type')!r} checkpoint; expected qwen2_5_omni or "
                          "qwen2_5_omni_thinker")
    return kinds[cfg["model_type"]]


def resolve_layout(layout: str, base_kind: str) -> str:
    """'auto' -> 'full' for a full base, else 'thinker'; 'full' needs a full base."""
    if layout not in LAYOUTS:
        raise ExportError(f"--layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    if layout == "auto":
        return "full" if base_kind == "full" else "thinker"
    if layout == "full" and base_kind != "full":
        raise ExportError(f"--layout full carries the talker and token2wav of a full Qwen2.5-Omni base, but the "
                          f"base is {'the embedded tiny thinker' if base_kind == 'tiny' else 'thinker-only'}; "
                          "use --layout thinker or --layout vllm")
    return layout


def resolve_dtype(dtype: str, source: str) -> str:
    """'auto' -> the checkpoint's own dtype (float32 for tiny or when it names none)."""
    if dtype not in DTYPES:
        raise ExportError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if dtype != "auto":
        return dtype
    if source == TINY:
        return "float32"
    cfg = read_config(_local_dir(source))
    thinker = cfg.get("thinker_config") or {}
    named = cfg.get("dtype") or cfg.get("torch_dtype") or thinker.get("dtype") or thinker.get("torch_dtype")
    return named if named in DTYPES else "float32"


def check_out(out: Path, overwrite: bool, inputs: list[Path]) -> None:
    """Refuse an output that is a file, a non-empty directory (unless overwrite) or would swallow an input."""
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out} is a file; pass a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ExportError(f"--out {out} is not empty; pass --overwrite to replace it, or choose another directory")
    target = out.resolve()
    for path in inputs:
        p = path.resolve()
        if p == target or target in p.parents:
            raise ExportError(f"--out {out} holds the input {path}: replacing it would delete that input; "
                              "choose another directory")


def check_adapter(adapter: str) -> None:
    """A PEFT adapter directory with safetensors weights; a full checkpoint passed here gets a hint."""
    path = Path(adapter).expanduser()
    if not path.is_dir():
        raise ExportError(f"--adapter {adapter} is not a directory")
    if not (path / "adapter_config.json").is_file() and (path / "config.json").is_file():
        raise ExportError(f"--adapter {adapter} is a model directory (config.json, no adapter_config.json): for "
                          "a full fine-tuned thinker pass it with --thinker")
    missing = [f for f in ("adapter_config.json", "adapter_model.safetensors") if not (path / f).is_file()]
    if missing:
        pickled = [p.name for p in path.glob("adapter_model.bin")]
        why = f"; {pickled[0]} is a pickle file and is never loaded" if pickled else ""
        raise ExportError(f"--adapter {adapter} is not a PEFT adapter directory: missing {', '.join(missing)} "
                          f"(only safetensors adapters are merged){why}")


def load_merged(source: str, adapter: str | None, *, dtype: str, seed: int, progress: bool):
    """The thinker from `source`, with `adapter` merged in when given; (model, adapter carried an LM head)."""
    from avcot.model import CheckpointError, load_adapter, load_thinker

    log.info("loading the thinker from %s (%s)", source, dtype)
    try:
        model = load_thinker(source, dtype=dtype, seed=seed)
    except CheckpointError:
        raise
    except (OSError, ValueError) as e:
        raise ExportError(f"cannot load the thinker from {source}: {' '.join(str(e).split())}") from e
    if adapter is None:
        return model.eval(), False
    log.info("merging the adapter %s", adapter)
    try:
        peft_model = load_adapter(model, adapter, trainable=False)
    except (OSError, RuntimeError, ValueError) as e:  # e.g. size mismatch: trained on another base
        raise ExportError(f"cannot apply the adapter {adapter} to {source}: {' '.join(str(e).split())[:300]}") from e
    head = adapter_trains_lm_head(peft_model)
    return merge_adapter(peft_model, progress=progress).eval(), head


def load_export_processor(where: str):
    """The processor written beside the weights; a directory without one says which flag fixes it."""
    from avcot.processor import load_processor

    try:
        return load_processor(where)
    except OSError as e:
        raise ExportError(f"no processor files in {where}: pass --processor with the checkpoint the model was "
                          "trained from") from e


def export(base: str = TINY, adapter: str | None = None, out: str | Path = "export", *, thinker: str | None = None,
           layout: Layout = "auto", dtype: str = "auto", processor: str | None = None, seed: int = 0,
           overwrite: bool = False, max_shard_size: str = "5GB", progress: bool = True) -> ExportReport:
    """Merge `adapter` into the thinker (of `base`, or of the fine-tuned `thinker` dir) and write `out` atomically.

    Everything a user can get wrong is checked before the model is loaded; the directory is built in a
    temporary sibling of `out` and renamed into place, so `out` is never left half-written.
    """
    out = Path(out).expanduser()
    kind = base_layout(base)
    resolved = resolve_layout(layout, kind)
    inputs = [_local_dir(p) for p in (base, thinker, processor) if p and p != TINY]
    check_out(out, overwrite, inputs + ([Path(adapter).expanduser()] if adapter else []))
    if adapter:
        check_adapter(adapter)
    if thinker and base_layout(thinker) == "full":
        raise ExportError(f"--thinker {thinker} is a full Qwen2.5-Omni checkpoint; pass it as --base")
    source = thinker or base
    dtype = resolve_dtype(dtype, source)
    proc = load_export_processor(processor or base)
    model, head = load_merged(source, adapter, dtype=dtype, seed=seed, progress=progress)
    log.info("writing the %s layout to %s", resolved, out)
    with atomic_dir(out, tag="export") as tmp:
        proc.save_pretrained(str(tmp))
        counts = _write_layout(resolved, model, tmp, base=base, max_shard_size=max_shard_size, progress=progress)
    return ExportReport(out=out, layout=resolved, dtype=dtype, adapter=adapter, thinker_source=source,
                        lm_head_from_adapter=head, thinker_tensors=counts[0], carried_tensors=counts[1],
                        files=tuple(sorted(p.name for p in out.iterdir())))


def _write_layout(layout: str, model, dst: Path, *, base: str, max_shard_size: str, progress: bool):
    if layout == "thinker":
        return write_thinker_layout(model, dst, max_shard_size=max_shard_size, progress=progress)
    base_dir = None if base == TINY else _local_dir(base)
    if layout == "vllm":
        base_config = read_config(base_dir) if base_dir is not None else None
        if base_config and base_config.get("model_type") != "qwen2_5_omni":
            base_config = None
        return write_vllm_layout(model, dst, base_config=base_config, max_shard_size=max_shard_size,
                                 progress=progress)
    return write_full_layout(model, dst, base_dir=base_dir, max_shard_size=max_shard_size, progress=progress)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m avcot.export", description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--base", default=TINY, help="base model: 'tiny' (embedded) or a Qwen2.5-Omni checkpoint dir "
                    "(full or thinker-only; a full one also gives the talker for --layout full)")
    ap.add_argument("--adapter", default=None, help="PEFT LoRA adapter dir to merge (e.g. checkpoints/adapter-last)")
    ap.add_argument("--thinker", default=None, help="full fine-tuned thinker dir (e.g. model-last) to take the "
                    "thinker weights from instead of --base")
    ap.add_argument("--out", required=True, help="directory to write (must be empty or absent)")
    ap.add_argument("--layout", default="auto", choices=LAYOUTS,
                    help="auto: full for a full base, else thinker; vllm: what `vllm serve` loads")
    ap.add_argument("--dtype", default="auto", choices=DTYPES,
                    help="load, merge and write in this dtype; auto: the checkpoint's own (float32 for tiny)")
    ap.add_argument("--processor", default=None, help="processor source; None: the --base's ('tiny': the embedded one)")
    ap.add_argument("--seed", type=int, default=0, help="init seed of the tiny base (must match training)")
    ap.add_argument("--max-shard-size", default="5GB", help="largest safetensors shard")
    ap.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    ap.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return ap


def main(argv: list[str] | None = None) -> int:
    """Run the export; 0 on success, 2 with a one-line `error: ...` on stderr for a user mistake."""
    from avcot.model import CheckpointError

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        report = export(args.base, args.adapter, args.out, thinker=args.thinker, layout=args.layout,
                        dtype=args.dtype, processor=args.processor, seed=args.seed, overwrite=args.overwrite,
                        max_shard_size=args.max_shard_size, progress=not args.no_progress)
    except (ExportError, CheckpointError) as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    merged = f"merged {report.adapter}" if report.adapter else "no adapter"
    print(f"{report.out}: {report.layout} layout, {report.dtype}, {merged}, {report.thinker_tensors} thinker "
          f"tensors, {report.carried_tensors} carried untouched")
    return 0


if __name__ == "__main__":
    sys.exit(main())
