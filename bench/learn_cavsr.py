"""Learning benchmark: does a model trained on AV-CoT targets actually use the video? (no external weights)

    python bench/learn_cavsr.py --out runs/learn_cavsr            # CPU, ~10 min on 2 cores
    python bench/learn_cavsr.py --out runs/learn_cavsr --steps 8000 --device cuda   # larger, on a GPU

1. Generate a fresh synthetic homophone set with `avcot.synth.all_contents`: every (pair, template,
   word, cue) content rendered `--renders` times, each rendering with its own voice (one of the
   `--voices` rate:pitch speakers), cue-box position, background tint and font size (espeak-ng speech,
   PIL frames).
2. Keep clips whose answer is decidable only from the video: pairs whose two words have identical
   toned pinyin (the audio is the same for both words) and cues that show the spoken word
   (background sign, subtitle, scene legend; the `conflict` cue is not generated).
3. Render each clip's AV-CoT target with `avcot.traces.render_avcot` from what the generator knows:
   visual cue text = the on-screen text, acoustic analysis = the tone pinyin, candidates =
   `avcot.phonetics.homophones(word)` plus the pair, transcription = the reference.
4. Train the tiny thinker (random init; all weights, not LoRA) on those targets, audio and vision towers
   included (departure, on purpose: both papers freeze PRETRAINED encoders; random-init frozen towers
   cannot learn to hear unheard voices or read text, see bench/RESULTS.md runs 5-6, so here they are
   trained as a stand-in for that pretraining; `--no-train-towers` freezes them). Every clip is
   encoded once through `avcot.data.cavsr.build_example` (the DataModule's path).
5. Save it (`save_pretrained`) and evaluate it with `avcot.eval` (true / black / random video and
   audio only), plus a "competitor video" condition (each clip gets the fresh picture of the OTHER word
   in the same template and cue: a model that reads the picture then writes the competitor) and
   per-cue outcome rates (spoken word / competitor in the hypothesis, carrier sentence right).

Split (departure from a plain split by sentence, on purpose). The default `--split render` tests
on FRESH renderings (another seed: new cue position, tint and font size; the voice is one of the
`--voices` speakers heard in training, or a random new one with `--voices ''`) of the contents
trained on. Every (template, cue) is trained with both words of its pair and the two words sound
identical, so neither the audio nor the sentence can decide a test clip: only reading the new picture
can. A ~1M-parameter model trained from scratch for minutes cannot transcribe a Mandarin sentence it
never heard, so `--split sentence` (held-out templates) gives CER near 1 in every condition and says
nothing about the video; it is kept to show exactly that. `--split content` holds out whole
(template, word, cue) contents and `--split context` holds out (template, cue) pairs with both words;
both need generalisation across combinations that this model does not reach (bench/RESULTS.md).
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import random
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere in the checkout
    sys.path.insert(0, str(ROOT))

VISUAL_CUES = ("background", "subtitle", "scene")
CUE_LABEL = {"background": "背景文字", "subtitle": "字幕", "scene": "场景"}


@dataclass(frozen=True)
class BenchSettings:
    """Data, training and evaluation settings of the learning benchmark."""

    out: str
    renders: int = 6
    """Renderings of every content in the training set."""
    test_renders: int = 1
    """Fresh renderings (another seed) of every content in the test set (--split render)."""
    seed: int = 0
    split: str = "render"
    """'render' (fresh renderings of trained contents), 'content' (held-out template+word+cue),
    'context' (held-out template+cue, both words) or 'sentence' (held-out templates)."""
    test_fraction: float = 0.25
    """Held-out share of groups for the content/context/sentence splits."""
    voices: str = "120:40,140:60,160:45"
    """Speakers as rate:pitch,... (espeak-ng wpm and pitch) shared by train and test; '' = a fresh
    random voice for every rendering (harder: the audio tower must generalise to unheard voices)."""
    workers: int = 4
    """Threads running espeak-ng/ffmpeg while synthesising."""
    steps: int = 3000
    batch_size: int = 8
    lr: float = 2e-3
    warmup: int = 60
    num_frames: int = 4
    frame_size: int = 112
    max_new_tokens: int = 160
    device: str = "cpu"
    threads: int = 0
    """torch CPU threads (0 = torch's default)."""
    train_towers: bool = True
    """Train the (random-init) audio and vision towers too; False freezes them as the papers do."""


def generate_set(settings: BenchSettings, name: str, seed: int, renders: int) -> list[dict]:
    """Fresh synthetic clips (every visual-cue content x renders); rows with absolute media paths."""
    from avcot.synth import all_contents, write_clips

    data_dir = Path(settings.out) / name
    specs = all_contents(renders, seed, VISUAL_CUES, parse_voices(settings.voices))
    manifest = write_clips(specs, data_dir, size=(224, 224), workers=settings.workers, progress=True)
    rows = [json.loads(x) for x in manifest.read_text(encoding="utf-8").splitlines() if x.strip()]
    for r in rows:
        r["video"], r["audio"] = str(data_dir / r["video"]), str(data_dir / r["audio"])
    return rows


def parse_voices(text: str) -> tuple[tuple[int, int], ...]:
    """'120:40,140:60' -> ((120, 40), (140, 60)); '' -> () (random voices)."""
    try:
        return tuple((int(r), int(p)) for r, p in (v.split(":") for v in text.split(",") if v.strip()))
    except ValueError:
        raise ValueError(f"--voices must look like 120:40,140:60 (rate:pitch,...), got {text!r}") from None


def usable_rows(rows: list[dict]) -> list[dict]:
    """Video-decidable clips only: identical toned pinyin for both words and a cue showing the spoken word.

    Adds the grouping columns `content` (template|word|cue) and `context` (template|cue).
    """
    from avcot.phonetics import pinyin

    return [dict(r, content=f"{r['sentence_id']}|{r['target']}|{r['cue']}", context=f"{r['sentence_id']}|{r['cue']}")
            for r in rows if r["cue"] in VISUAL_CUES and pinyin(r["target"]) == pinyin(r["competitor"])]


def avcot_trace(row: dict) -> str:
    """The AV-CoT target of one synthetic clip, from what the generator knows about it."""
    from avcot.phonetics import homophones
    from avcot.traces import AVCoTTrace, render_avcot

    candidates = sorted(set(homophones(row["target"])) | {row["target"], row["competitor"]})
    reasoning = f"同音候选：{'、'.join(candidates)}。画面显示“{row['screen_text']}”，支持“{row['target']}”。"
    return render_avcot(AVCoTTrace(visual_cues=f"{CUE_LABEL[row['cue']]}：{row['screen_text']}",
                                   acoustic_pinyin=row["pinyin"], reasoning=reasoning, transcription=row["text"]))


def split(rows: list[dict], settings: BenchSettings) -> tuple[list[dict], list[dict]]:
    """(train, test) with avcot.data.rows.split_rows, grouped by content, context or sentence template."""
    from avcot.data.rows import split_rows

    column = {"content": "content", "sentence": "sentence_id", "context": "context"}[settings.split]
    return split_rows(rows, settings.test_fraction, settings.seed, column)


def write_manifest(rows: list[dict], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(dict(r, trace=avcot_trace(r)), ensure_ascii=False) + "\n" for r in rows),
                    encoding="utf-8")
    return path


