"""Rollout decoding: our static-cache decoder vs HF `generate`, same model, same prompt, same process.

    python bench/bench_rollout.py --size 7b --new 256

Stock (as the stock HF + PEFT baseline measures it): `generate(max_new_tokens=N, min_new_tokens=N,
do_sample=True)` on B left-padded prompts (B=1 and B=4), plus `num_return_sequences=G` on one prompt (what a
GRPO loop on the stock stack does for a group). Ours: `avcot.rollout.RolloutEngine.sample` with `static=True`
(one prefill per prompt, cache expanded to G, static KV cache, decode step compiled with CUDA graphs on a GPU)
for (B=1, G=1), (B=1, G=G), (B=4, G=1). Tokens/s = rows * N / seconds, prefill included on both sides. The first
call of ours (compile + graph capture) is timed separately (stage=compile). A greedy agreement check
(stage=check) compares our greedy tokens with HF greedy `generate` for --check-tokens tokens. JSON lines go to
--out (default $OUT/bench_rollout_<size>.jsonl).
"""
from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from avcot.chat import model_inputs  # noqa: E402
from avcot.model import LoraSettings, apply_lora  # noqa: E402
from bench import benchkit as bk  # noqa: E402
from avcot.rollout import RolloutEngine, RolloutSettings  # noqa: E402
from avcot.thinker.forward import unwrap_thinker  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    bk.add_model_args(p)
    p.add_argument("--new", type=int, default=None, help="new tokens per completion (default 256; tiny 16)")
    p.add_argument("--group", type=int, default=4, help="GRPO group size G")
    p.add_argument("--compile", choices=("auto", "on", "off"), default="auto",
                   help="compile our decode step with mode=reduce-overhead (auto: on CUDA only)")
    p.add_argument("--configs", default="1x1,1xG,4x1",
                   help="PROMPTSxCOMPLETIONS per configuration, G = --group (split a long GPU run over calls)")
    p.add_argument("--iters", type=int, default=2, help="timed calls per configuration")
    p.add_argument("--check-tokens", type=int, default=None, help="greedy tokens compared with HF (default 32; tiny 8)")
    p.add_argument("--no-stock", action="store_true", help="skip HF generate")
    p.add_argument("--out", default=None, help="JSON-lines file (default $OUT/bench_rollout_<size>.jsonl)")
    return p.parse_args(argv)


def parse_configs(text: str, group: int) -> list[tuple[int, int]]:
    """'1x1,1xG,4x1' -> [(1, 1), (1, group), (4, 1)]."""
    out = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        prompts, _, rows = part.partition("x")
        try:
            out.append((int(prompts), group if rows == "G" else int(rows)))
        except ValueError:
            raise SystemExit(f"--configs: {part!r} is not PROMPTSxCOMPLETIONS (e.g. 1x1, 1xG, 4x1)") from None
    if not out:
        raise SystemExit("--configs: no configuration given")
    return out


def prompt_batch(model, size: str, bsz: int, dev) -> dict:
    """A prompt-only batch (8 text tokens after the media, as the reference baseline's generate stage)."""
    batch = bk.make_batch(unwrap_thinker(model), size, bsz, text_len=8)
    batch.pop("labels")
    return bk.to_device(batch, dev)


def stock_generate(model, batch, new: int, rows_per_prompt: int):
    def run():
        model.generate(**model_inputs(batch, with_labels=False), max_new_tokens=new, min_new_tokens=new,
                       do_sample=True, temperature=1.0, top_k=0, num_return_sequences=rows_per_prompt)
    return run


def ours_settings(args, **kw) -> RolloutSettings:
    """Our static-cache settings with --compile applied."""
    return RolloutSettings(static=True, compile={"auto": None, "on": True, "off": False}[args.compile], **kw)


def ours_generate(engine: RolloutEngine, settings: RolloutSettings, batch, gen: torch.Generator):
    def run():
        engine.sample(batch, settings, generator=gen)
    return run


def greedy_check(emit, model, engine: RolloutEngine, settings: RolloutSettings, batch) -> None:
    """How many leading greedy tokens ours and HF's agree on (random-init weights: near-ties can flip in bf16)."""
    n = settings.max_new_tokens
    with torch.no_grad():
        ref = model.generate(**model_inputs(batch, with_labels=False), max_new_tokens=n, min_new_tokens=n,
                             do_sample=False)[:, batch["input_ids"].shape[1]:]
    ours = engine.sample(batch, settings).completion_ids
    same = (ref == ours).long().cumprod(dim=1).sum(dim=1)  # leading agreement per row
    emit(stage="check", tokens=n, leading_agreement=same.tolist(), exact=bool(torch.equal(ref, ours)))


def measure(emit, dev, path: str, fn, *, iters: int, rows: int, new: int, **info) -> dict | None:
    try:
        bk.reset_peak(dev)
        med, times = bk.timed(fn, dev, iters, warm=0)
        return emit(stage="generate", path=path, secs=med, times=times, rows=rows, new_tokens=new,
                    gen_tokens_per_s=rows * new / med, peak_gb=bk.peak_gb(dev), **info)
    except Exception as e:  # noqa: BLE001 -- one failing configuration must not end the run
        emit(stage="generate", path=path, rows=rows, error=repr(e)[:400], tb=traceback.format_exc()[-800:], **info)
        return None


def main(argv=None) -> int:
    args = parse_args(argv)
    dev = bk.device()
    tiny = args.size == "tiny"
    new = args.new or (16 if tiny else 256)
    dtype = bk.dtype_for(args.dtype, dev)
    emit = bk.Emitter(args.out or bk.default_out(f"bench_rollout_{args.size}.jsonl"))
    emit(stage="versions", **bk.versions(dev))
    model = apply_lora(bk.build_thinker(args.size, dtype, dev, layers=args.layers), LoraSettings()).eval()
    engine = RolloutEngine(model)
    gen = torch.Generator(device=dev).manual_seed(0)
    configs = parse_configs(args.configs, args.group)  # (prompts, completions per prompt)
    batches = {b: prompt_batch(model, args.size, b, dev) for b in {1} | {b for b, _ in configs}}
    greedy_check(emit, model, engine, ours_settings(args, max_new_tokens=args.check_tokens or (8 if tiny else 32)),
                 batches[1])
    results = {}
    for bsz, group in configs:
        info = dict(size=args.size, prompts=bsz, group=group, prompt_len=int(batches[bsz]["input_ids"].shape[1]))
        settings = ours_settings(args, max_new_tokens=new, group_size=group, do_sample=True, temperature=1.0)
        start = time.perf_counter()
        ours_generate(engine, settings, batches[bsz], gen)()  # compile + capture for this shape
        bk.sync(dev)
        emit(stage="compile", path="ours", secs=time.perf_counter() - start, compiled=engine.compiles(settings),
             **info)
        run = ours_generate(engine, settings, batches[bsz], gen)
        results[("ours", bsz, group)] = measure(emit, dev, "ours", run, iters=args.iters, rows=bsz * group,
                                                new=new, **info)
        if not args.no_stock:
            stock_generate(model, batches[bsz], new, group)()  # warm-up, as ours
            run = stock_generate(model, batches[bsz], new, group)
            results[("stock", bsz, group)] = measure(emit, dev, "stock", run, iters=args.iters, rows=bsz * group,
                                                     new=new, **info)
            ours, stock = results[("ours", bsz, group)], results[("stock", bsz, group)]
            if ours and stock:
                emit(stage="ratio", speedup=ours["gen_tokens_per_s"] / stock["gen_tokens_per_s"], **info)
    return 0


if __name__ == "__main__":
    sys.exit(main())
