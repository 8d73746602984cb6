"""AVRT learning benchmark: does a model trained the AVRT way answer better with audio AND video? (no external weights)

    python bench/learn_avrt.py --out runs/learn_avrt                  # CPU, SFT then GRPO (time: bench/RESULTS.md)
    python bench/learn_avrt.py --out runs/learn_avrt --stage data     # steps 1-2 only
    python bench/learn_avrt.py --out runs/learn_avrt --stage train    # steps 3-5 on that data
    python bench/learn_avrt.py --out runs/learn_avrt --sft-steps 4000 --grpo-steps 600 --device cuda

The paper's claim under test (AVRT, Table 4): a student trained on merged audio and visual teacher traces
answers audio-visual questions better with both streams (AV) than with either alone (A, V).

1. Synthetic clips (`avcot.synth` speech and pictures): every (pair, template, word) sentence of
   `avcot.synth_data.PAIRS` is spoken over the scene picture (colour, icon, sign text) of either the SAME word
   ("matched") or of `--mismatches` words of other pairs ("mismatched"; fixed per sentence by `--seed`, so the
   test set has the same contents). Training clips: `--renders` renderings each; test clips: `--test-renders`
   fresh renderings (another seed: voice from `--voices`, tint, offsets, font size).
2. Three questions per clip, every one asked with both streams:
   - `said` "what word is spoken?" (needs the audio; a mismatched clip's shown word is a distractor),
   - `shown` "what word is on the sign?" (needs the video; a mismatched clip's spoken word is a distractor),
   - `both` "which (spoken, shown) pair?" (options: the right pair, right-spoken/wrong-shown,
     wrong-spoken/right-shown, both wrong: needs both streams; either alone leaves two candidates).
   Options (`--options`): `slotted` (default) puts every word at a fixed letter (its place in the word table, mod
   4; a (said, shown) option at the sum of the two, mod 4), so the letter follows from the words perceived;
   `shuffled` is the usual shuffled list, where the student must also find, in the prompt, the letter of the
   word it perceived: the 2-layer student does not learn that in the default budget (bench/RESULTS.md run A1),
   and every condition stays at chance.
   The offline AVRT pipeline (`avcot.pipeline avrt`: rapidocr visual teacher, transcript audio teacher, template
   merger) answers and labels them: it keeps the items both teachers got right (the matched clips' questions:
   on a mismatched clip one teacher reads or hears the trap) with their merged
   `<think>…</think><answer>X</answer>` traces in `sft.jsonl`, and lists every item in `rl.jsonl` with its
   difficulty (easy: both teachers right, medium: one, hard: none).
3. SFT cold start through the product: `avcot.cli fit --config configs/learn_avrt_sft.yaml` (full fine-tuning
   of the random-init tiny thinker, towers trained) on `sft.jsonl`.
4. GRPO through the product: `avcot.cli fit --config configs/learn_avrt_grpo.yaml` (a fresh LoRA on the SFT
   model, rewards format + accuracy, G = 4, clip 0.2, beta 0.01, temperature 1) on `rl.jsonl`: every item,
   mismatched and `both` questions included.
5. `avcot.eval mcq` scores the SFT and the GRPO model on the test items in the a, v and av conditions;
   OUT/summary.md has accuracy per (model, condition) overall, per question kind and per difficulty, and says
   whether AV beats both A and V.

Departures from the paper, on purpose: the teachers are the pipeline's offline rule teachers (OCR and a
transcript lookup, not Gemini / GPT-4o), the student is a ~1M-parameter model trained from scratch with its
towers (frozen random towers cannot learn to hear or read; see bench/RESULTS.md), the visual teacher reads
`--teacher-frames` frames (the picture is static, so 8 frames read the same sign 8 times), and the budget is
minutes on a CPU, not the paper's GPUs. Slotted options are a property of this synthetic set, not of the
toolkit: the prompts, the pipeline and the training code are the product's, unchanged.
"""
from __future__ import annotations

