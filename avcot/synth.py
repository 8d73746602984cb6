"""Synthetic Mandarin homophone clips: speech that is ambiguous by sound, a picture that decides it.

`python -m avcot.synth --out DIR --n N --seed S [--mcq]` writes DIR/clips/<id>.{wav,mp4},
DIR/manifest.jsonl (one row per clip, media paths relative to DIR) and, with --mcq, DIR/mcq.jsonl.

This module turns the sentence tables (`avcot.synth_data`) into clip specs, MCQ items and files on disk;
`avcot.synth_media` makes each clip's pixels and sound. Speech: espeak-ng voice `cmn-latn-pinyin` reading
tone-digit pinyin (pypinyin TONE3, neutral tone 5), so tones are exact. Frames: PIL + Noto Sans CJK SC. Cue types:
- background: a sign naming the scene (e.g. 实验室) above the speaker;
- subtitle: a subtitle band carrying the spoken sentence;
- scene: scene colour + drawn icon + a legend word that implies the word without spelling it;
- conflict: the subtitle shows the COMPETITOR word while the speech says the target; the reference
  text stays what is spoken (tests single-modality dominance).
Renderings: `all_contents(renders=K)` gives every (pair, template, word, cue) K times, each with its own
seeded `Variation` (speech rate and pitch, cue box offset, background tint, font scale), so a model
trained on some renderings can be tested on fresh ones of the same content (bench/learn_cavsr.py).
`generate` (the fixtures) uses the identity variation, so its output is unchanged.
Frames default to 224x224 (a multiple of 28; legible for OCR) rather than 112x112; loaders resize.
MCQ departure: audio-only items list the target and three words from other pairs, not the competitor,
because most competitors sound identical and such an item could not be answered from audio.
"""
from __future__ import annotations

import argparse
import json
import math
import random
from dataclasses import asdict
from pathlib import Path

from pypinyin import Style, lazy_pinyin

from avcot.records import LETTERS, McqItem
from avcot.synth_data import IDENTITY, PAIRS, HomophonePair, SentenceSpec, Variation, Voice, random_variation
from avcot.synth_media import SynthError, find_cjk_font, mux, render_frames, require_tool, synthesize_speech

CUES = ("background", "subtitle", "scene", "conflict")


# ---------------------------------------------------------------- sentences


def homophone_pairs() -> tuple[HomophonePair, ...]:
    """The homophone pairs clips are built from."""
    return PAIRS


def tone_pinyin(text: str) -> str:
    """Tone-digit pinyin of Chinese text (`chai1 bo1`), neutral tone as 5; punctuation dropped."""
    return " ".join(lazy_pinyin(text, style=Style.TONE3, neutral_tone_with_five=True, errors="ignore"))


def _cue_order(n: int, rng: random.Random) -> list[str]:
    """Cues in shuffled blocks of four, so every 4 consecutive clips cover all cue types."""
    out: list[str] = []
    while len(out) < n:
        block = list(CUES)
        rng.shuffle(block)
        out.extend(block)
    return out[:n]


def _screen_text(pair: HomophonePair, template: str, cue: str, target_idx: int) -> str:
    scene = pair.scenes[target_idx]
    if cue == "background":
        return scene.sign
    if cue == "scene":
        return scene.legend
    if cue == "conflict":
        return template.format(w=pair.words[1 - target_idx])
    return template.format(w=pair.words[target_idx])


def make_sentences(n: int, seed: int) -> list[SentenceSpec]:
    """N clip specs: a seeded walk over (pair, template, target) combinations, cues in mixed blocks."""
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    rng = random.Random(seed)
    combos = [(p, t, w) for p in range(len(PAIRS)) for t in range(len(PAIRS[p].templates)) for w in (0, 1)]
    rng.shuffle(combos)
    cues = _cue_order(n, rng)
    specs = []
    for i in range(n):
        p, t, w = combos[i % len(combos)]
        specs.append(_spec(f"synth-s{seed}-{i:04d}", PAIRS[p], t, w, cues[i]))
    return specs


