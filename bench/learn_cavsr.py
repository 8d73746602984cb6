"""Learning benchmark: does a model trained on AV-CoT targets actually use the video? (no external weights)

    python bench/learn_cavsr.py --out runs/learn_cavsr            # CPU, both targets side by side (26 min: run 28)
    python bench/learn_cavsr.py --out runs/learn_cavsr --target avcot            # AV-CoT only, about half
    python bench/learn_cavsr.py --out runs/learn_cavsr --steps 8000 --device cuda   # larger, on a GPU
    python bench/learn_cavsr.py --out runs/learn_cavsr --stage data   # steps 1-3 only (configs/learn_cavsr.yaml)
    python bench/learn_cavsr.py --out runs/learn_cavsr --stage train  # steps 4-5 on that data

1. Generate a fresh synthetic homophone set with `avcot.synth.all_contents`: every (pair, template,
   word, cue) content rendered `--renders` times, each rendering with its own voice (one of the
   `--voices` rate:pitch speakers), cue-box position, background tint and font size (espeak-ng speech,
   PIL frames).
2. Keep clips whose answer is decidable only from the video: pairs whose two words have identical
   toned pinyin (the audio is the same for both words) and cues that show the spoken word
   (background sign, subtitle, scene legend; the `conflict` cue is not generated).
3. Write each clip's AV-CoT target (`trace`, rendered with `avcot.traces.render_avcot` from what the generator
   knows: visual cue text = the on-screen text, acoustic analysis = the tone pinyin, candidates =
   `avcot.phonetics.homophones(word)` plus the pair, transcription = the reference) into OUT/train.jsonl,
   and the test clips into OUT/test.jsonl.
4. Train through the product: `avcot.cli fit --config configs/learn_cavsr.yaml` (the SFT LightningModule,
   `finetune: full`, the CavsrDataModule, Lightning's progress bar) once per `--target`: `avcot` (the trace)
   and/or `transcript` (the plain transcript with the plain instruction: the paper's "w/o AV-CoT" ablation),
   same data, steps and seeds, into OUT/<target>/. The random-init towers train too (`train_towers`;
   departure, on purpose: both papers freeze PRETRAINED encoders; random-init frozen towers cannot learn to
   hear unheard voices or read text, see bench/RESULTS.md runs 5-6; `--train-towers none` freezes them, and
   `--train-towers audio` keeps the vision tower of a `--base` that learned to read as it is).
5. Evaluate each run's `checkpoints/model-last` with `avcot.eval` (true / black / random video and audio
   only), plus a "competitor video" condition (each clip gets the fresh picture of the OTHER word in the
   same template and cue: a model that reads the picture then writes the competitor) and per-cue outcome
   rates (spoken word / competitor in the hypothesis, carrier sentence right). OUT/summary.md has one row
   per (target, condition) and says whether the chain of thought helped here.
6. Optional (`--grpo-steps N`): GRPO on top of the AV-CoT model (`configs/learn_cavsr_grpo.yaml`, the
   transcription GRPO neither paper runs) with rollouts on `--rl-renders` fresh renderings of the trained
   contents, scored like step 5 as `avcot+grpo`, with the reward curve (bench/learn_cavsr_grpo.py).
   `--grpo-target transcript` runs it on the plain-transcript model instead (reward CER alone; `transcript+grpo`).

`--text-renders N` adds N more renderings of every sign and subtitle content to the training set (reading
practice for the one differing character; the scene cue is read from colour and icon already). `--read-steps N`
first pre-trains the thinker to read the trained sign and subtitle texts on N batches of fresh in-memory frames
(bench/learn_read.py, standing in for the papers' pretrained vision encoder) and starts the SFT runs from it;
`--read-plan` runs several such stages one after the other (e.g. `bench.learn_read.READ_RECIPE`, run 40's).

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
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere in the checkout
    sys.path.insert(0, str(ROOT))

from bench.learn_read import READ_RECIPE, ReadSettings, read_plan, reading_specs, train_plan  # noqa: E402
from bench.learn_fit import common_args, finish_job, fit, settings_argv, start_job  # noqa: E402
from bench.learn_cavsr_grpo import GRPO_TARGETS, grpo_args, grpo_dir, grpo_run, latest_metrics, reward_curve  # noqa: E402
from bench.learn_cavsr_data import (  # noqa: E402, F401  (the data steps are this script's API too)
    CUE_LABEL, avcot_trace, competitor_video_rows, generate_set, of_trained_contents, parse_voices, read_rows,
    split, usable_rows, write_manifest)
from bench.learn_cavsr_report import (  # noqa: E402, F401  (summary_table etc. are this script's API too)
    READ_CUES, VISUAL_CUES, breakdown, cot_verdict, outcome, perception, summary_table)



@dataclass(frozen=True)
class BenchSettings:
    """Data, training and evaluation settings of the learning benchmark."""

    out: str
    renders: int = 6
    """Renderings of every content in the training set."""
    text_renders: int = 0
    """Extra training renderings (another seed) of the sign and subtitle contents only: more reading practice
    for the one differing character, at the cost of espeak-ng/ffmpeg time and a larger epoch."""
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
    pairs: str = ""
    """Comma-separated homophone pair keys to generate (e.g. 'gongshi,shichang'); '' = every pair."""
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
    """torch CPU threads (0 = torch's default; with two jobs, half the cores each)."""
    jobs: int = 0
    """Targets trained at the same time, each in its own process: 0 = auto (2 when both targets train on a CPU
    with 2+ cores), 1 = one after the other."""
    train_towers: str = "both"
    """Which (random-init) towers train too: 'both', 'audio' (the vision tower stays as --base has it, e.g. after
    a reading pre-training), 'vision', or 'none' (frozen, as the papers do)."""
    target: str = "both"
    """Training target(s): 'avcot' (the trace), 'transcript' (w/o AV-CoT) or 'both' (same budget each)."""
    stage: str = "all"
    """'all' (generate, train, evaluate), 'data' (generate and write the manifests only), 'train' (train and
    evaluate on the manifests an earlier 'data' run wrote), 'grpo' (GRPO again on the AV-CoT model of an
    earlier run in OUT, e.g. with another --grpo-lr), 'target' (train and evaluate the one --target on OUT's
    manifests into OUT/<target>/run.json only: what a second job runs) or 'eval' (score the trained model --base
    as --target on OUT's test manifests only)."""
    config: str = str(ROOT / "configs" / "learn_cavsr.yaml")
    """The training recipe run through avcot.cli (the flags above override its values)."""
    base: str = "tiny"
    """Starting weights of the SFT runs: 'tiny' (the embedded random init) or a thinker checkpoint directory."""
    read_steps: int = 0
    """Reading pre-training steps before the SFT runs (bench/learn_read.py: fresh sign/subtitle frames of the
    trained contents, target = the on-screen text); 0 = none. The SFT runs then start from OUT/read/model."""
    read_plan: str = ""
    """A reading curriculum instead of --read-steps: comma-separated stages STEPS[@LR][:SUBTITLE_SHARE], each from
    the model the one before it left (OUT/read, OUT/read2, ...), e.g. READ_RECIPE (bench/RESULTS.md run 40)."""
    grpo_steps: int = 0
    """GRPO steps on top of the --grpo-target SFT model (0 = no GRPO stage; bench/learn_cavsr_grpo.py)."""
    grpo_lr: float = 1e-3
    grpo_target: str = "avcot"
    """The SFT model GRPO starts from: 'avcot' (reward CER + format) or 'transcript' (CER alone)."""
    grpo_prompts: int = 4
    """Prompts per GRPO step (each sampled G = 4 times)."""
    rl_renders: int = 1
    """Fresh renderings (another seed) of every trained content for the GRPO rollouts (OUT/rl.jsonl)."""
    grpo_config: str = str(ROOT / "configs" / "learn_cavsr_grpo.yaml")
    """The GRPO recipe run through avcot.cli."""

    @property
    def targets(self) -> tuple[str, ...]:
        return ("avcot", "transcript") if self.target == "both" else (self.target,)


TOWERS_CONFIG = {"both": "true", "none": "false", "audio": "audio", "vision": "vision"}
"""`--train-towers` -> the SFT module's `train_towers` value."""


def cli_args(settings: BenchSettings, target: str) -> list[str]:
    """`avcot.cli fit` arguments: configs/learn_cavsr.yaml with this run's data, target, budget and device."""
    out = Path(settings.out)
    return [*common_args(settings, settings.config, out / target, settings.steps),
            "--model.init_args.base", settings.base,
            "--model.init_args.lr", str(settings.lr),
            "--model.init_args.warmup_steps", str(settings.warmup),
            "--model.init_args.train_towers", TOWERS_CONFIG[settings.train_towers],
            "--data.init_args.train_manifest", str(out / "train.jsonl"),
            "--data.init_args.target", target,
            "--data.init_args.batch_size", str(settings.batch_size)]


def train(settings: BenchSettings, target: str) -> tuple[Path, float]:
    """Train one target through avcot.cli (in this process); (its model-last directory, seconds)."""
    model_dir = Path(settings.out) / target / "checkpoints" / "model-last"
    return model_dir, fit(cli_args(settings, target), model_dir / "config.json")


def evaluate(model_dir: Path, manifest: Path, settings: BenchSettings, target: str, name: str,
             ablations: tuple[str, ...], adapter: Path | None = None):
    """The real eval path (python -m avcot.eval cavsr) on one trained model (+ a LoRA adapter), into
    OUT/<target>/<name>; the prompt is the trace's unless `target` is 'transcript' (or its GRPO run's)."""
    from avcot.eval.cavsr import CavsrEvalSettings, run_cavsr
    from avcot.eval.runner import ModelSpec

    model = ModelSpec(ckpt=str(adapter), base=str(model_dir), device=settings.device) if adapter else \
        ModelSpec(ckpt=str(model_dir), device=settings.device)
    return run_cavsr(CavsrEvalSettings(
        data=str(manifest), out=str(Path(settings.out) / target / name),
        prompt="transcript" if target.startswith("transcript") else "avcot", model=model, ablations=ablations,
        batch_size=8, max_new_tokens=settings.max_new_tokens, num_frames=settings.num_frames,
        frame_size=settings.frame_size, seed=settings.seed))


def evaluate_all(model_dir: Path, settings: BenchSettings, target: str, test_rows: list[dict],
                 adapter: Path | None = None) -> list:
    """Predictions in all five conditions: true/black/random video, audio only, competitor video."""
    out = Path(settings.out)
    preds = list(evaluate(model_dir, out / "test.jsonl", settings, target, "eval",
                          ("black", "random", "audio_only"), adapter).predictions)
    swapped, _ = competitor_video_rows(test_rows)
    if swapped:  # same model, true-video eval of the swapped manifest, renamed as its own condition
        swap = evaluate(model_dir, out / "test_competitor_video.jsonl", settings, target, "eval_competitor_video", (),
                        adapter)
        preds += [replace(p, ablation="competitor_video") for p in swap.predictions]
    return preds


def make_data(settings: BenchSettings) -> tuple[list[dict], list[dict], list[dict]]:
    """Steps 1-3: generate, filter, split and write OUT/train.jsonl, test.jsonl, test_competitor_video.jsonl."""
    out = Path(settings.out)
    rows = usable_rows(generate_set(settings, "synth", settings.seed, settings.renders))
    if settings.split == "render":  # a different seed: different variations, never a training clip
        train_rows = rows
        test_rows = usable_rows(generate_set(settings, "synth_test", settings.seed + 1000, settings.test_renders))
    else:
        train_rows, test_rows = split(rows, settings)
    if settings.text_renders:  # another seed again: new variations of the text cues, never a test clip
        extra = generate_set(settings, "synth_text", settings.seed + 2000, settings.text_renders, READ_CUES)
        train_rows = train_rows + of_trained_contents(usable_rows(extra), train_rows)
    if settings.grpo_steps:  # the GRPO rollouts' clips: a third seed, fresh pictures of trained contents
        rl = usable_rows(generate_set(settings, "synth_rl", settings.seed + 3000, settings.rl_renders))
        write_manifest(of_trained_contents(rl, train_rows), out / "rl.jsonl")
    write_manifest(train_rows, out / "train.jsonl")
    write_manifest(test_rows, out / "test.jsonl")
    write_manifest(competitor_video_rows(test_rows)[0], out / "test_competitor_video.jsonl")
    print(f"clips: {len(rows)} usable, {len(train_rows)} train, {len(test_rows)} test -> {out}", flush=True)
    return rows, train_rows, test_rows


def reuse_data(settings: BenchSettings) -> tuple[list[dict], list[dict], list[dict]]:
    """OUT/train.jsonl and test.jsonl from an earlier `--stage data` run (same settings), as `make_data` returns."""
    out = Path(settings.out)
    wanted = (out / "train.jsonl", out / "test.jsonl") + ((out / "rl.jsonl",) if settings.grpo_steps else ())
    missing = [p for p in wanted if not p.is_file()]
    if missing:
        raise SystemExit(f"--stage train reuses {', '.join(map(str, missing))}: run --stage data first")
    train_rows, test_rows = read_rows(out / "train.jsonl"), read_rows(out / "test.jsonl")
    rows = train_rows if settings.split == "render" else train_rows + test_rows
    print(f"clips: reusing {len(train_rows)} train, {len(test_rows)} test from {out}", flush=True)
    return rows, train_rows, test_rows


def scored(preds: list, test_rows: list[dict]) -> dict:
    """CER per condition and the outcome breakdown of one model's predictions."""
    from avcot.eval.metrics import cer_by_ablation

    seen = perception(preds, test_rows)
    return {"cer": {s.name: s.cer for s in cer_by_ablation(preds)}, "outcomes": breakdown(preds, test_rows),
            **({"perception": seen} if seen else {})}


def grpo_stage(settings: BenchSettings, model_dir: Path, test_rows: list[dict]) -> dict:
    """GRPO on OUT/rl.jsonl from the --grpo-target SFT model, then the five conditions; its results.json entry."""
    name = grpo_dir(settings.grpo_target)
    root = Path(settings.out) / name
    adapter = root / "checkpoints" / "adapter-last"
    seconds = fit(grpo_args(settings, model_dir), adapter)
    preds = evaluate_all(model_dir, settings, name, test_rows, adapter)
    return {"model": str(adapter), "train_seconds": seconds, **scored(preds, test_rows),
            "reward_curve": reward_curve(latest_metrics(root))}


def run(settings: BenchSettings) -> dict:
    """Generate, train each target through the CLI, evaluate it; returns (and writes) results.json, summary.md."""
    if settings.grpo_steps and settings.grpo_target not in settings.targets:
        raise SystemExit(f"--grpo-steps trains on top of the {settings.grpo_target} model: use --target "
                         f"{settings.grpo_target} or both")
    if settings.threads:
        torch.set_num_threads(settings.threads)
    if settings.stage == "grpo":
        return grpo_again(settings)
    if settings.stage == "target":
        return target_stage(settings)
    if settings.stage == "eval":
        return eval_stage(settings)
    stages = reading_stages(settings)  # a bad plan fails here, before minutes of synthesis
    t0 = time.monotonic()
    rows, train_rows, test_rows = reuse_data(settings) if settings.stage == "train" else make_data(settings)
    if settings.stage == "data":
        return {}
    read = None
    if stages:
        settings, read = read_stage(settings, stages, train_rows)
    runs = train_targets(settings, test_rows)
    summary = run_record(settings, t0, runs, train_rows, test_rows) | {
        "clips_usable": len(rows), "clips_without_competitor_video": competitor_video_rows(test_rows)[1]}
    if read:
        summary["read"] = read
    return write_summary(Path(settings.out), summary)


def run_record(settings: BenchSettings, t0: float, runs: dict, train_rows: list[dict], test_rows: list[dict]) -> dict:
    """The results.json fields every run has: when, where, how it was called, its clips, seconds since `t0`, runs."""
    return {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.node()} {platform.processor()} "
            f"{torch.get_num_threads()} threads x {job_count(settings)} jobs, device {settings.device}",
            "command": " ".join(sys.argv), "settings": asdict(settings), "clips_train": len(train_rows),
            "clips_test": len(test_rows), "total_seconds": round(time.monotonic() - t0, 1), "runs": runs}


