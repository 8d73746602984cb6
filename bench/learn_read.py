"""Reading pre-training for the CAVSR learning benchmark: teach the random-init towers to read first.

    python bench/learn_read.py --out runs/read --steps 3000     # ~10-14 min on 2 CPU cores; then
    python bench/learn_cavsr.py --out runs/learn_cavsr --base runs/read/model
    (or in one go: python bench/learn_cavsr.py --out runs/learn_cavsr --read-steps 3000)

Why (bench/RESULTS.md runs 18-21): trained on the benchmark's ~1,300 clips, the tiny thinker never reads the one
differing character of a sign or subtitle, not even on its own training clips, and not even when reading is its
only target (run 21: chance). Both papers start from a PRETRAINED vision encoder that reads text already. This
stage stands in for that pre-training: it renders FRESH frames on the fly (PIL only: no espeak-ng, no ffmpeg, no
audio), a new random cue position, tint and font size for every sample, and trains the whole thinker to write
the on-screen text (`READ_INSTRUCTION` -> the sign or subtitle text). Only the sign and subtitle texts of the
contents the benchmark trains on are rendered, so no held-out content leaks into training.

What it does and does not do yet (bench/RESULTS.md runs 22-27, 30): at the default 112-px frames the model
learned to read the sign (0.94 on the test clips) in one run of six, suddenly after ~1,600 steps at a plateau;
other random draws of the batches, 6000 steps, half random strings (runs 23-24) or minimal pairs in every batch
(`--pairs`, run 27) stayed on the plateau. At `--frame-size 224` (the glyphs twice as large, about two patches
a character) the sign was read in every try (run 30: seeds 0-2, 0.94 each; the subtitle 0.58-0.69): use
224 here AND in the SFT that starts from it (`learn_cavsr.py --read-steps 3000 --frame-size 224`).
`OUT/reading_check.json` says whether a given run reads. The subtitle needs more practice: 3000 more steps from
that base with `--base OUT/model --lr 1e-3 --subtitle-share 0.75` read it at 0.86 (run 35; the sign 0.94). The
SFT started from a base that reads keeps part of it: sign and subtitle 0.72 / 0.75 in the transcripts (run 26,
112 px, SFT at `--lr 1e-3`), 0.69 / 0.72 (run 31, 224 px), 0.77 / 0.75 from the base that reads both (runs 37,
39), 0.81 / 0.81 after a third stage of 3000 steps on both cues (run 40; 0.79 / 0.76 on three times the test
renderings). `learn_cavsr.py --read-plan READ_RECIPE` runs those three stages and the SFT in one command; with
`--text-renders 12` as well, the SFT keeps the reading: 0.87 / 0.87 and 0.80 / 0.87 (runs 43-44, two seeds).

Departures, on purpose:
- This loop is the benchmark's, not the product's: a stream of in-memory frames has no manifest for the
  CavsrDataModule. The loss is the thinker's own (Hugging Face) token loss on the target turn; the prompt goes
  through `avcot.chat.encode_example` like every product prompt.
- Two frames per sample (one temporal patch) instead of the benchmark's four: the frames of a synthetic clip are
  the same picture (only the progress bar moves), so the tower sees the same patches at half the cost.
- Frames are drawn at 224 px and resized to `frame_size` with PIL (the clips are written at 224 px and scaled
  by ffmpeg when decoded), so the glyphs are anti-aliased as in the clips; the mp4 compression is not modelled.
"""
from __future__ import annotations

import argparse
import csv
import json
import random
import sys
import time
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere in the checkout
    sys.path.insert(0, str(ROOT))

READ_INSTRUCTION = "读出画面中的文字。"
READ_CUES = ("background", "subtitle")
RENDER_SIZE = (224, 224)  # the size bench/learn_cavsr.py writes its clips at
# The reading curriculum of the best CAVSR run (bench/RESULTS.md run 40), at --frame-size 224: the sign first,
# then three quarters subtitles, then both cues (learn_cavsr.py --read-plan); a fourth, subtitle-weighted stage
# read better but did not carry into the SFT's transcripts (run 41)
READ_RECIPE = "3000,3000@1e-3:0.75,3000@1e-3"


