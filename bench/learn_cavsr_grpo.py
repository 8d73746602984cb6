"""The CAVSR learning benchmark's optional GRPO stage (`bench/learn_cavsr.py --grpo-steps N`): helpers.

The stage is the transcription GRPO that neither paper runs (the learning-benchmark issue, item 3): a fresh LoRA
on the AV-CoT SFT model, reward = max(0, 1 - CER) + AV-CoT format (configs/learn_cavsr_grpo.yaml), rollouts on
FRESH renderings of the trained contents (OUT/rl.jsonl: another seed, never a test clip). On its own training
clips the SFT model is almost always right, so a group of four samples holds no signal (bench/RESULTS.md
run 15); on new renderings it still picks the wrong homophone often enough for a group to disagree.

What it reports: the reward curve (mean reward per tenth of the run, from the CSV logger) and whether GRPO
raised the true-video word accuracy over the SFT model beyond noise (one-sided two-proportion z-test at 5%)
while the random-video accuracy and the carrier sentence held.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

from bench.learn_fit import common_args
from bench.stats import above

GRPO_RUN = "avcot+grpo"
"""The name of the GRPO model's rows in results.json and summary.md."""


def grpo_args(settings, model_dir: Path) -> list[str]:
    """`avcot.cli fit` arguments: configs/learn_cavsr_grpo.yaml on OUT/rl.jsonl, from the AV-CoT model `model_dir`."""
    out = Path(settings.out)
    return [*common_args(settings, settings.grpo_config, out / "avcot_grpo", settings.grpo_steps),
            "--model.init_args.base", str(model_dir),
            "--model.init_args.lr", str(settings.grpo_lr),
            "--data.init_args.train_manifest", str(out / "rl.jsonl"),
            "--data.init_args.batch_size", str(settings.grpo_prompts)]


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


def grpo_verdict(runs: dict) -> str:
    """One sentence: did GRPO raise the true-video word accuracy of the AV-CoT model, beyond noise, by the
    10 points the issue asks for, with the random video still near the SFT model's and the sentence still right?"""
    if GRPO_RUN not in runs or "avcot" not in runs:
        return ""
    sft, rl = runs["avcot"]["outcomes"], runs[GRPO_RUN]["outcomes"]
    w0, w1 = sft["true"]["all"]["word"], rl["true"]["all"]["word"]
    gain = w1 - w0
    real = above({"acc": w1, "n": rl["true"]["all"]["n"]}, {"acc": w0, "n": sft["true"]["all"]["n"]})
    word = ("raises it beyond noise" if real else "does not raise it beyond noise") + (
        ", by the 10 points asked for" if real and gain >= 0.10 - 1e-9 else "")
    return (f"GRPO vs SFT (AV-CoT): true-video word accuracy {w0:.2f} -> {w1:.2f} ({gain:+.2f}; GRPO {word}); "
            f"random video {sft['random']['all']['word']:.2f} -> {rl['random']['all']['word']:.2f}; carrier "
            f"sentence right {sft['true']['all']['frame']:.2f} -> {rl['true']['all']['frame']:.2f}.")


def curve_line(curve: list[dict[str, float]]) -> str:
    """The reward curve as one markdown line: 'steps a-b: r, ...'."""
    return "GRPO reward (CER + format, max 2) per tenth of the run: " + ", ".join(
        f"steps {c['first_step']}-{c['last_step']}: {c['reward']:.3f}" for c in curve) + "."