import argparse
import json
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

from bench.learn_cavsr import parse_voices, read_rows  # noqa: E402  (after the sys.path line)
from bench.learn_fit import common_args, fit  # noqa: E402
from bench.stats import above  # noqa: E402

QUESTIONS = {"said": "说话人说的是哪个词？", "shown": "画面上的标志写的是哪个词？",
             "both": "说话人说的词和画面上的词分别是哪个？"}
NEEDS = {"said": "a", "shown": "v", "both": "av"}
"""The streams each question kind needs (the McqItem's `modality`)."""
KINDS = tuple(QUESTIONS)
SLOTTED_MIN_PAIRS = 6
"""With 6 pairs every (said, shown) combination fills all four slots (checked over every 6-pair subset)."""


@dataclass(frozen=True)
class BenchSettings:
    """Data, training and evaluation settings of the AVRT learning benchmark."""

    out: str
    renders: int = 3
    """Renderings of every clip content in the training set."""
    test_renders: int = 1
    """Fresh renderings (another seed) of every clip content in the test set."""
    mismatches: int = 2
    """Other-pair words each sentence is also shown with (mismatched clips per sentence)."""
    options: str = "slotted"
    """'slotted': every word at a fixed letter, so the letter follows from what is perceived; 'shuffled': the usual
    shuffled options, where the student must also find the option it names in the list (bench/RESULTS.md run A1:
    the tiny 2-layer student does not learn that lookup)."""
    seed: int = 0
    voices: str = "120:40,140:60,160:45"
    pairs: str = ""
    """Comma-separated homophone pair keys to use (e.g. 'gongshi,shichang'); '' = every pair."""
    workers: int = 4
    teacher_frames: int = 1
    """Frames the pipeline's OCR visual teacher reads per item (the paper's teacher sees 8)."""
    sft_steps: int = 1000
    grpo_steps: int = 100
    batch_size: int = 8
    grpo_prompts: int = 4
    """Prompts per GRPO step (each sampled G = 4 times)."""
    sft_lr: float = 2e-3
    grpo_lr: float = 1e-3
    warmup: int = 60
    num_frames: int = 4
    frame_size: int = 112
    max_new_tokens: int = 192
    device: str = "cpu"
    threads: int = 0
    stage: str = "all"
    """'all', 'data' (steps 1-2), 'train' (steps 3-5 on an earlier data run) or 'eval' (step 5 only)."""
    sft_config: str = str(ROOT / "configs" / "learn_avrt_sft.yaml")
    grpo_config: str = str(ROOT / "configs" / "learn_avrt_grpo.yaml")


# ---------------------------------------------------------------- steps 1-2: clips and questions


def word_table(pairs: str = "") -> list[tuple[str, int]]:
    """(pair key, word index) of every word of the chosen pairs ('' = all of avcot.synth_data.PAIRS)."""
    from avcot.synth_data import PAIRS

    keys = {k.strip() for k in pairs.split(",") if k.strip()}
    table = [(p.key, w) for p in PAIRS if not keys or p.key in keys for w in (0, 1)]
    if keys - {p.key for p in PAIRS}:
        raise ValueError(f"--pairs names unknown pair(s) {sorted(keys - {p.key for p in PAIRS})}")
    if len({k for k, _ in table}) < 4:
        raise ValueError("the AVRT benchmark needs at least 4 pairs (3 distractors come from pairs other than "
                         "the spoken and the shown word's)")
    return table


def _pair(key: str):
    from avcot.synth_data import PAIRS

    return next(p for p in PAIRS if p.key == key)