@dataclass(frozen=True)
class ReadSettings:
    """Reading pre-training settings."""

    out: str
    """Directory: OUT/model (thinker + processor, a `--base` for learn_cavsr) and OUT/loss.csv."""
    steps: int = 3000
    batch_size: int = 16
    lr: float = 2e-3
    warmup: int = 60
    seed: int = 0
    base: str = "tiny"
    """Starting weights: 'tiny' (the embedded random init) or a thinker checkpoint directory with its processor."""
    frame_size: int = 112
    device: str = "cpu"
    """cpu | cuda | auto."""
    random_text: float = 0.0
    """Share of samples whose text is a random string of the trained texts' characters (the length and cue of a
    trained text): every character must then be read, none can be recalled from the sentence. 0.5 did not bring
    the onset on (bench/RESULTS.md run 24), hence 0 by default."""
    pairs: bool = False
    """Minimal pairs: each batch holds half as many specs, each beside its competitor's rendering under the SAME
    variation (position, tint, font size), so two pictures that differ in one glyph ask for two texts."""
    subtitle_share: float = 0.0
    """Share of the drawn samples that are subtitle contents (0 = draw every content alike, about half); the
    subtitle, a whole sentence in a smaller font, is read later than the sign (bench/RESULTS.md run 30)."""
    log_every: int = 50


@dataclass(frozen=True)
class ReadResult:
    """What a reading pre-training left: the saved base, its last training loss and its reading check."""

    model: Path
    """OUT/model: the thinker with its processor (a `--base`)."""
    final_loss: float
    reading_check: dict[str, float]
    """`reading_check` per cue on fresh renderings (another seed); 0.5 is chance."""


@dataclass(frozen=True)
class ReadStage:
    """One stage of a reading curriculum (`read_plan`): its steps, peak learning rate and subtitle share."""

    steps: int
    lr: float = ReadSettings.lr
    subtitle_share: float = 0.0


def read_plan(read_steps: int = 0, plan: str = "") -> list[ReadStage]:
    """The reading stages of learn_cavsr's `--read-steps N` (one stage of N steps at the default learning rate) or
    `--read-plan PLAN`: comma-separated stages `STEPS[@LR][:SUBTITLE_SHARE]`, each trained from the model the
    one before it left, e.g. '3000,3000@1e-3:0.75'. [] when neither is given; ValueError naming the stage that
    does not parse, or when both are given."""
    if read_steps and plan:
        raise ValueError(f"--read-steps {read_steps} is the plan '{read_steps}': give --read-steps or --read-plan, "
                         "not both")
    if not plan:
        return [ReadStage(read_steps)] if read_steps else []
    stages = []
    for i, text in enumerate(plan.split(","), 1):
        head, _, share = text.strip().partition(":")
        steps, _, lr = head.partition("@")
        try:
            stage = ReadStage(int(steps), float(lr) if lr else ReadStage.lr, float(share) if share else 0.0)
        except ValueError:
            raise ValueError(f"reading plan {plan!r}: stage {i} ({text!r}) is not STEPS[@LR][:SUBTITLE_SHARE]") \
                from None
        if stage.steps < 1 or stage.lr <= 0 or not 0 <= stage.subtitle_share < 1:
            raise ValueError(f"reading plan {plan!r}: stage {i} ({text!r}) needs steps >= 1, a learning rate > 0 "
                             "and a subtitle share in [0, 1)")
        stages.append(stage)
    return stages


