"""The Qwen2.5-Omni thinker: embedded tiny default or a real checkpoint, frozen encoders, LoRA.

`load_thinker("tiny")` builds a randomly initialised (seeded) thinker with the real architecture
(audio tower + vision tower + language model) at toy width, matching the embedded tiny processor's
vocabulary. Any other `base` is a checkpoint directory or a hub id already in the user's HF cache,
loaded with `from_pretrained(trust_remote_code=False)`; a full Qwen2.5-Omni checkpoint (thinker +
talker) is accepted too: only the thinker weights are loaded. Weights load from safetensors only: a
checkpoint whose weights are pickle files (`pytorch_model.bin`, `*.pt`, ...) is refused with
`UnsafeCheckpointError` before anything opens them, because unpickling can run arbitrary code.

`checkpoint_kind` is the one place that decides what a model argument names (tiny, adapter dir, full model
dir, Lightning .ckpt, hub id); `load_model(base, adapter)` is the one loader eval and the demo call.

Both papers freeze the audio and vision encoders. LoRA goes on the language model only (`apply_lora`); the
AVRT paper's SFT trains the whole language model (`train_language_model`). `quantization="nf4"` loads the
base in 4-bit with bitsandbytes (QLoRA).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from avcot.processor import TINY

# q/k/v/o of the language model only: the audio tower has q/k/v projections of its own.
LM_ATTENTION = r".*language_model\.layers\.\d+\.self_attn\.(q_proj|k_proj|v_proj|o_proj)"
LM_ALL_LINEAR = r".*language_model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"
ENCODERS = ("audio_tower", "visual")
# Weight files that torch/transformers would unpickle; refused for bases (adapters: see load_adapter).
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
SAFE_INDEX = "model.safetensors.index.json"


class CheckpointError(ValueError):
    """A base checkpoint that cannot be loaded; the one-line message names the file and says why."""


class UnsafeCheckpointError(CheckpointError):
    """A base checkpoint whose weights are pickle files: refused before anything unpickles them."""


@dataclass(frozen=True)
class LoraSettings:
    """LoRA hyper-parameters (paper defaults: r 8, alpha 32, dropout 0.05 on q/k/v/o)."""

    r: int = 8
    """LoRA rank."""
    alpha: int = 32
    """LoRA scaling numerator (scale = alpha / r)."""
    dropout: float = 0.05
    """Dropout on the LoRA branch."""
    target: Literal["attention", "all-linear"] = "attention"
    """'attention' = q/k/v/o of the LM; 'all-linear' = also the LM's MLP (as the VASR authors' script)."""
    train_lm_head: bool = False
    """Also train the LM head. LoRA: a full copy, saved in the adapter; for the random-init tiny model, whose
    frozen random head otherwise caps how far the loss can fall. Full fine-tuning (`train_language_model`):
    the head itself, beside the language model."""


def lora_settings(value: LoraSettings | Mapping[str, Any]) -> LoraSettings:
    """`value` as `LoraSettings`: a module's hparams (checkpoints, LightningCLI) keep the settings as a plain dict."""
    return value if isinstance(value, LoraSettings) else LoraSettings(**value)


def tiny_config(vocab_size: int = 6000):
    """A few-hundred-thousand-parameter Qwen2.5-Omni thinker config matching the tiny processor."""
    from transformers import Qwen2_5OmniThinkerConfig

    from avcot.processor import TINY_DIR

    ids = _tiny_token_ids(TINY_DIR)
    head_dim = 16
    text = dict(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
        rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]},
        tie_word_embeddings=False, pad_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
    )
    assert sum(text["rope_parameters"]["mrope_section"]) == head_dim // 2  # M-RoPE splits half the head dim
    audio = dict(num_mel_bins=128, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=64,
                 d_model=32, output_dim=64, max_source_positions=1500, n_window=100)
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                  fullatt_block_indexes=[1], window_size=112, patch_size=14, spatial_merge_size=2,
                  temporal_patch_size=2)
    cfg = Qwen2_5OmniThinkerConfig(
        text_config=text, audio_config=audio, vision_config=vision,
        audio_token_index=ids["<|AUDIO|>"], image_token_index=ids["<|IMAGE|>"],
        video_token_index=ids["<|VIDEO|>"], audio_start_token_id=ids["<|audio_bos|>"],
        audio_end_token_id=ids["<|audio_eos|>"], user_token_id=ids["<|im_start|>"],
    )
    # get_rope_index reads these; released config.json files carry them, the constructor does not.
    cfg.vision_start_token_id = ids["<|vision_bos|>"]
    cfg.vision_end_token_id = ids["<|vision_eos|>"]
    cfg.pad_token_id = ids["<|endoftext|>"]
    cfg.eos_token_id = ids["<|im_end|>"]
    return cfg