def shown_words(spoken: tuple[str, int], table: list[tuple[str, int]], mismatches: int,
                rng: random.Random, slotted: bool = False) -> list[tuple[str, int]]:
    """The spoken word itself, then `mismatches` words of other pairs (drawn by rng, without repeats); with
    `slotted`, only words whose letter slot differs from the spoken word's (both must fit one option list)."""
    words = table_words(table)
    spoken_slot = slot(_pair(spoken[0]).words[spoken[1]], words)
    others = [w for w in table if w[0] != spoken[0]
              and not (slotted and slot(_pair(w[0]).words[w[1]], words) == spoken_slot)]
    if mismatches > len(others):
        raise ValueError(f"--mismatches {mismatches} > the {len(others)} words of other pairs that can be shown")
    return [spoken, *rng.sample(others, mismatches)]


def table_words(table: list[tuple[str, int]]) -> list[str]:
    """The words of a `word_table`, in its order (the order `slot` counts in)."""
    return [_pair(k).words[w] for k, w in table]


def slot(word: str, words: list[str]) -> int:
    """The fixed option index of a word with --options slotted: its place in the word table, mod 4."""
    return words.index(word) % 4


def clip_specs(settings: BenchSettings, seed: int, renders: int) -> list[tuple[object, str]]:
    """(SentenceSpec, shown word): each sentence over its own and its mismatched scenes, `renders` times each.

    The contents (which words a sentence is shown with) depend on `settings.seed` only; the renderings on `seed`.
    """
    from avcot.synth import all_contents

    table = word_table(settings.pairs)
    if settings.options == "slotted" and len(table) < 2 * SLOTTED_MIN_PAIRS:
        raise ValueError(f"--options slotted needs at least {SLOTTED_MIN_PAIRS} pairs (fewer leave some letter with no "
                         f"word of a third pair), got {len(table) // 2}: add pairs or use --options shuffled")
    content_rng = random.Random(f"avrt-contents-{settings.seed}")
    shown_by_sentence: dict[tuple[str, str], list[tuple[str, int]]] = {}
    out = []
    for spec in all_contents(renders, seed, ("scene",), parse_voices(settings.voices)):
        spoken = (spec.pair_key, _pair(spec.pair_key).words.index(spec.target))
        if spoken not in table:
            continue
        key = (spec.sentence_id, spec.target)
        if key not in shown_by_sentence:
            shown_by_sentence[key] = shown_words(spoken, table, settings.mismatches, content_rng,
                                                  settings.options == "slotted")
        for shown_key, shown_w in shown_by_sentence[key]:
            scene = _pair(shown_key).scenes[shown_w]
            # The sign text (it contains the word) goes in the scene's caption box: the OCR teacher reads the word,
            # and the student can also go by the scene's colour and icon.
            out.append((replace(spec, id=spec.id.replace("-scene-", f"-v{shown_key}{shown_w}-"), scene=scene,
                                screen_text=scene.sign), _pair(shown_key).words[shown_w]))
    return out


def pair_option(said: str, shown: str) -> str:
    """The option text of a `both` question."""
    return f"说：{said}；画面：{shown}"


def clip_items(clip_id: str, said: str, shown: str, media: tuple[str, str], table: list[tuple[str, int]],
               rng: random.Random, slotted: bool = False) -> list:
    """The three McqItems (said, shown, both) of one clip; `media` = (video, audio) paths as written.

    Distractors come from pairs other than the spoken and the shown word's, so no option is a homophone of
    the right one; a mismatched clip's other-stream word is a distractor (the trap a one-stream model takes).
    Options are shuffled, or with `slotted` every word sits at its fixed letter (`slot`) and a (said, shown)
    option at (slot(said) + slot(shown)) mod 4: the letter follows from the words perceived, with no lookup of
    the option list.
    """
    from avcot.records import McqItem

    busy = {_word_pair(said), _word_pair(shown)}
    words = table_words(table)
    pool = sorted(w for w in words if _word_pair(w) not in busy)
    build = _slotted_options if slotted else _shuffled_options
    kinds = build(said, shown, pool, words, rng)
    return [McqItem(id=f"{clip_id}-{kind}", question=QUESTIONS[kind], options=opts, answer=ans,
                    video=media[0], audio=media[1], modality=NEEDS[kind])
            for kind, (opts, ans) in zip(KINDS, kinds)]


