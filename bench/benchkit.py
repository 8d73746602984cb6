"""Shared pieces of bench/bench_sft.py and bench/bench_rollout.py: model shapes, inputs, timing, output.

The 3b/7b models and inputs are built exactly as the stock HF + PEFT baseline script (hf_peft_baseline.py)
builds them (random-init real-size thinker in bf16, 10 s audio, 8 frames at 448x448, 320 text tokens), so our
path and the stock path are measured on the same shapes in the same process. `tiny` is the embedded
toy thinker with toy inputs, for a CPU smoke run.
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from avcot.length_batching import visual_tokens

SIZES = ("tiny", "3b", "7b")


@dataclass(frozen=True)
class Shape:
    """Input layout of one synthetic sample."""

    audio_s: int
    frames: int
    side: int
    text_len: int
    prefix_len: int = 24


SHAPES = {"tiny": Shape(audio_s=2, frames=4, side=112, text_len=32), "3b": Shape(10, 8, 448, 320),
          "7b": Shape(10, 8, 448, 320)}


def device() -> torch.device:
    """cuda when there is one, else cpu."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def add_model_args(parser) -> None:
    """The benches' shared model flags: --size, --layers, --dtype."""
    parser.add_argument("--size", choices=SIZES, default="tiny", help="model and input shapes")
    parser.add_argument("--layers", type=int, default=None,
                        help="3b/7b widths with only this many LM/vision/audio layers (a CPU shape check; no timing)")
    parser.add_argument("--dtype", choices=("bfloat16", "float32"), default=None,
                        help="default: bf16 on GPU, fp32 on CPU")


def dtype_for(name: str | None, dev: torch.device) -> torch.dtype:
    """--dtype, defaulting to bf16 on CUDA and fp32 elsewhere."""
    return getattr(torch, name or ("bfloat16" if dev.type == "cuda" else "float32"))


def build_thinker(size: str, dtype: torch.dtype, dev: torch.device, layers: int | None = None):
    """A random-init thinker of `size` on `dev` (towers frozen).

    `layers`: the real widths with only this many LM, vision and audio layers (a CPU check of the 7b/3b
    shapes end to end; timings of such a model mean nothing).
    """
    from avcot.model import build_tiny_thinker, freeze_encoders

    if size == "tiny":
        model = build_tiny_thinker(seed=0, dtype=dtype).to(dev)
    else:
        from transformers import Qwen2_5OmniThinkerConfig, Qwen2_5OmniThinkerForConditionalGeneration

        cfg = Qwen2_5OmniThinkerConfig()
        if size == "3b":  # Qwen2.5-Omni-3B text shapes, as the reference baseline
            t = cfg.text_config
            t.hidden_size, t.intermediate_size, t.num_hidden_layers = 2048, 11008, 36
            t.num_attention_heads, t.num_key_value_heads, t.vocab_size = 16, 2, 151936
            cfg.audio_config.output_dim = 2048
            cfg.vision_config.out_hidden_size = 2048
        cfg.vision_config.hidden_size = 1280
        if layers is not None:
            _set_depth(cfg, layers)
        t = cfg.text_config  # transformers 5.x sizes `layer_types` at construction (28): follow the depth
        t.layer_types, t.max_window_layers = ["full_attention"] * t.num_hidden_layers, t.num_hidden_layers
        cfg.vision_start_token_id, cfg.vision_end_token_id = 151652, 151653
        cfg._attn_implementation = "sdpa"
        torch.manual_seed(0)
        with torch.device(dev):
            model = Qwen2_5OmniThinkerForConditionalGeneration(cfg).to(dtype)
    freeze_encoders(model)
    return model


def _set_depth(cfg, layers: int) -> None:
    """Every tower and the LM cut to `layers` layers, widths kept."""
    if layers < 1:
        raise ValueError(f"layers must be >= 1, got {layers}")
    cfg.text_config.num_hidden_layers = layers
    cfg.vision_config.depth, cfg.vision_config.fullatt_block_indexes = layers, [layers - 1]
    cfg.audio_config.encoder_layers = cfg.audio_config.num_hidden_layers = layers