def _spec(spec_id: str, pair: HomophonePair, t: int, w: int, cue: str, variation: Variation = IDENTITY) -> SentenceSpec:
    """The spec of template t of `pair` spoken with word w under `cue`."""
    template = pair.templates[t]
    text = template.format(w=pair.words[w])
    return SentenceSpec(
        id=spec_id, sentence_id=f"{pair.key}-s{t}", pair_key=pair.key, target=pair.words[w],
        competitor=pair.words[1 - w], text=text, pinyin=tone_pinyin(text), cue=cue, scene=pair.scenes[w],
        screen_text=_screen_text(pair, template, cue, w), variation=variation)


def all_contents(renders: int, seed: int, cues: tuple[str, ...] = CUES,
                 voices: tuple[Voice, ...] = ()) -> list[SentenceSpec]:
    """Every (pair, template, word, cue) content, `renders` times each with a seeded random Variation.

    `voices` limits the speech to a fixed set of (rate, pitch) "speakers" (default: any voice in range).
    Ids are `synth-r<seed>-<pair>-s<t>-w<word>-<cue>-<k>`; the same seed gives the same specs.
    """
    if renders <= 0:
        raise ValueError(f"renders must be positive, got {renders}")
    unknown = set(cues) - set(CUES)
    if unknown:
        raise ValueError(f"unknown cue(s) {sorted(unknown)}; expected some of {CUES}")
    rng, specs = random.Random(f"renders-{seed}"), []
    contents = [(pair, t, w, cue) for pair in PAIRS for t in range(len(pair.templates)) for w in (0, 1) for cue in cues]
    for pair, t, w, cue in contents:
        for k in range(renders):
            specs.append(_spec(f"synth-r{seed}-{pair.key}-s{t}-w{w}-{cue}-{k}", pair, t, w, cue,
                               random_variation(rng, voices=voices)))
    return specs


# ---------------------------------------------------------------- manifest and MCQ


def manifest_row(spec: SentenceSpec, video: str, audio: str, duration_s: float) -> dict:
    """One manifest.jsonl object (media paths relative to the manifest's directory)."""
    return {"id": spec.id, "video": video, "audio": audio, "text": spec.text, "pinyin": spec.pinyin,
            "cue": spec.cue, "target": spec.target, "competitor": spec.competitor,
            "sentence_id": spec.sentence_id, "screen_text": spec.screen_text,
            "duration_s": round(duration_s, 3)}


def shuffled_options(correct: str, others: list[str], rng: random.Random) -> tuple[tuple[str, ...], str]:
    """(options, answer letter): `correct` and `others` in an order shuffled by rng."""
    opts = [correct, *others]
    rng.shuffle(opts)
    return tuple(opts), LETTERS[opts.index(correct)]


def _distractors(spec: SentenceSpec, k: int, rng: random.Random, attr: str = "words") -> list[str]:
    """k words (or scene legends) from pairs other than the spec's, chosen by rng."""
    pool = []
    for pair in PAIRS:
        if pair.key != spec.pair_key:
            pool.extend(pair.words if attr == "words" else [s.legend for s in pair.scenes])
    return rng.sample(sorted(pool), k)


def make_mcq(specs: list[SentenceSpec], paths: dict[str, tuple[str, str]], seed: int) -> list[McqItem]:
    """Three questions per clip: v (what is on screen), a (what is said), av (spoken word, picture decides).

    `paths` maps clip id -> (video, audio). Conflict clips get no av item: speech and picture disagree
    and most pairs sound identical, so no answer would be fair.
    """
    rng = random.Random(f"mcq-{seed}")
    items: list[McqItem] = []
    for spec in specs:
        video, audio = paths[spec.id]
        if spec.cue == "scene":
            question = "画面展示的是哪种场景？"
            other_legend = next(s.legend for p in PAIRS if p.key == spec.pair_key for s in p.scenes
                                if s != spec.scene)
            opts, ans = shuffled_options(spec.scene.legend, [other_legend, *_distractors(spec, 2, rng, "legend")], rng)
        else:
            question = "画面中的标志写的是哪个词？" if spec.cue == "background" else "字幕中出现的是哪个词？"
            shown, other = ((spec.competitor, spec.target) if spec.cue == "conflict"
                            else (spec.target, spec.competitor))
            opts, ans = shuffled_options(shown, [other, *_distractors(spec, 2, rng)], rng)
        items.append(McqItem(f"{spec.id}-v", question, opts, ans, video=video, modality="v"))
        opts, ans = shuffled_options(spec.target, _distractors(spec, 3, rng), rng)
        items.append(McqItem(f"{spec.id}-a", "说话人说的是哪个词？", opts, ans, audio=audio, modality="a"))
        if spec.cue != "conflict":
            opts, ans = shuffled_options(spec.target, [spec.competitor, *_distractors(spec, 2, rng)], rng)
            items.append(McqItem(f"{spec.id}-av", "结合画面和声音，说话人说的是哪个词？", opts, ans,
                                 video=video, modality="av"))
    return items


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def write_mcq(items: list[McqItem], path: Path) -> Path:
    """McqItems as a JSONL manifest (one object per item, options as a list)."""
    _write_jsonl(path, [{**asdict(it), "options": list(it.options)} for it in items])
    return path