def _shuffled_options(said: str, shown: str, pool: list[str], _words: list[str], rng: random.Random) -> list:
    """(options, answer) of the said, shown and both questions, each option list shuffled."""
    from avcot.synth import shuffled_options

    spare = rng.sample(pool, 3)
    trap = shown != said
    said_opts = shuffled_options(said, ([shown] if trap else []) + spare[: 3 - trap], rng)
    shown_opts = shuffled_options(shown, ([said] if trap else []) + spare[::-1][: 3 - trap], rng)
    s2, v2 = spare[0], spare[1]
    both_opts = shuffled_options(pair_option(said, shown),
                         [pair_option(said, v2), pair_option(s2, shown), pair_option(s2, v2)], rng)
    return [said_opts, shown_opts, both_opts]


def _slotted_options(said: str, shown: str, pool: list[str], words: list[str], rng: random.Random) -> list:
    """(options, answer) of the said, shown and both questions with every option at its fixed slot."""
    from avcot.records import LETTERS

    def pick(index: int, taken: set[str]) -> str:
        choices = [w for w in pool if slot(w, words) == index and w not in taken]
        if not choices:
            raise ValueError(f"no word of another pair fits letter {LETTERS[index]}: --options slotted needs more "
                             "pairs")
        return rng.choice(choices)

    fixed = {slot(said, words): said, slot(shown, words): shown}
    if len(fixed) != len({said, shown}):
        raise ValueError(f"{said} and {shown} share a letter slot; shown_words(slotted=True) never pairs them")
    words_opts = tuple(fixed.get(i) or pick(i, set(fixed.values())) for i in range(4))
    s2 = pick((slot(said, words) + 2) % 4, {said, shown})
    v2 = pick((slot(shown, words) + 1) % 4, {said, shown, s2})
    combos = {(slot(a, words) + slot(b, words)) % 4: pair_option(a, b)
              for a, b in ((said, shown), (said, v2), (s2, shown), (s2, v2))}
    both_opts = tuple(combos[i] for i in range(4))
    return [(words_opts, LETTERS[slot(said, words)]), (words_opts, LETTERS[slot(shown, words)]),
            (both_opts, LETTERS[(slot(said, words) + slot(shown, words)) % 4])]


def _word_pair(word: str) -> str:
    from avcot.synth_data import PAIRS

    return next(p.key for p in PAIRS if word in p.words)


def kind_of(item_id: str) -> str:
    """The question kind of an item id written by `clip_items`."""
    kind = item_id.rsplit("-", 1)[-1]
    if kind not in QUESTIONS:
        raise ValueError(f"{item_id!r} is not an item id of this benchmark (no -said/-shown/-both suffix)")
    return kind


def is_matched(item_id: str) -> bool:
    """Whether an item's clip shows the word it speaks.

    Ids are synth-r<seed>-<pair>-s<t>-w<k>-v<pair><k>-<render>-<kind>."""
    parts = item_id.split("-")
    if len(parts) != 8 or not parts[4].startswith("w") or not parts[5].startswith("v"):
        raise ValueError(f"{item_id!r} is not an item id of this benchmark")
    return parts[5] == f"v{parts[2]}{parts[4][1:]}"


def generate_set(settings: BenchSettings, name: str, seed: int, renders: int) -> Path:
    """Render one clip set into OUT/<name> (clips/, manifest.jsonl) and write its questions to OUT/<name>/mcq.jsonl."""
    from avcot.synth import write_clips, write_mcq

    data_dir = Path(settings.out) / name
    planned = clip_specs(settings, seed, renders)
    write_clips([spec for spec, _ in planned], data_dir, size=(224, 224), workers=settings.workers, progress=True)
    table, rng = word_table(settings.pairs), random.Random(f"avrt-items-{seed}")
    items = [it for spec, shown in planned
             for it in clip_items(spec.id, spec.target, shown, (f"clips/{spec.id}.mp4", f"clips/{spec.id}.wav"),
                                  table, rng, settings.options == "slotted")]
    return write_mcq(items, data_dir / "mcq.jsonl")


