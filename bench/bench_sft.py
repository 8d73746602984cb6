"""SFT step: our levers vs the stock HF+PEFT step, same model, same batch, same process.

    python bench/bench_sft.py --size 7b --levers cache,label --modes plain,ckpt --bsz 1,4
    python bench/bench_sft.py --size 7b --quant nf4 --levers cache,label,ckpt --modes ckpt --bsz 1

Stock step (as the stock HF + PEFT baseline script, hf_peft_baseline.py): `model(**batch).loss.backward()`, AdamW step;
in `ckpt` mode with HF's `gradient_checkpointing_enable` + `enable_input_require_grads`.
Our step: `avcot.thinker.label_loss.sft_loss` with the chosen levers; in `ckpt` mode with
`enable_lm_checkpointing`. Writes JSON lines (stage=check|sft|ratio) to --out (default $OUT/bench_sft_<size>.jsonl).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from avcot.chat import model_inputs  # noqa: E402
from avcot.model import LoraSettings, apply_lora  # noqa: E402
from bench import benchkit as bk  # noqa: E402
from avcot.thinker.checkpointing import disable_lm_checkpointing, enable_lm_checkpointing  # noqa: E402
from avcot.thinker.forward import compute_media_features, lm_hidden_states, unwrap_thinker  # noqa: E402
from avcot.thinker.encoder_cache import EncoderCache, media_keys  # noqa: E402
from avcot.thinker.label_loss import label_only_loss  # noqa: E402

LEVERS = ("cache", "label", "ckpt")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    bk.add_model_args(p)
    p.add_argument("--levers", default="cache,label",
                   help="comma list of our levers: cache (encoder outputs from disk), label (LM head at label "
                        "positions only), ckpt (LM-only activation checkpointing in every mode)")
    p.add_argument("--modes", default="plain,ckpt",
                   help="plain: no checkpointing on either path; ckpt: HF gradient checkpointing on the stock "
                        "path vs LM-only checkpointing on ours")
    p.add_argument("--bsz", default=None, help="comma list of batch sizes (default 1,4; tiny 1,2)")
    p.add_argument("--quant", choices=("none", "nf4"), default="none", help="nf4: QLoRA base (needs bitsandbytes)")
    p.add_argument("--iters", type=int, default=None, help="timed steps (default 4; tiny 2)")
    p.add_argument("--warm", type=int, default=1, help="untimed steps first (fills the encoder cache)")
    p.add_argument("--no-stock", action="store_true", help="skip the stock path (e.g. when it runs out of memory)")
    p.add_argument("--cache-dir", default=None, help="encoder cache folder (default: a fresh temporary folder)")
    p.add_argument("--out", default=None, help="JSON-lines file (default $OUT/bench_sft_<size>.jsonl)")
    return p.parse_args(argv)


def stock_step(model, opt, batch):
    """One HF+PEFT step as the reference baseline runs it."""
    def step():
        model(**model_inputs(batch)).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def our_loss(model, batch, levers: set[str], cache: EncoderCache | None, keys):
    """Loss through the piecewise forward with the chosen levers."""
    thinker = unwrap_thinker(model)
    feats = cache.features(model, batch, keys) if cache is not None else compute_media_features(thinker, batch)
    hidden = lm_hidden_states(model, batch, feats)  # [B, L, H]
    if "label" in levers:
        return label_only_loss(thinker.lm_head, hidden, batch["labels"])
    logits = thinker.lm_head(hidden).float()  # [B, L, V] full width, as the stock path
    return torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), batch["labels"][:, 1:].flatten())


def our_step(model, opt, batch, levers, cache, keys):
    def step():
        our_loss(model, batch, levers, cache, keys).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def measure(emit, dev, name: str, step, *, iters: int, warm: int, **info) -> dict | None:
    """Time `step` and emit one stage=sft record (or the error)."""
    try:
        bk.reset_peak(dev)
        med, times = bk.timed(step, dev, iters, warm)
        bsz = info["bsz"]
        return emit(stage="sft", path=name, step_s=med, times=times, samples_per_s=bsz / med,
                    tokens_per_s=bsz * info["seq"] / med, peak_gb=bk.peak_gb(dev), **info)
    except Exception as e:  # noqa: BLE001 -- OOM on one config must not end the run
        emit(stage="sft", path=name, error=repr(e)[:400], tb=traceback.format_exc()[-600:], **info)
        if dev.type == "cuda":
            torch.cuda.empty_cache()
        return None


def check(emit, model, batch, levers, cache, keys) -> None:
    """Our loss vs the stock loss on one batch (no grad): the relative difference is reported."""
    with torch.no_grad():
        ref = model(**model_inputs(batch)).loss.float().item()
        ours = our_loss(model, batch, levers, cache, keys).float().item()
    emit(stage="check", stock_loss=ref, our_loss=ours, rel_diff=abs(ours - ref) / max(abs(ref), 1e-12))


def run_mode(emit, model, opt, dev, mode, bsz, args, levers, cache, size) -> None:
    cpu_batch = bk.make_batch(unwrap_thinker(model), size, bsz)
    keys = media_keys(cpu_batch)  # in training the collate does this (hash_media): on the host, off the GPU's path
    batch = bk.to_device(cpu_batch, dev)
    info = dict(size=size, mode=mode, bsz=bsz, seq=int(batch["input_ids"].shape[1]), quant=args.quant)
    ours_ckpt = mode == "ckpt" or "ckpt" in levers
    (enable_lm_checkpointing if ours_ckpt else disable_lm_checkpointing)(model)
    ours = measure(emit, dev, "ours", our_step(model, opt, batch, levers, cache, keys), iters=args.iters,
                   warm=args.warm, levers=sorted(levers), lm_ckpt=ours_ckpt, **info)
    disable_lm_checkpointing(model)
    if args.no_stock:
        return
    if mode == "ckpt":
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    stock = measure(emit, dev, "stock", stock_step(model, opt, batch), iters=args.iters, warm=args.warm,
                    hf_ckpt=mode == "ckpt", **info)
    if mode == "ckpt":
        model.gradient_checkpointing_disable()
        model.disable_input_require_grads()
    if ours and stock:
        emit(stage="ratio", speedup=stock["step_s"] / ours["step_s"], peak_ratio=(
            ours["peak_gb"] / stock["peak_gb"] if ours["peak_gb"] else None), **info)


def main(argv=None) -> int:
    args = parse_args(argv)
    dev = bk.device()
    levers = {x for x in args.levers.split(",") if x}
    if levers - set(LEVERS):
        raise SystemExit(f"unknown levers {sorted(levers - set(LEVERS))}; choose from {LEVERS}")
    tiny = args.size == "tiny"
    args.iters = args.iters or (2 if tiny else 4)
    dtype = bk.dtype_for(args.dtype, dev)
    bsizes = [int(b) for b in (args.bsz or ("1,2" if tiny else "1,4")).split(",")]
    emit = bk.Emitter(args.out or bk.default_out(f"bench_sft_{args.size}.jsonl"))
    emit(stage="versions", **bk.versions(dev))
    model = bk.build_thinker(args.size, dtype, dev, layers=args.layers)
    if args.quant == "nf4":
        emit(stage="nf4", linears=bk.quantize_lm_nf4(model))
    model = apply_lora(model, LoraSettings(dropout=0.0 if tiny else 0.05))
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    with tempfile.TemporaryDirectory() as tmp:
        cache = EncoderCache(args.cache_dir or tmp, model) if "cache" in levers else None
        first = bk.make_batch(unwrap_thinker(model), args.size, 1)
        check(emit, model, bk.to_device(first, dev), levers, cache, media_keys(first))
        for mode in [m for m in args.modes.split(",") if m]:
            for bsz in bsizes:
                run_mode(emit, model, opt, dev, mode, bsz, args, levers, cache, args.size)
        if cache is not None:
            emit(stage="cache", hits=cache.stats.hits, misses=cache.stats.misses)
    return 0


if __name__ == "__main__":
    sys.exit(main())
