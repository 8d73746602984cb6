"""Learning benchmark: does a model trained on AV-CoT targets actually use the video? (no external weights)

    python bench/learn_cavsr.py --out runs/learn_cavsr            # CPU, ~20-30 min on 2 cores
    python bench/learn_cavsr.py --out runs/learn_cavsr --steps 4000 --device cuda   # larger, on a GPU

1. Generate a fresh synthetic homophone set with `avcot.synth` (espeak-ng speech, rendered cue frames).
2. Keep clips whose answer is decidable only from the video: pairs whose two words have identical
   toned pinyin (the audio is the same for both words) and cues that show the spoken word
   (background sign, subtitle, scene legend; the `conflict` cue is dropped).
3. Render each clip's AV-CoT target with `avcot.traces.render_avcot` from what the generator knows:
   visual cue text = the on-screen text, acoustic analysis = the tone pinyin, candidates =
   `avcot.phonetics.homophones(word)` plus the pair, transcription = the reference.
4. Train the tiny thinker's whole language model (random init; all weights, not LoRA) on those
   targets; the random-init audio and vision towers stay frozen as in both papers (their random
   features still separate the cue pictures), or train too with --train-towers (3x slower on CPU).
   Every clip is encoded once through `datamodules.cavsr.build_example` (the DataModule's path).
5. Save it (`save_pretrained`) and evaluate it with `avcot.eval` (true / black / random video and
   audio only), plus the homophone-word accuracy (is the spoken word in the hypothesis?).

Split (departure from "split by sentence_id", on purpose): the default `--split content` holds out
whole clip contents (template, word, cue): no test clip's audio+picture pair was ever trained on,
but its carrier sentence was heard in training. A ~1M-parameter model trained from scratch for
minutes cannot transcribe a Mandarin sentence it never heard, so with `--split sentence` (unseen
templates) every condition's CER is near 1 and the comparison says nothing; that option is kept to
show exactly that. `--split instance` trains on every usable clip and tests on the same contents spoken
again at another speech rate (`--test-speed`), keeping only test clips whose (template, cue) was trained
with BOTH words of its pair: the audio (identical for the two words) and the template cannot decide, only
the picture can. Its frames are the training frames (the renderer is deterministic), so it measures
whether the homophone choice is driven by the video, not whether visual reading generalises.
`--split context` holds out (template, cue) pairs with BOTH words: a test clip's template was heard with
other cues and its cue's picture (per-word sign, subtitle or scene colour) was seen with other templates,
but never together, so neither (template, cue) memorisation nor the audio decides it.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import random
import sys
import time
from dataclasses import asdict, dataclass
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
    n: int = 240
    """Clips generated (before filtering and de-duplication)."""
    seed: int = 0
    split: str = "content"
    """'content' (held-out template+word+cue contents), 'sentence' (held-out templates), 'instance'
    (same contents re-spoken at `test_speed`) or 'context' (held-out template+cue, both words)."""
    test_speed: int = 170
    """espeak-ng words per minute of the re-spoken test set (--split instance; training uses 140)."""
    test_fraction: float = 0.25
    steps: int = 600
    batch_size: int = 8
    lr: float = 2e-3
    warmup: int = 60
    num_frames: int = 4
    frame_size: int = 112
    max_new_tokens: int = 160
    device: str = "cpu"
    threads: int = 0
    """torch CPU threads (0 = torch's default)."""
    train_towers: bool = False
    """Also train the (random-init) audio and vision towers; 3x slower on CPU."""


def generate_set(settings: BenchSettings, name: str = "synth", speed: int = 140) -> list[dict]:
    """Fresh synthetic clips; rows with absolute media paths."""
    from avcot.synth import generate

    data_dir = Path(settings.out) / name
    manifest = generate(data_dir, settings.n, settings.seed, size=(224, 224), speed=speed, progress=True)
    rows = [json.loads(x) for x in manifest.read_text(encoding="utf-8").splitlines() if x.strip()]
    for r in rows:
        r["video"], r["audio"] = str(data_dir / r["video"]), str(data_dir / r["audio"])
    return rows


def usable_rows(rows: list[dict]) -> list[dict]:
    """Video-decidable clips only: identical toned pinyin for both words, a cue showing the spoken word.

    Exact duplicates (same template, word and cue render to the same clip) are kept once.
    """
    from avcot.phonetics import pinyin

    kept, seen = [], set()
    for r in rows:
        key = (r["sentence_id"], r["target"], r["cue"])
        if r["cue"] in VISUAL_CUES and pinyin(r["target"]) == pinyin(r["competitor"]) and key not in seen:
            seen.add(key)
            kept.append(dict(r, content=f"{r['sentence_id']}|{r['target']}|{r['cue']}",
                             context=f"{r['sentence_id']}|{r['cue']}"))
    return kept


def avcot_trace(row: dict) -> str:
    """The AV-CoT target of one synthetic clip, from what the generator knows about it."""
    from avcot.phonetics import homophones
    from avcot.traces import AVCoTTrace, render_avcot

    candidates = sorted(set(homophones(row["target"])) | {row["target"], row["competitor"]})
    reasoning = f"同音候选：{'、'.join(candidates)}。画面显示“{row['screen_text']}”，支持“{row['target']}”。"
    return render_avcot(AVCoTTrace(visual_cues=f"{CUE_LABEL[row['cue']]}：{row['screen_text']}",
                                   acoustic_pinyin=row["pinyin"], reasoning=reasoning, transcription=row["text"]))


def both_words_trained(train: list[dict], test: list[dict]) -> list[dict]:
    """Test rows whose (template, cue) appears in `train` with both words of the pair."""
    words: dict[tuple[str, str], set[str]] = {}
    for r in train:
        words.setdefault((r["sentence_id"], r["cue"]), set()).add(r["target"])
    return [r for r in test if {r["target"], r["competitor"]} <= words.get((r["sentence_id"], r["cue"]), set())]


def split(rows: list[dict], settings: BenchSettings) -> tuple[list[dict], list[dict]]:
    """(train, test) with datamodules.common.split_rows, grouped by content or by sentence template."""
    from datamodules.common import split_rows

    column = {"content": "content", "sentence": "sentence_id", "context": "context"}[settings.split]
    return split_rows(rows, settings.test_fraction, settings.seed, column)


def write_manifest(rows: list[dict], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(dict(r, trace=avcot_trace(r)), ensure_ascii=False) + "\n" for r in rows),
                    encoding="utf-8")
    return path