def pipeline_config(settings: BenchSettings, transcripts: Path):
    """configs/pipeline_offline.yaml with the transcript table of this clip set and `teacher_frames` frames."""
    import yaml

    from avcot.pipeline.config import config_from_dict

    raw = yaml.safe_load((ROOT / "configs" / "pipeline_offline.yaml").read_text(encoding="utf-8"))
    raw["roles"]["teacher_asr"]["transcripts"] = str(transcripts)
    raw["avrt"]["visual_frames"] = settings.teacher_frames
    raw["concurrency"] = max(1, settings.workers)
    return config_from_dict(raw, "bench/learn_avrt.py pipeline config")


def run_pipeline(settings: BenchSettings, mcq: Path, name: str) -> Path:
    """The offline AVRT pipeline (`python -m avcot.pipeline avrt`) on one question set, into OUT/<name>."""
    from avcot.pipeline.avrt import run_avrt

    out = Path(settings.out) / name
    counts = run_avrt(mcq, out, pipeline_config(settings, mcq.parent / "manifest.jsonl"))
    print(f"pipeline {name}: {counts}", flush=True)
    return out


def make_data(settings: BenchSettings) -> None:
    """Steps 1-2: train and test clips, their questions, and the offline AVRT pipeline on both."""
    train_mcq = generate_set(settings, "synth", settings.seed, settings.renders)
    test_mcq = generate_set(settings, "synth_test", settings.seed + 1000, settings.test_renders)
    run_pipeline(settings, train_mcq, "pipeline_train")
    run_pipeline(settings, test_mcq, "pipeline_test")


# ---------------------------------------------------------------- steps 3-5: SFT, GRPO, evaluation


def sft_args(settings: BenchSettings) -> list[str]:
    out = Path(settings.out)
    return [*common_args(settings, settings.sft_config, out / "sft", settings.sft_steps),
            "--model.init_args.lr", str(settings.sft_lr), "--model.init_args.warmup_steps", str(settings.warmup),
            "--data.init_args.train_manifest", str(out / "pipeline_train" / "sft.jsonl"),
            "--data.init_args.batch_size", str(settings.batch_size)]


def grpo_args(settings: BenchSettings) -> list[str]:
    out = Path(settings.out)
    return [*common_args(settings, settings.grpo_config, out / "grpo", settings.grpo_steps),
            "--model.init_args.lr", str(settings.grpo_lr),
            "--model.init_args.base", str(out / "sft" / "checkpoints" / "model-last"),
            "--data.init_args.train_manifest", str(out / "pipeline_train" / "rl.jsonl"),
            "--data.init_args.batch_size", str(settings.grpo_prompts)]


def evaluate(settings: BenchSettings, model: str, adapter: str | None, name: str) -> list:
    """`python -m avcot.eval mcq` on the test items in the a, v and av conditions, into OUT/<name>/eval."""
    from avcot.eval.mcq import McqEvalSettings, run_mcq
    from avcot.eval.runner import ModelSpec

    out = Path(settings.out)
    result = run_mcq(McqEvalSettings(
        data=str(out / "pipeline_test" / "rl.jsonl"), out=str(out / name / "eval"),
        model=ModelSpec(ckpt=adapter or model, base=model if adapter else "tiny", device=settings.device),
        batch_size=16, max_new_tokens=settings.max_new_tokens, num_frames=settings.num_frames,
        frame_size=settings.frame_size, max_seconds=10))
    return list(result.predictions)


