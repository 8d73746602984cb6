"""The CAVSR learning benchmark's optional GRPO stage (`bench/learn_cavsr.py --grpo-steps N`): helpers.

The stage is the transcription GRPO that neither paper runs (the learning-benchmark issue, item 3): a fresh LoRA
on the AV-CoT SFT model, reward = max(0, 1 - CER) + AV-CoT format (configs/learn_cavsr_grpo.yaml), rollouts on
FRESH renderings of the trained contents (OUT/rl.jsonl: another seed, never a test clip). On its own training
clips the SFT model is almost always right, so a group of four samples holds no signal (bench/RESULTS.md
run 15); on new renderings it still picks the wrong homophone often enough for a group to disagree.

What it reports: the reward curve (mean reward per tenth of the run, from the CSV logger) and whether GRPO
raised the true-video word accuracy over the SFT model beyond noise (one-sided two-proportion z-test at 5%)
while the random-video accuracy and the carrier sentence held.

`--grpo-target transcript` runs the same GRPO on the plain-transcript (w/o AV-CoT) SFT model instead, with the
CER reward alone (a transcript has no sections to check). Why: an AV-CoT completion is ~120 tokens and its CER
turns on the one or two tokens of the homophone, so each advantage is spread thin over the rest (RESULTS.md
run 29); a transcript is ~10 tokens, so the same reward lands on far fewer. It did not help either (runs 32-33):
the AV-CoT model's wrong homophones are wrong readings that its answer follows (run 34), not answers to fix.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

from bench.learn_fit import common_args
from bench.stats import above

GRPO_TARGETS = ("avcot", "transcript")
"""The SFT models GRPO can start from (`--grpo-target`)."""

TRANSCRIPT_REWARDS = ["--model.init_args.rewards", "[avcot.rewards.cer_reward]",
                      "--model.init_args.reward_weights", "[1.0]"]
"""The recipe's rewards for a plain-transcript model: CER only (the AV-CoT format reward would score 0 always)."""


def grpo_run(target: str) -> str:
    """The name of the GRPO model's rows in results.json and summary.md: '<SFT target>+grpo'."""
    return f"{target}+grpo"


def grpo_dir(target: str) -> str:
    """The GRPO run's directory under OUT: '<SFT target>_grpo'."""
    return f"{target}_grpo"


def grpo_args(settings, model_dir: Path) -> list[str]:
    """`avcot.cli fit` arguments: configs/learn_cavsr_grpo.yaml on OUT/rl.jsonl, from the SFT model `model_dir` of
    `settings.grpo_target`, with that target's completions (and for 'transcript' the CER reward alone)."""
    out, target = Path(settings.out), settings.grpo_target
    return [*common_args(settings, settings.grpo_config, out / grpo_dir(target), settings.grpo_steps),
            "--model.init_args.base", str(model_dir),
            "--model.init_args.lr", str(settings.grpo_lr),
            "--data.init_args.train_manifest", str(out / "rl.jsonl"),
            "--data.init_args.target", target,
            "--data.init_args.batch_size", str(settings.grpo_prompts),
            *(TRANSCRIPT_REWARDS if target == "transcript" else [])]


def grpo_targets_of(runs: dict) -> list[str]:
    """The SFT targets that have both their own row and a current GRPO run in `runs`."""
    return [t for t in GRPO_TARGETS if grpo_run(t) in runs and t in runs]


def latest_metrics(root: Path) -> Path:
    """The CSV logger's metrics.csv of the newest version_N under `root` (a rerun adds a version)."""
    versions = sorted(root.glob("version_*/metrics.csv"), key=lambda p: int(p.parent.name.split("_")[1]))
    if not versions:
        raise FileNotFoundError(f"no version_*/metrics.csv under {root}: the GRPO run logged nothing")
    return versions[-1]


def reward_curve(metrics_csv: Path, parts: int = 10) -> list[dict[str, float]]:
    """The logged mean reward in `parts` consecutive chunks of the run: [{first_step, last_step, reward}].

    Reads the CSV logger's `reward/mean` rows (one per `log_every_n_steps`); fewer logged rows than `parts`
    give one chunk per row. ValueError naming the file when it holds no reward.
    """
    with open(metrics_csv, newline="", encoding="utf-8") as fh:
        points = [(int(r["step"]), float(r["reward/mean"])) for r in csv.DictReader(fh) if r.get("reward/mean")]
    if not points:
        raise ValueError(f"{metrics_csv}: no reward/mean column values (was the GRPO run logged?)")
    size = math.ceil(len(points) / parts)
    chunks = [points[i:i + size] for i in range(0, len(points), size)]
    return [{"first_step": c[0][0], "last_step": c[-1][0], "reward": round(sum(r for _, r in c) / len(c), 3)}
            for c in chunks]


def grpo_verdict(runs: dict, target: str = "avcot") -> str:
    """One sentence: did GRPO raise the true-video word accuracy of its SFT model, beyond noise, by the
    10 points the issue asks for, with the random video still near the SFT model's and the sentence still right?"""
    if target not in grpo_targets_of(runs):
        return ""
    sft, rl = runs[target]["outcomes"], runs[grpo_run(target)]["outcomes"]
    w0, w1 = sft["true"]["all"]["word"], rl["true"]["all"]["word"]
    gain = w1 - w0
    real = above({"acc": w1, "n": rl["true"]["all"]["n"]}, {"acc": w0, "n": sft["true"]["all"]["n"]})
    word = ("raises it beyond noise" if real else "does not raise it beyond noise") + (
        ", by the 10 points asked for" if real and gain >= 0.10 - 1e-9 else "")
    name = "AV-CoT" if target == "avcot" else "transcript"
    return (f"GRPO vs SFT ({name}): true-video word accuracy {w0:.2f} -> {w1:.2f} ({gain:+.2f}; GRPO {word}); "
            f"random video {sft['random']['all']['word']:.2f} -> {rl['random']['all']['word']:.2f}; carrier "
            f"sentence right {sft['true']['all']['frame']:.2f} -> {rl['true']['all']['frame']:.2f}.")


def curve_line(curve: list[dict[str, float]], target: str = "avcot") -> str:
    """The reward curve as one markdown line: 'steps a-b: r, ...'."""
    reward = "CER + format, max 2" if target == "avcot" else "CER, max 1"
    return f"GRPO reward ({reward}) per tenth of the run: " + ", ".join(
        f"steps {c['first_step']}-{c['last_step']}: {c['reward']:.3f}" for c in curve) + "."