def encode_rows(rows: list[dict], processor, settings: BenchSettings) -> list:
    """Every training clip encoded once (prompt + AV-CoT target) through the DataModule's build_example."""
    from datamodules.cavsr import build_example, clip_from_row
    from datamodules.common import MediaSettings

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


def word_accuracy(preds, rows: list[dict]) -> dict[str, float]:
    """Per condition: fraction of clips whose hypothesis contains the spoken homophone word."""
    target = {r["id"]: r["target"] for r in rows}
    out: dict[str, list[bool]] = {}
    for p in preds:
        out.setdefault(p.ablation, []).append(target[p.id] in p.hypothesis)
    return {k: sum(v) / len(v) for k, v in out.items()}


def evaluate(model_dir: Path, test_manifest: Path, settings: BenchSettings):
    """The real eval path: python -m avcot.eval cavsr on the saved full checkpoint."""
    from avcot.eval.cavsr import CavsrEvalSettings, run_cavsr
    from avcot.eval.runner import ModelSpec

    return run_cavsr(CavsrEvalSettings(
        data=str(test_manifest), out=str(Path(settings.out) / "eval"),
        model=ModelSpec(ckpt=str(model_dir), device=settings.device), ablations=("black", "random", "audio_only"),
        batch_size=8, max_new_tokens=settings.max_new_tokens, num_frames=settings.num_frames,
        frame_size=settings.frame_size, seed=settings.seed))


def run(settings: BenchSettings) -> dict:
    """Generate, filter, split, train, save, evaluate; returns (and writes) results.json."""
    from avcot.eval.metrics import cer_by_ablation
    from avcot.model import count_parameters, load_thinker
    from avcot.processor import load_processor

    if settings.threads:
        torch.set_num_threads(settings.threads)
    out, t0 = Path(settings.out), time.monotonic()
    rows = usable_rows(generate_set(settings))
    if settings.split == "instance":
        respoken = usable_rows(generate_set(settings, "synth_test", settings.test_speed))
        train_rows, test_rows = rows, both_words_trained(rows, respoken)
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
    result = evaluate(out / "model", test_manifest, settings)
    cer = {s.name: s.cer for s in cer_by_ablation(result.predictions)}
    summary = {
        "date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.node()} {platform.processor()} "
        f"{torch.get_num_threads()} threads, device {settings.device}", "command": " ".join(sys.argv),
        "settings": asdict(settings), "params": count_parameters(model)[1], "clips_usable": len(rows),
        "clips_train": len(train_rows), "clips_test": len(test_rows), "train_seconds": round(train_s, 1),
        "total_seconds": round(time.monotonic() - t0, 1), "final_loss": losses[-1][1] if losses else None,
        "loss_log": losses, "cer": cer, "word_accuracy": word_accuracy(result.predictions, test_rows),
    }
    (out / "results.json").write_text(json.dumps(summary, ensure_ascii=False, indent=2), encoding="utf-8")
    print(json.dumps({k: summary[k] for k in ("cer", "word_accuracy", "train_seconds", "total_seconds")},
                     ensure_ascii=False, indent=2))
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = BenchSettings(out="")
    ap.add_argument("--out", required=True, help="run directory (synthetic data, model, eval report)")
    for name in ("n", "seed", "steps", "batch_size", "warmup", "num_frames", "frame_size", "max_new_tokens",
                 "threads", "test_speed"):
        ap.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(defaults, name))
    for name in ("test_fraction", "lr"):
        ap.add_argument(f"--{name.replace('_', '-')}", type=float, default=getattr(defaults, name))
    ap.add_argument("--split", choices=("content", "sentence", "instance", "context"), default=defaults.split)
    ap.add_argument("--device", default=defaults.device, help="cpu | cuda")
    ap.add_argument("--train-towers", action="store_true", help="also train the audio and vision towers")
    args = ap.parse_args(argv)
    run(BenchSettings(**vars(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