def encode_rows(rows: list[dict], processor, settings: BenchSettings) -> list:
    """Every training clip encoded once (prompt + AV-CoT target) through the DataModule's build_example."""
    from avcot.data.cavsr import build_example, clip_from_row
    from avcot.data.clips import MediaSettings

    media = MediaSettings(num_frames=settings.num_frames, frame_size=settings.frame_size)
    return [build_example(clip_from_row(dict(r, trace=avcot_trace(r)), Path("/")), processor=processor,
                          target="avcot", settings=media, use_audio_in_video=False) for r in rows]


def lr_at(step: int, settings: BenchSettings) -> float:
    """Linear warmup, then cosine decay to 10% of the peak."""
    if step < settings.warmup:
        return settings.lr * (step + 1) / settings.warmup
    frac = (step - settings.warmup) / max(1, settings.steps - settings.warmup)
    return settings.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


def masked_lm_loss(model, batch: dict) -> torch.Tensor:
    """Mean next-token cross-entropy over labelled positions only.

    Same value as the model's own loss, but the LM head runs on the ~20% of positions that carry a
    label instead of all of them (the 6000-word head dominates a tiny model's step on CPU).
    """
    from avcot.chat import model_inputs

    hidden = model.model(**model_inputs(batch, with_labels=False))[0]  # [B, L, H]
    labels = batch["labels"][:, 1:]  # [B, L-1]
    keep = labels != -100
    logits = model.lm_head(hidden[:, :-1][keep])  # [N, V]
    return torch.nn.functional.cross_entropy(logits.float(), labels[keep])