def train_plan(settings: ReadSettings, stages: list[ReadStage], specs: list,
               progress: bool = True) -> list[tuple[ReadStage, ReadResult, float]]:
    """Train the `stages` one after the other, each from the model the one before it saved (the first from
    `settings.base`): stage 1 into `settings.out`, stage k into `settings.out` + k (OUT/read, OUT/read2, ...).
    Stage k draws with seed `settings.seed + k - 1`, so each stage sees renderings the others did not (in runs
    35-41, run by hand, every stage drew the seed-0 stream). Each stage's (stage, result, seconds)."""
    done, base = [], settings.base
    for k, stage in enumerate(stages, 1):
        t0 = time.monotonic()
        result = train_reading(replace(settings, out=settings.out + (str(k) if k > 1 else ""), base=base,
                                       seed=settings.seed + k - 1, steps=stage.steps, lr=stage.lr,
                                       subtitle_share=stage.subtitle_share), specs, progress)
        done.append((stage, result, round(time.monotonic() - t0, 1)))
        base = str(result.model)
    return done


def reading_specs(contents: set[str] | None = None, seed: int = 0) -> list:
    """One `SentenceSpec` per sign/subtitle content whose two words sound the same (the ones only reading
    decides); with `contents` (keys 'template|word|cue' as in learn_cavsr's `content` column) only those."""
    from avcot.phonetics import pinyin
    from avcot.synth import all_contents

    specs = [s for s in all_contents(1, seed, READ_CUES) if pinyin(s.target) == pinyin(s.competitor)]
    if contents is not None:
        specs = [s for s in specs if f"{s.sentence_id}|{s.target}|{s.cue}" in contents]
    if not specs:
        raise ValueError("no sign or subtitle content to read: the training set has none")
    return specs


def weighted_specs(specs: list, subtitle_share: float) -> list:
    """`specs` with the subtitle ones repeated so that a uniform draw picks a subtitle content with probability
    about `subtitle_share` (0 = `specs` as they are). ValueError when it cannot: a share outside [0, 1) or no
    subtitle content to weight."""
    if not subtitle_share:
        return specs
    subtitles = [s for s in specs if s.cue == "subtitle"]
    others = [s for s in specs if s.cue != "subtitle"]
    if not 0 < subtitle_share < 1 or not subtitles:
        raise ValueError(f"subtitle_share {subtitle_share} needs a value in (0, 1) and subtitle contents "
                         f"({len(subtitles)} here)")
    if not others:
        return specs
    # subtitles : others = share : (1 - share) per content count, as small whole copies of each (3 : 1 for 0.75
    # with as many subtitle contents as sign ones); a share under one half repeats the sign contents instead
    ratio = Fraction(subtitle_share / (1 - subtitle_share) * len(others) / len(subtitles)).limit_denominator(20)
    return others * ratio.denominator + subtitles * max(1, ratio.numerator)


def varied(spec, rng: random.Random):
    """`spec` under a fresh random variation (cue position, tint, font size)."""
    from avcot.synth_data import random_variation

    return replace(spec, variation=random_variation(rng))


def render_sample(spec, rng: random.Random, frame_size: int) -> np.ndarray:
    """Two uint8 frames [2, S, S, 3] of `spec` under a fresh random variation (drawn at 224 px, resized)."""
    return render_spec(varied(spec, rng), frame_size)


def render_spec(spec, frame_size: int) -> np.ndarray:
    """Two uint8 frames [2, S, S, 3] of `spec` under its own variation (drawn at 224 px, resized)."""
    from PIL import Image

    from avcot.synth_media import render_frames

    frames = render_frames(spec, RENDER_SIZE, 2)
    return np.stack([np.asarray(f.resize((frame_size, frame_size), Image.BICUBIC)) for f in frames])


def minimal_pair(spec, rng: random.Random) -> list:
    """`spec` and its competitor's on-screen text, both under one fresh random variation: the two pictures differ
    in the one glyph only."""
    shown = varied(spec, rng)
    return [shown, replace(shown, screen_text=competitor_text(shown))]