def accuracy_table(preds: list) -> dict[str, dict[str, dict[str, float]]]:
    """condition -> group -> {n, acc}; groups: all, each question kind, matched/mismatched, each difficulty."""
    tallies: dict[str, dict[str, list[bool]]] = {}
    for p in preds:
        groups = ("all", kind_of(p.id), "matched" if is_matched(p.id) else "mismatched", p.difficulty)
        for g in groups:
            tallies.setdefault(p.modality, {}).setdefault(g, []).append(p.correct)
    return {cond: {g: {"n": len(v), "acc": round(sum(v) / len(v), 3)} for g, v in per.items()}
            for cond, per in tallies.items()}


GROUPS = ("all", "said", "shown", "both", "matched", "mismatched", "easy", "medium", "hard")


def summary_table(summary: dict) -> str:
    """results.json as markdown: accuracy per (model, condition) and group, then the verdict."""
    lines = [f"# AVRT learning benchmark: {summary['date']}", "", f"Command: `{summary['command']}`  ",
             f"Machine: {summary['machine']}; {summary['items']} train items ({summary['sft_items']} kept for SFT), "
             f"{summary['test_items']} test items; total {summary['total_seconds']} s (SFT "
             f"{summary['sft_seconds']} s, GRPO {summary['grpo_seconds']} s).", "",
             "| model | condition | " + " | ".join(GROUPS) + " |", "|---|---|" + "---|" * len(GROUPS)]
    for model, table in summary["accuracy"].items():
        for cond in ("a", "v", "av"):
            row = table.get(cond, {})
            cells = [f"{row[g]['acc']:.2f}" if g in row else "-" for g in GROUPS]
            lines.append(f"| {model} | {cond} | " + " | ".join(cells) + " |")
    n = summary["accuracy"][next(iter(summary["accuracy"]))]["av"]
    counts = ", ".join(f"{g} {n[g]['n']}" for g in GROUPS if g in n)
    return "\n".join(lines + ["", f"Items per condition: {counts}.", "", *verdicts(summary["accuracy"])]) + "\n"


def verdicts(accuracy: dict) -> list[str]:
    """One line per model: is AV above both A and V overall (the AVRT paper's Table 4 ordering), beyond noise?"""
    out = []
    for model, table in accuracy.items():
        a, v, av = (table[c]["all"] for c in ("a", "v", "av"))
        if above(av, a) and above(av, v):
            word = "holds here (both gaps beyond noise, one-sided 5%)"
        elif av["acc"] > a["acc"] and av["acc"] > v["acc"]:
            word = "is not shown here (AV is above both, but within noise)"
        else:
            word = "does NOT hold here"
        out.append(f"{model}: AV {av['acc']:.2f} vs A {a['acc']:.2f} and V {v['acc']:.2f} (n = {av['n']} each): "
                   f"the paper's ordering (AV above both) {word}.")
    return out


def train_and_evaluate(settings: BenchSettings) -> dict:
    """Steps 3-5 (or 5 alone with --stage eval): SFT, GRPO, then both models in the a, v and av conditions."""
    out = Path(settings.out)
    sft_model, grpo_adapter = out / "sft" / "checkpoints" / "model-last", out / "grpo" / "checkpoints" / "adapter-last"
    missing = [p for p in (out / "pipeline_train" / "sft.jsonl", out / "pipeline_test" / "rl.jsonl") if not p.is_file()]
    if missing:
        raise SystemExit(f"no {', '.join(map(str, missing))}: run --stage data (or all) first")
    seconds = {"sft": 0.0, "grpo": 0.0}
    if settings.stage != "eval":
        seconds["sft"] = fit(sft_args(settings), sft_model / "config.json")
        seconds["grpo"] = fit(grpo_args(settings), grpo_adapter)
    preds = {"sft": evaluate(settings, str(sft_model), None, "sft"),
             "sft+grpo": evaluate(settings, str(sft_model), str(grpo_adapter), "grpo")}
    return {"sft_seconds": seconds["sft"], "grpo_seconds": seconds["grpo"],
            "accuracy": {m: accuracy_table(p) for m, p in preds.items()}}