def _tiny_token_ids(tiny_dir: Path) -> dict[str, int]:
    import json

    vocab = json.loads((tiny_dir / "tokenizer.json").read_text())["added_tokens"]
    return {t["content"]: t["id"] for t in vocab}


def build_tiny_thinker(seed: int = 0, dtype: torch.dtype = torch.float32):
    """Randomly initialised tiny thinker; the same seed gives the same weights."""
    from transformers import Qwen2_5OmniThinkerForConditionalGeneration

    cfg = tiny_config()
    cfg._attn_implementation = "sdpa"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2_5OmniThinkerForConditionalGeneration(cfg)
    model.generation_config.eos_token_id = cfg.eos_token_id
    model.generation_config.pad_token_id = cfg.pad_token_id
    return model.to(dtype)


def load_thinker(
    base: str = TINY,
    *,
    dtype: str = "float32",
    quantization: Literal["none", "nf4"] = "none",
    attn_implementation: str = "sdpa",
    seed: int = 0,
    trust_remote_code: bool = False,
):
    """Load the thinker from `base` ("tiny" or a checkpoint path/id), encoders frozen."""
    torch_dtype = _dtype(dtype)
    if base == TINY:
        model = build_tiny_thinker(seed=seed, dtype=torch_dtype)
        if quantization == "nf4":
            model = _quantize_in_place(model)
    else:
        model = _from_pretrained(base, torch_dtype, quantization, attn_implementation, trust_remote_code)
    freeze_encoders(model)
    return model


def _dtype(name: str) -> torch.dtype:
    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name not in table:
        raise ValueError(f"dtype must be one of {sorted(table)}, got {name!r}")
    return table[name]


def _bnb_config(compute_dtype: torch.dtype):
    from transformers import BitsAndBytesConfig

    # bitsandbytes needs full module names to skip; the frozen encoders stay in full precision.
    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
        llm_int8_skip_modules=["model.audio_tower", "model.visual", "lm_head"],
    )


def _pickle_refusal(weights: Path) -> UnsafeCheckpointError:
    return UnsafeCheckpointError(
        f"refusing to load {weights}: it is a pickle file, and unpickling can run arbitrary code; convert the "
        "checkpoint to safetensors (in a trusted environment: from_pretrained(...).save_pretrained(dir), "
        "which writes model.safetensors) and load that directory"
    )


def check_safetensors_weights(directory: str | Path) -> None:
    """Accept `directory` only if its model weights are safetensors; else a one-line `CheckpointError`.

    `model.safetensors` or a `model.safetensors.index.json` whose shards are all `.safetensors` files on
    disk is accepted (pickle files lying beside them are never read: loading passes use_safetensors=True).
    Pickle-only weights raise `UnsafeCheckpointError` naming the file; no weights at all, or a missing
    shard, raise `CheckpointError`. Nothing is opened but the JSON index.
    """
    import json

    root = Path(directory)
    if (root / "model.safetensors").is_file():
        return
    index = root / SAFE_INDEX
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise CheckpointError(f"{index} is not a safetensors index (a JSON object with a "
                                  f"'weight_map'): {type(e).__name__}") from None
        for shard in shards:
            if not str(shard).endswith(".safetensors"):
                raise _pickle_refusal(root / str(shard))
            if not (root / shard).is_file():
                raise CheckpointError(f"{root / shard} is listed in {index} but does not exist")
        return
    pickles = sorted(p for p in root.iterdir() if p.is_file() and p.name.lower().endswith(PICKLE_SUFFIXES))
    if pickles:
        raise _pickle_refusal(pickles[0])
    raise CheckpointError(f"{root} has no model weights: expected model.safetensors or {SAFE_INDEX}")