def reading_prompt(frames: np.ndarray):
    """The reading question about `frames` (an `avcot.chat.Prompt`)."""
    from avcot.chat import Prompt
    from avcot.prompts import SYSTEM_PROMPT

    return Prompt(instruction=READ_INSTRUCTION, system=SYSTEM_PROMPT, video=frames)


def char_pool(specs: list) -> str:
    """Every character of the specs' on-screen texts, once, sorted."""
    return "".join(sorted({c for s in specs for c in s.screen_text}))


def sample_spec(specs: list, rng: random.Random, random_text: float, pool: str):
    """One spec to render: a trained one, or (with probability `random_text`) a trained one whose on-screen text
    is replaced by a random string of `pool` characters of the same length."""
    spec = rng.choice(specs)
    if rng.random() >= random_text:
        return spec
    return replace(spec, screen_text="".join(rng.choice(pool) for _ in spec.screen_text))


def batch_specs(specs: list, rng: random.Random, size: int, random_text: float, pool: str,
                pairs: bool = False) -> list:
    """The `size` specs of one batch, each under a fresh random variation: drawn independently, or (`pairs`) as
    `size // 2` minimal pairs (an odd size adds one independent draw)."""
    if not pairs:
        return [varied(s, rng) for s in (sample_spec(specs, rng, random_text, pool) for _ in range(size))]
    drawn = [s for _ in range(size // 2) for s in minimal_pair(sample_spec(specs, rng, random_text, pool), rng)]
    return drawn + batch_specs(specs, rng, size % 2, random_text, pool)


def reading_batch(processor, specs: list, rng: random.Random, size: int, frame_size: int,
                  random_text: float = 0.0, pool: str | None = None, pairs: bool = False) -> dict:
    """A collated training batch of `size` fresh renderings, each asked for its on-screen text. `pool`: the
    characters of random strings (default `char_pool(specs)`; a training loop passes it once); `pairs`: as
    minimal pairs (`batch_specs`)."""
    from avcot.chat import collate, encode_example

    pool = char_pool(specs) if pool is None else pool
    examples = [encode_example(processor, reading_prompt(render_spec(spec, frame_size)), spec.screen_text)
                for spec in batch_specs(specs, rng, size, random_text, pool, pairs)]
    return collate(examples, processor.tokenizer.pad_token_id)


def competitor_text(spec) -> str:
    """The on-screen text with the competitor in place of the spoken word (what the other clip shows)."""
    return spec.screen_text.replace(spec.target, spec.competitor)


def reading_check(model, processor, specs: list, seed: int, frame_size: int) -> dict[str, float]:
    """Forced choice on one fresh rendering (seed `seed`) of every spec: the share, per cue, where the model gives
    the shown text a lower loss than the same text with the competitor word. 0.5 is chance."""
    import torch

    from avcot.chat import collate, encode_example, model_inputs
    from avcot.eval.runner import model_dtype, move_batch

    rng, right = random.Random(f"read-check-{seed}"), {}
    device, dtype = next(model.parameters()).device, model_dtype(model)
    model.eval()
    with torch.no_grad():
        for spec in specs:
            prompt = reading_prompt(render_sample(spec, rng, frame_size))
            batches = (collate([encode_example(processor, prompt, text)], processor.tokenizer.pad_token_id)
                       for text in (spec.screen_text, competitor_text(spec)))
            shown, other = (model(**model_inputs(move_batch(b, device, dtype))).loss.item() for b in batches)
            right.setdefault(spec.cue, []).append(shown < other)
    return {cue: round(sum(v) / len(v), 3) for cue, v in sorted(right.items())}


def train_reading(settings: ReadSettings, specs: list, progress: bool = True) -> ReadResult:
    """Train the whole thinker to read `specs` for `settings.steps` steps. Saves OUT/model (with its processor,
    loadable by `avcot.model.load_thinker` and usable as `--base`), logs the loss to OUT/loss.csv and writes
    `reading_check` on fresh renderings (another seed) of the same contents to OUT/reading_check.json."""
    import torch
    from tqdm import tqdm

    from avcot.chat import model_inputs
    from avcot.eval.runner import move_batch, resolve_device
    from avcot.model import load_thinker
    from avcot.processor import load_processor
    from lit_modules.sft import warmup_cosine  # the SFT module's schedule

    torch.manual_seed(settings.seed)
    rng, out = random.Random(f"read-{settings.seed}"), Path(settings.out)
    device = resolve_device(settings.device)
    processor = load_processor(settings.base)
    model = load_thinker(settings.base, seed=settings.seed).to(device)
    params = list(model.parameters())
    for p in params:  # load_thinker freezes the towers; this stage exists to train them
        p.requires_grad_(True)
    model.train()
    opt = torch.optim.AdamW(params, lr=settings.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: warmup_cosine(s, settings.warmup, settings.steps))
    out.mkdir(parents=True, exist_ok=True)
    pool, drawn = char_pool(specs), weighted_specs(specs, settings.subtitle_share)
    with open(out / "loss.csv", "w", newline="", encoding="utf-8") as f, \
            tqdm(range(settings.steps), desc="reading", disable=not progress) as bar:
        log = csv.writer(f)
        log.writerow(["step", "loss", "seconds"])
        t0 = time.monotonic()
        for step in bar:
            batch = move_batch(reading_batch(processor, drawn, rng, settings.batch_size, settings.frame_size,
                                             settings.random_text, pool, settings.pairs), device, torch.float32)
            loss = model(**model_inputs(batch)).loss
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            bar.set_postfix(loss=f"{loss.item():.3f}")
            if step % settings.log_every == 0 or step == settings.steps - 1:
                log.writerow([step, round(loss.item(), 4), round(time.monotonic() - t0, 1)])
                f.flush()
    model.save_pretrained(out / "model")
    processor.save_pretrained(out / "model")
    check = reading_check(model, processor, specs, settings.seed + 1, settings.frame_size)
    (out / "reading_check.json").write_text(json.dumps(check) + "\n", encoding="utf-8")
    print(f"reading check (fresh renderings, forced choice shown vs competitor text, 0.5 = chance): {check}")
    return ReadResult(out / "model", round(loss.item(), 4), check)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    d = ReadSettings(out="")
    ap.add_argument("--out", required=True, help="directory for OUT/model and OUT/loss.csv")
    ap.add_argument("--steps", type=int, default=d.steps, help="optimizer steps")
    ap.add_argument("--batch-size", type=int, default=d.batch_size, help="fresh renderings per step")
    ap.add_argument("--lr", type=float, default=d.lr, help="peak learning rate (AdamW, warm-up + cosine)")
    ap.add_argument("--warmup", type=int, default=d.warmup, help="linear warm-up steps")
    ap.add_argument("--seed", type=int, default=d.seed, help="init, rendering and shuffle seed")
    ap.add_argument("--base", default=d.base, help="'tiny' or a thinker checkpoint directory with its processor")
    ap.add_argument("--frame-size", type=int, default=d.frame_size, help="frame side in pixels (multiple of 28)")
    ap.add_argument("--device", default=d.device, help="cpu | cuda | auto")
    ap.add_argument("--random-text", type=float, default=d.random_text,
                    help="share of samples showing a random string of the trained characters")
    ap.add_argument("--pairs", action="store_true", help="batches of minimal pairs (same picture, one glyph apart)")
    ap.add_argument("--subtitle-share", type=float, default=d.subtitle_share,
                    help="share of samples drawn from the subtitle contents (0 = every content alike)")
    args = ap.parse_args(argv)
    print(train_reading(ReadSettings(**vars(args)), reading_specs(seed=args.seed)).model)
    return 0


if __name__ == "__main__":
    sys.exit(main())