def make_batch(model, size: str, bsz: int, *, text_len: int | None = None, seed: int = 0) -> dict:
    """A collated-style CPU batch laid out as Qwen2.5-Omni's processor would (audio, then video, then text)."""
    cfg, shape = model.config, SHAPES[size]
    text_len = shape.text_len if text_len is None else text_len
    g = torch.Generator().manual_seed(seed)
    mel = 100 * shape.audio_s
    n_audio = int(model.model.audio_tower._get_feat_extract_output_lengths(torch.tensor(mel))[1])
    t, h = shape.frames // 2, shape.side // 14  # temporal patches, 14-px patches per side
    n_video = visual_tokens(shape.frames, shape.side)
    lo, hi = (10, 4000) if size == "tiny" else (1000, 100000)  # ordinary (non-special) token ids
    rows = []
    for _ in range(bsz):
        pre = torch.randint(lo, hi, (shape.prefix_len,), generator=g).tolist()
        post = torch.randint(lo, hi, (text_len,), generator=g).tolist()
        rows.append(pre + [cfg.audio_start_token_id] + [cfg.audio_token_id] * n_audio + [cfg.audio_end_token_id]
                    + [cfg.vision_start_token_id] + [cfg.video_token_id] * n_video + [cfg.vision_end_token_id] + post)
    ids = torch.tensor(rows)  # [B, L]
    labels = ids.clone()
    labels[:, : ids.shape[1] - text_len] = -100
    dtype = model.dtype
    return dict(
        input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels,
        input_features=torch.randn(bsz, 128, mel, generator=g).to(dtype),
        feature_attention_mask=torch.ones(bsz, mel, dtype=torch.long),
        pixel_values_videos=torch.randn(bsz * t * h * h, 3 * 2 * 14 * 14, generator=g).to(dtype),
        video_grid_thw=torch.tensor([[t, h, h]] * bsz),
        video_second_per_grid=torch.tensor([2 * shape.audio_s / shape.frames] * bsz),
    )


def to_device(batch: dict, dev: torch.device) -> dict:
    """Tensors of `batch` moved to `dev` (other values kept)."""
    return {k: v.to(dev) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, dev: torch.device, iters: int, warm: int) -> tuple[float, list[float]]:
    """(median seconds, all timings) of `fn()` after `warm` untimed calls."""
    for _ in range(warm):
        fn()
    sync(dev)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        sync(dev)
        times.append(time.perf_counter() - start)
    ordered = sorted(times)
    return ordered[len(ordered) // 2], times


def reset_peak(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gb(dev: torch.device) -> float | None:
    """Peak allocated GPU memory since the last reset (None on CPU)."""
    return torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else None


class Emitter:
    """Prints JSON lines and appends them to a file."""

    def __init__(self, path: str):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.file = open(path, "a")  # noqa: SIM115 -- kept open for the run

    def __call__(self, **record) -> dict:
        line = json.dumps(record)
        print(line, flush=True)
        self.file.write(line + "\n")
        self.file.flush()
        return record


def default_out(name: str) -> str:
    """$OUT/<name> when $OUT is set (the GPU runner), else <tmp>/avcot_bench/<name> (never inside the repo)."""
    import tempfile

    return os.path.join(os.environ.get("OUT") or os.path.join(tempfile.gettempdir(), "avcot_bench"), name)


def versions(dev: torch.device) -> dict:
    """Library versions and the device name, for the first JSON line."""
    import importlib

    out = {"python": sys.version.split()[0]}
    for mod in ("torch", "transformers", "peft", "bitsandbytes"):
        try:
            out[mod] = importlib.import_module(mod).__version__
        except Exception:  # noqa: BLE001 -- optional libraries
            out[mod] = None
    import transformers

    out["transformers_from"] = str(Path(transformers.__file__).parent.parent)  # the carried wheel or the image's
    out["device"] = torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu"
    return out


def quantize_lm_nf4(thinker) -> int:
    """Replace the language model's decoder linears with bitsandbytes nf4 (QLoRA base); returns how many.

    Embeddings, LM head and the frozen towers stay in their dtype, as the project's nf4 loading skips them.
    """
    import bitsandbytes as bnb

    count = 0
    for layer in thinker.model.language_model.layers:
        for parent in list(layer.modules()):
            for name, child in list(parent.named_children()):
                if type(child) is not torch.nn.Linear:
                    continue
                q = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=child.bias is not None,
                                      compute_dtype=child.weight.dtype, quant_type="nf4", compress_statistics=True,
                                      device="meta")
                q.weight = bnb.nn.Params4bit(child.weight.data, requires_grad=False, quant_type="nf4",
                                             compress_statistics=True)
                if child.bias is not None:
                    q.bias = torch.nn.Parameter(child.bias.data, requires_grad=False)
                setattr(parent, name, q.to(child.weight.device))
                count += 1
    return count