def generate(out_dir: Path, n: int, seed: int, *, mcq: bool = False, size: tuple[int, int] = (224, 224),
             fps: float = 2.0, min_seconds: float = 0.0, speed: int = 140, progress: bool = True) -> Path:
    """Write N clips (wav + mp4) and manifest.jsonl (+ mcq.jsonl) under out_dir; returns the manifest path."""
    specs = make_sentences(n, seed)
    manifest = write_clips(specs, out_dir, size=size, fps=fps, min_seconds=min_seconds, speed=speed,
                           progress=progress)
    if mcq:
        paths = {spec.id: (f"clips/{spec.id}.mp4", f"clips/{spec.id}.wav") for spec in specs}
        items = make_mcq(specs, paths, seed)
        write_mcq(items, out_dir / "mcq.jsonl")
    return manifest


def _write_clip(spec: SentenceSpec, out_dir: Path, size: tuple[int, int], fps: float, min_seconds: float,
                speed: int) -> dict:
    wav_rel, mp4_rel = f"clips/{spec.id}.wav", f"clips/{spec.id}.mp4"
    v = spec.variation
    duration = synthesize_speech(spec.pinyin, out_dir / wav_rel, speed=v.speed or speed, min_seconds=min_seconds,
                                 pitch=v.pitch)
    frames = render_frames(spec, size, max(1, math.ceil(duration * fps)))
    mux(frames, out_dir / wav_rel, out_dir / mp4_rel, fps)
    return manifest_row(spec, mp4_rel, wav_rel, duration)


def write_clips(specs: list[SentenceSpec], out_dir: Path, *, size: tuple[int, int] = (224, 224), fps: float = 2.0,
                min_seconds: float = 0.0, speed: int = 140, workers: int = 1, progress: bool = True) -> Path:
    """Render specs (wav + mp4 each) under out_dir/clips and write out_dir/manifest.jsonl in spec order.

    `workers` > 1 runs the espeak-ng/ffmpeg subprocesses from a thread pool; the bytes do not change.
    """
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    require_tool("espeak-ng", "espeak-ng")
    require_tool("ffmpeg", "ffmpeg")
    find_cjk_font()
    out_dir = Path(out_dir)
    (out_dir / "clips").mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max(1, workers)) as pool:
        jobs = pool.map(lambda sp: _write_clip(sp, out_dir, size, fps, min_seconds, speed), specs)
        rows = list(tqdm(jobs, total=len(specs), desc="synth clips", disable=not progress))
    manifest = out_dir / "manifest.jsonl"
    _write_jsonl(manifest, rows)
    return manifest


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: `python -m avcot.synth --out DIR --n N --seed S [--mcq]`."""
    ap = argparse.ArgumentParser(prog="python -m avcot.synth", description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="output directory")
    ap.add_argument("--n", type=int, default=12, help="number of clips")
    ap.add_argument("--seed", type=int, default=0, help="seed: same seed -> identical manifests and media")
    ap.add_argument("--mcq", action="store_true", help="also write mcq.jsonl")
    ap.add_argument("--seconds", type=float, default=0.0, help="pad each clip with silence to at least this long")
    ap.add_argument("--size", type=int, nargs=2, default=(224, 224), metavar=("W", "H"), help="frame size")
    ap.add_argument("--fps", type=float, default=2.0, help="video frame rate")
    args = ap.parse_args(argv)
    try:
        path = generate(args.out, args.n, args.seed, mcq=args.mcq, size=tuple(args.size), fps=args.fps,
                        min_seconds=args.seconds)
    except SynthError as err:
        ap.exit(2, f"error: {err}\n")
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