def run(settings: BenchSettings) -> dict:
    """The stages asked for; returns (and writes) results.json and summary.md when it trains or evaluates."""
    if settings.threads:
        torch.set_num_threads(settings.threads)
    t0 = time.monotonic()
    out = Path(settings.out)
    if settings.stage in ("all", "data"):
        make_data(settings)
    if settings.stage == "data":
        return {}
    results = train_and_evaluate(settings)
    summary = {
        "date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.node()} {platform.processor()} "
        f"{torch.get_num_threads()} threads, device {settings.device}", "command": " ".join(sys.argv),
        "settings": asdict(settings), "items": len(read_rows(out / "pipeline_train" / "rl.jsonl")),
        "sft_items": len(read_rows(out / "pipeline_train" / "sft.jsonl")),
        "test_items": len(read_rows(out / "pipeline_test" / "rl.jsonl")),
        "total_seconds": round(time.monotonic() - t0, 1), **results}
    (out / "results.json").write_text(json.dumps(summary, ensure_ascii=False, indent=2), encoding="utf-8")
    (out / "summary.md").write_text(summary_table(summary), encoding="utf-8")
    print((out / "summary.md").read_text(encoding="utf-8"), flush=True)
    return summary


NUMBER_HELP = {
    "renders": "renderings of every clip content in the training set",
    "test_renders": "fresh renderings of every clip content in the test set",
    "mismatches": "other-pair words each sentence is also shown with",
    "seed": "contents, renderings, init and shuffle seed",
    "workers": "threads running espeak-ng/ffmpeg and the pipeline's rows in flight",
    "teacher_frames": "frames the pipeline's OCR visual teacher reads per item (the paper: 8)",
    "sft_steps": "SFT optimizer steps",
    "grpo_steps": "GRPO optimizer steps",
    "batch_size": "SFT items per step",
    "grpo_prompts": "GRPO prompts per step (each sampled G = 4 times)",
    "warmup": "SFT linear warm-up steps before the cosine decay",
    "num_frames": "frames per clip for the student",
    "frame_size": "frame side in pixels for the student",
    "max_new_tokens": "generation cap (GRPO rollouts and evaluations)",
    "threads": "torch CPU threads (0 = torch's default)",
    "sft_lr": "SFT peak learning rate",
    "grpo_lr": "GRPO learning rate",
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    defaults = BenchSettings(out="")
    ap.add_argument("--out", required=True, help="run directory (synthetic data, pipeline output, runs, reports)")
    for name, text in NUMBER_HELP.items():
        kind = type(getattr(defaults, name))
        ap.add_argument(f"--{name.replace('_', '-')}", type=kind, default=getattr(defaults, name), help=text)
    ap.add_argument("--stage", choices=("all", "data", "train", "eval"), default=defaults.stage,
                    help="'data': clips, questions and the pipeline only; 'train': SFT, GRPO and the evaluations on "
                         "an earlier data run; 'eval': only the evaluations of an earlier train run")
    ap.add_argument("--options", choices=("slotted", "shuffled"), default=defaults.options,
                    help="slotted: every word at a fixed letter; shuffled: shuffled option lists")
    ap.add_argument("--pairs", default=defaults.pairs, help="pair keys to use, e.g. gongshi,shichang,fayan ('' = all)")
    ap.add_argument("--voices", default=defaults.voices, help="rate:pitch,... shared speakers ('' = random)")
    ap.add_argument("--device", default=defaults.device, help="cpu | cuda")
    ap.add_argument("--sft-config", default=defaults.sft_config, help="SFT recipe for avcot.cli fit")
    ap.add_argument("--grpo-config", default=defaults.grpo_config, help="GRPO recipe for avcot.cli fit")
    run(BenchSettings(**vars(ap.parse_args(argv))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