def _weights_dir(where: str) -> Path | None:
    """The local directory `where` (a path or a hub id in the HF cache) holds its files in, if known."""
    if Path(where).is_dir():
        return Path(where)
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(where, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached: from_pretrained's own error (use_safetensors=True) says so
        return None


def _from_pretrained(base, torch_dtype, quantization, attn_implementation, trust_remote_code):
    from transformers import AutoConfig, Qwen2_5OmniThinkerForConditionalGeneration

    from avcot.processor import checkpoint_location

    where = checkpoint_location(base)
    try:
        cfg = AutoConfig.from_pretrained(where, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise FileNotFoundError(
            f"cannot load a Qwen2.5-Omni checkpoint from {base!r}: expected a local directory with config.json "
            f"and safetensors weights (or 'tiny' for the embedded default). Cause: {e}"
        ) from e
    kwargs = dict(dtype=torch_dtype, attn_implementation=attn_implementation, trust_remote_code=trust_remote_code,
                  use_safetensors=True)
    if quantization == "nf4":
        kwargs["quantization_config"] = _bnb_config(torch_dtype)
    if cfg.model_type == "qwen2_5_omni":  # full model (thinker + talker): keep the thinker only
        kwargs["config"] = cfg.thinker_config
        kwargs["key_mapping"] = {r"^thinker\.": ""}
    elif cfg.model_type != "qwen2_5_omni_thinker":
        raise ValueError(f"{base!r} is a {cfg.model_type!r} checkpoint; expected qwen2_5_omni or qwen2_5_omni_thinker")
    local = _weights_dir(where)
    if local is not None:  # refuse pickle weights with a clear message before transformers sees them
        check_safetensors_weights(local)
    return Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(where, **kwargs)


def _quantize_in_place(model):
    """4-bit the tiny model's language-model linears by a save/reload through bitsandbytes."""
    import tempfile

    from transformers import Qwen2_5OmniThinkerForConditionalGeneration

    dtype = next(model.parameters()).dtype
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        return Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(
            tmp, dtype=dtype, quantization_config=_bnb_config(dtype), use_safetensors=True
        )


def freeze_encoders(model) -> None:
    """Freeze the audio and vision towers (frozen in both papers) and put them in eval mode."""
    inner = model.model
    for name in ENCODERS:
        tower = getattr(inner, name)
        tower.requires_grad_(False)
        tower.eval()


TOWER_NAMES = {"audio": ("audio_tower",), "vision": ("visual",)}
"""`train_towers` values that name one tower -> that tower's attribute on the thinker's inner model."""


def trained_towers(train_towers: bool | str) -> tuple[str, ...]:
    """The towers `train_towers` trains: True = both, "audio" / "vision" = that one, False = none (ValueError
    for anything else)."""
    if isinstance(train_towers, bool):
        return ENCODERS if train_towers else ()
    if train_towers not in TOWER_NAMES:
        raise ValueError(f"train_towers must be true, false, 'audio' or 'vision', not {train_towers!r}")
    return TOWER_NAMES[train_towers]


def train_encoders(model, names: tuple[str, ...] = ENCODERS) -> None:
    """Make the towers `names` (default: audio and vision) trainable and put them in train mode.

    Only for random-init models (the embedded tiny thinker): their towers have never been pretrained, so
    frozen they cannot learn to hear or read; training them stands in for the pretraining the papers'
    frozen encoders had. One tower alone is for a model whose other tower had its own pre-training already
    (bench/learn_read.py teaches the vision tower to read; the SFT after it may keep that tower as it is).
    Never set on a released checkpoint.
    """
    inner = model.model
    for name in names:
        tower = getattr(inner, name)
        tower.requires_grad_(True)
        tower.train()


def apply_lora(model, settings: LoraSettings = LoraSettings()):
    """Wrap `model` with a PEFT LoRA adapter on the language model only; everything else frozen."""
    from peft import LoraConfig, get_peft_model

    # No prepare_model_for_kbit_training for nf4: it upcasts every non-4-bit weight (towers, embeddings,
    # LM head) to fp32, ~10 GB on 7B, and its input-grad hook would backprop through the frozen towers.
    config = LoraConfig(
        r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
        target_modules=LM_ATTENTION if settings.target == "attention" else LM_ALL_LINEAR,
        bias="none", modules_to_save=["lm_head"] if settings.train_lm_head else None,
    )
    peft_model = get_peft_model(model, config)
    freeze_encoders(peft_model.base_model.model)
    return peft_model


def train_language_model(model, *, train_lm_head: bool = False) -> None:
    """Full fine-tuning: the thinker's language model (embeddings, decoder layers, final norm) trainable,
    the audio and vision towers frozen, the LM head trainable only with `train_lm_head` (a head tied to the
    input embeddings is one tensor with them, so it trains either way)."""
    model.requires_grad_(False)
    model.model.language_model.requires_grad_(True)
    if train_lm_head:
        model.lm_head.requires_grad_(True)
    freeze_encoders(model)


def load_adapter(model, adapter_dir: str, *, trainable: bool = False):
    """Attach a saved PEFT adapter directory to `model`, validating the directory first."""
    from peft import PeftModel

    path = Path(adapter_dir).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"adapter directory {adapter_dir!r} does not exist")
    missing = [f for f in ("adapter_config.json", "adapter_model.safetensors") if not (path / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{adapter_dir!r} is not a PEFT adapter directory: missing {', '.join(missing)} "
            "(only safetensors adapters are loaded)"
        )
    return PeftModel.from_pretrained(model, str(path), is_trainable=trainable)


CheckpointKind = Literal["tiny", "adapter", "full", "lightning", "hub"]


def checkpoint_kind(where: str) -> CheckpointKind:
    """What `where` names, decided here only: 'tiny' (the embedded model), 'adapter' (a PEFT adapter directory:
    adapter_config.json), 'full' (a Hugging Face model directory: config.json), 'lightning' (a Lightning .ckpt
    file: a pickle, never loaded as a model) or 'hub' (a hub id, read from the local HF cache).

    A directory with neither file, any other file, or a missing path raises naming `where`.
    """
    from avcot.processor import checkpoint_location

    if where == TINY:
        return "tiny"
    path = Path(where).expanduser()
    if path.is_file() and path.suffix.lower() == ".ckpt":
        return "lightning"
    if path.is_dir():
        if (path / "adapter_config.json").is_file():
            return "adapter"
        if (path / "config.json").is_file():
            return "full"
        raise FileNotFoundError(f"{where!r} has neither adapter_config.json (PEFT adapter) nor config.json "
                                "(full checkpoint)")
    checkpoint_location(where)  # a file, or a path that does not exist, raises naming it
    return "hub"


class AdapterLoadError(CheckpointError):
    """A PEFT adapter could not be attached to its base (the message names both and the cause)."""


def load_model(base: str = TINY, adapter: str | None = None, *, dtype: str = "float32",
               quantization: Literal["none", "nf4"] = "none", seed: int = 0):
    """The thinker to evaluate or serve, in eval mode: `base` ('tiny', a full model directory or a cached hub id)
    with the PEFT `adapter` directory attached when one is given.

    A `base` that is an adapter directory or a Lightning .ckpt is refused with what to pass instead (a .ckpt is
    a pickle; the run also wrote its adapter and, for full fine-tuning, a safetensors model directory). A
    failing adapter raises `AdapterLoadError`; a failing base raises `load_thinker`'s errors.
    """
    kind = checkpoint_kind(base)
    if kind == "adapter":
        raise CheckpointError(f"{base!r} is a LoRA adapter directory, not a model: pass it with --adapter (eval: "
                              "--ckpt) and give the base model with --base")
    if kind == "lightning":
        raise UnsafeCheckpointError(
            f"refusing to load {base}: a Lightning .ckpt is a pickle file, and unpickling can run arbitrary code; "
            "pass the adapter directory the run saved (adapter-last/) or its exported model (model-last/)")
    model = load_thinker(base, dtype=dtype, quantization=quantization, seed=seed)
    if adapter:
        try:
            model = load_adapter(model, adapter, trainable=False)
        except (OSError, ValueError, RuntimeError) as e:
            raise AdapterLoadError(f"cannot load LoRA adapter {adapter!r} onto {base!r}: {e}") from e
    return model.eval()


def base_and_adapter(ckpt: str | None, base: str) -> tuple[str, str | None]:
    """(model, adapter) to load for a checkpoint given on top of `base` (eval's --ckpt): none -> (base, None);
    an adapter directory -> (base, ckpt); a full model directory, hub id or .ckpt -> (ckpt, None)."""
    if ckpt is None or str(ckpt).strip().lower() in ("", "none"):
        return base, None
    if checkpoint_kind(ckpt) == "adapter":
        return base, str(Path(ckpt).expanduser())
    return str(Path(ckpt).expanduser()) if Path(ckpt).expanduser().exists() else ckpt, None


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total