def target_run(settings: BenchSettings, target: str, test_rows: list[dict]) -> dict:
    """Train one target, evaluate it in the five conditions (then GRPO on it with --grpo-steps, when it is the
    --grpo-target); its results.json `runs` entries."""
    model_dir, train_s = train(settings, target)
    preds = evaluate_all(model_dir, settings, target, test_rows)
    runs = {target: {"model": str(model_dir), "train_seconds": train_s, **scored(preds, test_rows)}}
    if target == settings.grpo_target and settings.grpo_steps:
        runs[grpo_run(target)] = grpo_stage(settings, model_dir, test_rows)
    return runs


def job_count(settings: BenchSettings) -> int:
    """How many targets train at once: --jobs, or (0) 2 when both train on a CPU with at least 2 cores."""
    if settings.jobs:
        return max(1, min(settings.jobs, len(settings.targets)))
    return 2 if len(settings.targets) == 2 and settings.device == "cpu" and (os.cpu_count() or 1) >= 2 else 1


def train_targets(settings: BenchSettings, test_rows: list[dict]) -> dict:
    """Every target's `runs` entries: one after the other, or with two jobs the AV-CoT run here and the transcript
    run (`--stage target`) in a child process at the same time, each on half the cores. Why: this ~1M-parameter
    model gains little from a second thread (bench/RESULTS.md run 17), so two one-thread runs side by side finish
    sooner than one after the other (run 28: 26.4 min instead of 31.5), though they slow each other down."""
    if job_count(settings) == 1:
        return {k: v for target in settings.targets for k, v in target_run(settings, target, test_rows).items()}
    threads = settings.threads or max(1, (os.cpu_count() or 2) // 2)
    torch.set_num_threads(threads)
    child = replace(settings, target="transcript", stage="target", jobs=1, threads=threads, read_steps=0,
                    read_plan="", grpo_steps=0)  # the reading stage runs once, in this process
    if settings.grpo_target == "transcript":  # GRPO runs where its SFT model trains
        child, settings = replace(child, grpo_steps=settings.grpo_steps), replace(settings, grpo_steps=0)
    log, result = Path(settings.out) / "transcript" / "log.txt", target_result(child)
    result.unlink(missing_ok=True)
    job = start_job([sys.executable, str(Path(__file__).resolve()), *settings_argv(child)], log)
    print(f"the transcript target trains beside this one, in another process; its log: {log}", flush=True)
    try:
        runs = target_run(settings, "avcot", test_rows)
    except BaseException:
        job[0].kill()
        raise
    return runs | finish_job(job, log, result)


def target_result(settings: BenchSettings) -> Path:
    """Where `--stage target` writes its `runs` entries: OUT/<target>/run.json."""
    return Path(settings.out) / settings.target / "run.json"


def target_stage(settings: BenchSettings) -> dict:
    """`--stage target`: train and evaluate the one --target on OUT's manifests; writes OUT/<target>/run.json."""
    if settings.target == "both":
        raise SystemExit("--stage target trains one target: --target avcot or --target transcript")
    test_rows = reuse_data(settings)[2]
    runs = target_run(settings, settings.target, test_rows)
    target_result(settings).parent.mkdir(parents=True, exist_ok=True)
    target_result(settings).write_text(json.dumps(runs, ensure_ascii=False, indent=2), encoding="utf-8")
    return runs


def eval_stage(settings: BenchSettings) -> dict:
    """`--stage eval`: score the trained model --base (with its --target's prompt) in the five conditions on OUT's
    test manifests, e.g. on more renderings (`--stage data --test-renders 3`) than it was first scored on; writes
    results.json and summary.md."""
    out = Path(settings.out)
    if settings.target == "both" or settings.base == "tiny":
        raise SystemExit("--stage eval scores one trained model: --target avcot|transcript and --base <its "
                         "checkpoints/model-last>")
    if not (out / "test.jsonl").is_file():
        raise SystemExit(f"--stage eval scores on {out / 'test.jsonl'}: run --stage data first")
    t0, test_rows = time.monotonic(), read_rows(out / "test.jsonl")
    preds = evaluate_all(Path(settings.base), settings, settings.target, test_rows)
    runs = {settings.target: {"model": settings.base, "train_seconds": 0, **scored(preds, test_rows)}}
    return write_summary(out, run_record(settings, t0, runs, [], test_rows))


def reading_stages(settings: BenchSettings) -> list:
    """The reading stages --read-steps or --read-plan asks for (`bench.learn_read.read_plan`); exits with the
    plan's error when it does not parse."""
    try:
        return read_plan(settings.read_steps, settings.read_plan)
    except ValueError as e:
        raise SystemExit(str(e)) from None


def read_stage(settings: BenchSettings, stages: list, train_rows: list[dict]) -> tuple[BenchSettings, list[dict]]:
    """Reading pre-training (bench/learn_read.py) on the trained sign/subtitle contents, stage after stage; returns
    the settings with `base` = the last stage's model and each stage's record (model, steps, lr, subtitle share,
    seconds, last logged loss, reading check) for results.json."""
    read = ReadSettings(out=str(Path(settings.out) / "read"), seed=settings.seed, base=settings.base,
                        frame_size=settings.frame_size, device=settings.device)
    done = train_plan(read, stages, reading_specs({r["content"] for r in train_rows}, settings.seed))
    records = [{"model": str(result.model), **asdict(stage), "train_seconds": seconds,
                "final_loss": result.final_loss, "reading_check": result.reading_check}
               for stage, result, seconds in done]
    return replace(settings, base=records[-1]["model"]), records


def write_summary(out: Path, summary: dict) -> dict:
    """OUT/results.json and OUT/summary.md (also printed); returns `summary`."""
    (out / "results.json").write_text(json.dumps(summary, ensure_ascii=False, indent=2), encoding="utf-8")
    (out / "summary.md").write_text(summary_table(summary), encoding="utf-8")
    print((out / "summary.md").read_text(encoding="utf-8"), flush=True)
    return summary


def grpo_again(settings: BenchSettings) -> dict:
    """`--stage grpo`: GRPO (again) on the --grpo-target SFT model of the run whose results.json is in OUT, e.g.
    with another --grpo-lr; an earlier GRPO entry stays in the table as '<name> (earlier)'."""
    out, target = Path(settings.out), settings.grpo_target
    summary = json.loads((out / "results.json").read_text(encoding="utf-8")) if (out / "results.json").is_file() else {}
    if target not in summary.get("runs", {}):
        raise SystemExit(f"--stage grpo needs {out / 'results.json'} of an earlier run that trained --target {target}")
    if not settings.grpo_steps or not (out / "rl.jsonl").is_file():
        raise SystemExit(f"--stage grpo needs --grpo-steps N and {out / 'rl.jsonl'} (written by a data stage "
                         "run with --grpo-steps)")
    runs, name = summary["runs"], grpo_run(target)
    if name in runs:
        runs[f"{name} (earlier)"] = runs.pop(name)
    runs[name] = grpo_stage(settings, Path(runs[target]["model"]), read_rows(out / "test.jsonl"))
    summary["command"] += "; then `" + " ".join(sys.argv) + "`"
    summary["grpo_settings"] = asdict(settings)
    return write_summary(out, summary)


NUMBER_HELP = {
    "renders": "renderings of every content in the training set",
    "text_renders": "extra training renderings of the sign and subtitle contents (reading practice)",
    "test_renders": "fresh renderings of every content in the test set (--split render)",
    "seed": "data, init and shuffle seed",
    "steps": "optimizer steps per target",
    "batch_size": "clips per step",
    "warmup": "linear warm-up steps before the cosine decay",
    "num_frames": "frames per clip",
    "frame_size": "frame side in pixels",
    "max_new_tokens": "generation cap in the evaluations",
    "threads": "torch CPU threads (0 = torch's default; with two jobs, half the cores each)",
    "jobs": "targets trained at the same time, each in its own process (0 = 2 for both targets on 2+ CPU cores)",
    "workers": "threads running espeak-ng/ffmpeg while synthesising",
    "test_fraction": "held-out share of groups for the content/context/sentence splits",
    "lr": "peak learning rate",
    "read_steps": "reading pre-training steps before SFT (bench/learn_read.py; 0 = none)",
    "grpo_steps": "GRPO steps on top of the --grpo-target SFT model (0 = no GRPO stage)",
    "grpo_prompts": "GRPO prompts per step (each sampled G = 4 times)",
    "rl_renders": "fresh renderings of every trained content for the GRPO rollouts",
    "grpo_lr": "GRPO learning rate",
}


def parser() -> argparse.ArgumentParser:
    """The command line: every `BenchSettings` field as a flag (`learn_fit.settings_argv` writes them back)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    defaults = BenchSettings(out="")
    ap.add_argument("--out", required=True, help="run directory (synthetic data, runs, eval reports)")
    floats = ("test_fraction", "lr", "grpo_lr")
    for name, kind in (*((n, int) for n in NUMBER_HELP if n not in floats), *((n, float) for n in floats)):
        ap.add_argument(f"--{name.replace('_', '-')}", type=kind, default=getattr(defaults, name),
                        help=NUMBER_HELP[name])
    ap.add_argument("--split", choices=("render", "content", "context", "sentence"), default=defaults.split,
                    help="test on fresh renderings, held-out contents, (template, cue) pairs or templates")
    ap.add_argument("--target", choices=("avcot", "transcript", "both"), default=defaults.target,
                    help="train on the AV-CoT trace, the plain transcript (w/o AV-CoT), or both (same budget)")
    ap.add_argument("--stage", choices=("all", "data", "train", "grpo", "target", "eval"), default=defaults.stage,
                    help="'data' only writes OUT/train.jsonl and OUT/test.jsonl (for configs/learn_cavsr.yaml); "
                         "'train' trains and evaluates on the ones an earlier 'data' run wrote; 'grpo' runs "
                         "--grpo-steps of GRPO again on the --grpo-target model of an earlier run in OUT; 'target' "
                         "trains and evaluates the one --target into OUT/<target>/run.json (a second job's stage); "
                         "'eval' scores the trained model --base as --target on OUT's test manifests")
    ap.add_argument("--config", default=defaults.config, help="training recipe for avcot.cli fit")
    ap.add_argument("--grpo-config", default=defaults.grpo_config, help="GRPO recipe for avcot.cli fit")
    ap.add_argument("--device", default=defaults.device, help="cpu | cuda")
    ap.add_argument("--base", default=defaults.base,
                    help="starting weights: 'tiny' (embedded random init) or a thinker checkpoint directory with "
                         "its processor files (save_pretrained of both)")
    ap.add_argument("--pairs", default=defaults.pairs, help="pair keys to generate, e.g. gongshi,shichang ('' = all)")
    ap.add_argument("--read-plan", default=defaults.read_plan,
                    help="reading curriculum before the SFT: stages STEPS[@LR][:SUBTITLE_SHARE], comma-separated "
                         f"(run 40's, bench/RESULTS.md: {READ_RECIPE!r}); instead of --read-steps")
    ap.add_argument("--voices", default=defaults.voices, help="rate:pitch,... shared speakers ('' = random)")
    ap.add_argument("--grpo-target", choices=GRPO_TARGETS, default=defaults.grpo_target,
                    help="the SFT model GRPO starts from: the AV-CoT one (reward CER + format) or the plain-transcript "
                         "one (CER alone)")
    ap.add_argument("--train-towers", choices=tuple(TOWERS_CONFIG), default=defaults.train_towers,
                    help="which random-init towers train too ('audio' keeps a --base's reading vision tower as it "
                         "is; 'none' freezes both)")
    return ap


def main(argv: list[str] | None = None) -> int:
    run(BenchSettings(**vars(parser().parse_args(argv))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