def train(model, examples: list, pad_id: int, settings: BenchSettings) -> list[tuple[int, float]]:
    """AdamW on the cached examples (LM always; towers with --train-towers); (step, mean loss) every 50."""
    from avcot.chat import collate
    from avcot.eval.runner import move_batch

    model.requires_grad_(True)
    model.train()
    if not settings.train_towers:
        from avcot.model import freeze_encoders

        freeze_encoders(model)  # also puts the towers back in eval mode
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=settings.lr, weight_decay=0.01)
    rng, device, log, window = random.Random(settings.seed), next(model.parameters()).device, [], []
    order: list[int] = []
    start = time.monotonic()
    for step in range(settings.steps):
        if len(order) < settings.batch_size:
            order += rng.sample(range(len(examples)), len(examples))
        idx, order = order[: settings.batch_size], order[settings.batch_size:]
        batch = move_batch(collate([examples[i].encoded for i in idx], pad_id), device, torch.float32)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, settings)
        loss = masked_lm_loss(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        window.append(loss.item())
        if (step + 1) % 50 == 0 or step + 1 == settings.steps:
            log.append((step + 1, sum(window) / len(window)))
            print(f"step {step + 1}/{settings.steps} loss {log[-1][1]:.4f} ({time.monotonic() - start:.0f}s)",
                  flush=True)
            window = []
    model.eval()
    return log


def outcome(hypothesis: str, row: dict) -> dict[str, bool]:
    """What one hypothesis got right: the spoken word, the competitor, the sentence frame, all of it.

    `frame` is the carrier sentence with the homophone slot blanked (so it checks the audio side:
    the template is decided by what is said, the word by what is shown).
    """
    def blank(text: str) -> str:
        return text.replace(row["target"], "{w}").replace(row["competitor"], "{w}")

    return {"word": row["target"] in hypothesis, "competitor": row["competitor"] in hypothesis,
            "frame": blank(hypothesis) == blank(row["text"]), "exact": hypothesis == row["text"]}


def breakdown(preds, rows: list[dict]) -> dict[str, dict[str, dict[str, float]]]:
    """condition -> cue ('all' too) -> rate of each `outcome` field (and n)."""
    by_id = {r["id"]: r for r in rows}
    tallies: dict[str, dict[str, list[dict[str, bool]]]] = {}
    for p in preds:
        row = by_id[p.id]
        hit = outcome(p.hypothesis, row)
        for cue in ("all", row["cue"]):
            tallies.setdefault(p.ablation, {}).setdefault(cue, []).append(hit)
    return {cond: {cue: {"n": len(hits), **{k: round(sum(h[k] for h in hits) / len(hits), 3) for k in hits[0]}}
                   for cue, hits in sorted(per_cue.items())} for cond, per_cue in tallies.items()}


def competitor_video_rows(rows: list[dict]) -> tuple[list[dict], int]:
    """Each test clip with the video of the clip that shows the OTHER word of its pair in the same
    (template, cue); the reference stays what is spoken. Returns (rows, clips without such a partner).

    A model that reads the picture should now write the competitor: the sharpest check of visual use.
    """
    partners: dict[tuple[str, str, str], str] = {}
    for r in rows:
        partners.setdefault((r["sentence_id"], r["cue"], r["target"]), r["video"])
    out = [dict(r, video=partners[key]) for r in rows
           if (key := (r["sentence_id"], r["cue"], r["competitor"])) in partners]
    return out, len(rows) - len(out)


def summary_table(summary: dict) -> str:
    """results.json as a markdown table: CER and outcome rates per condition, word accuracy per cue."""
    cues = [c for c in ("background", "subtitle", "scene") if c in summary["outcomes"].get("true", {})]
    lines = [f"# Learning benchmark: {summary['date']}", "", f"Command: `{summary['command']}`  ",
             f"Machine: {summary['machine']}; {summary['clips_train']} training / {summary['clips_test']} test "
             f"clips; training {summary['train_seconds']} s, total {summary['total_seconds']} s.", "",
             "| condition | corpus CER | word acc | competitor | frame right | " + " / ".join(cues) + " |",
             "|---|---|---|---|---|---|"]
    for cond, cer in summary["cer"].items():
        o = summary["outcomes"][cond]
        per_cue = " / ".join(f"{o[c]['word']:.2f}" for c in cues if c in o)
        lines.append(f"| {cond} | {cer:.3f} | {o['all']['word']:.2f} | {o['all']['competitor']:.2f} | "
                     f"{o['all']['frame']:.2f} | {per_cue} |")
    return "\n".join(lines) + "\n"


def evaluate(model_dir: Path, manifest: Path, settings: BenchSettings, name: str, ablations: tuple[str, ...]):
    """The real eval path: python -m avcot.eval cavsr on the saved full checkpoint, into OUT/<name>."""
    from avcot.eval.cavsr import CavsrEvalSettings, run_cavsr
    from avcot.eval.runner import ModelSpec

    return run_cavsr(CavsrEvalSettings(
        data=str(manifest), out=str(Path(settings.out) / name),
        model=ModelSpec(ckpt=str(model_dir), device=settings.device), ablations=ablations,
        batch_size=8, max_new_tokens=settings.max_new_tokens, num_frames=settings.num_frames,
        frame_size=settings.frame_size, seed=settings.seed))


def run(settings: BenchSettings) -> dict:
    """Generate, filter, split, train, save, evaluate; returns (and writes) results.json and summary.md."""
    from avcot.eval.metrics import cer_by_ablation
    from avcot.model import count_parameters, load_thinker
    from avcot.processor import load_processor

    if settings.threads:
        torch.set_num_threads(settings.threads)
    out, t0 = Path(settings.out), time.monotonic()
    rows = usable_rows(generate_set(settings, "synth", settings.seed, settings.renders))
    if settings.split == "render":  # a different seed: different variations, never a training clip
        fresh = usable_rows(generate_set(settings, "synth_test", settings.seed + 1000, settings.test_renders))
        train_rows, test_rows = rows, fresh
    else:
        train_rows, test_rows = split(rows, settings)
    write_manifest(train_rows, out / "train.jsonl")
    test_manifest = write_manifest(test_rows, out / "test.jsonl")
    print(f"clips: {len(rows)} usable, {len(train_rows)} train, {len(test_rows)} test", flush=True)
    processor = load_processor("tiny")
    examples = encode_rows(train_rows, processor, settings)
    model = load_thinker("tiny", seed=settings.seed).to(settings.device)
    t_train = time.monotonic()
    losses = train(model, examples, processor.tokenizer.pad_token_id, settings)
    train_s = time.monotonic() - t_train
    model.save_pretrained(str(out / "model"))
    ablations = ("black", "random", "audio_only")
    preds = list(evaluate(out / "model", test_manifest, settings, "eval", ablations).predictions)
    swapped, unpaired = competitor_video_rows(test_rows)
    if swapped:  # same model, true-video eval of the swapped manifest, renamed as its own condition
        swap_manifest = write_manifest(swapped, out / "test_competitor_video.jsonl")
        swap = evaluate(out / "model", swap_manifest, settings, "eval_competitor_video", ())
        preds += [replace(p, ablation="competitor_video") for p in swap.predictions]
    cer = {s.name: s.cer for s in cer_by_ablation(preds)}
    summary = {
        "date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.node()} {platform.processor()} "
        f"{torch.get_num_threads()} threads, device {settings.device}", "command": " ".join(sys.argv),
        "settings": asdict(settings), "params": count_parameters(model)[1], "clips_usable": len(rows),
        "clips_train": len(train_rows), "clips_test": len(test_rows), "train_seconds": round(train_s, 1),
        "total_seconds": round(time.monotonic() - t0, 1), "final_loss": losses[-1][1] if losses else None,
        "loss_log": losses, "cer": cer, "clips_without_competitor_video": unpaired,
        "outcomes": breakdown(preds, test_rows),
    }
    (out / "results.json").write_text(json.dumps(summary, ensure_ascii=False, indent=2), encoding="utf-8")
    (out / "summary.md").write_text(summary_table(summary), encoding="utf-8")
    print(json.dumps({"cer": cer, "train_seconds": summary["train_seconds"], "total_seconds": summary["total_seconds"],
                      "outcomes": {c: v["all"] for c, v in summary["outcomes"].items()}}, ensure_ascii=False, indent=2))
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = BenchSettings(out="")
    ap.add_argument("--out", required=True, help="run directory (synthetic data, model, eval report)")
    for name in ("renders", "test_renders", "seed", "steps", "batch_size", "warmup", "num_frames", "frame_size",
                 "max_new_tokens", "threads", "workers"):
        ap.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(defaults, name))
    for name in ("test_fraction", "lr"):
        ap.add_argument(f"--{name.replace('_', '-')}", type=float, default=getattr(defaults, name))
    ap.add_argument("--split", choices=("render", "content", "context", "sentence"), default=defaults.split)
    ap.add_argument("--device", default=defaults.device, help="cpu | cuda")
    ap.add_argument("--voices", default=defaults.voices, help="rate:pitch,... shared speakers ('' = random)")
    ap.add_argument("--train-towers", action=argparse.BooleanOptionalAction, default=defaults.train_towers,
                    help="train the random-init audio and vision towers too (default; --no-train-towers freezes them)")
    args = ap.parse_args(argv)
    run(BenchSettings(**vars(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
