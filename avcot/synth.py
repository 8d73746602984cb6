"""Synthetic Mandarin homophone clips: speech that is ambiguous by sound, a picture that decides it.

`python -m avcot.synth --out DIR --n N --seed S [--mcq]` writes DIR/clips/<id>.{wav,mp4},
DIR/manifest.jsonl (one row per clip, media paths relative to DIR) and, with --mcq, DIR/mcq.jsonl.

Speech: espeak-ng voice `cmn-latn-pinyin` reading tone-digit pinyin (pypinyin TONE3, neutral tone 5),
so tones are exact; resampled from 22.05 kHz to 16 kHz mono with soxr (not sox: soxr in-process is
byte-reproducible, sox dithers). Frames: PIL + Noto Sans CJK SC. Cue types:
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
import glob
import json
import math
import random
import shutil
import subprocess
import tempfile
import threading
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from PIL import Image, ImageDraw, ImageFont
from pypinyin import Style, lazy_pinyin

from avcot.records import LETTERS, McqItem
from avcot.synth_data import IDENTITY, PAIRS, HomophonePair, Scene, Variation, Voice, random_variation

CUES = ("background", "subtitle", "scene", "conflict")
SAMPLE_RATE = 16000
VOICE = "cmn-latn-pinyin"
NEUTRAL_BG = (225, 225, 215)
_RENDER_LOCK = threading.Lock()


class SynthError(RuntimeError):
    """A tool, font or generation step failed; the message names what and how to fix it."""


@dataclass(frozen=True)
class SentenceSpec:
    """Everything needed to render one clip."""

    id: str
    sentence_id: str
    """Template id (`<pair>-s<k>`), shared by both words of the pair: split train/test on it."""
    pair_key: str
    target: str
    """The homophone that is spoken (and that the picture supports, except for `conflict`)."""
    competitor: str
    text: str
    """Reference transcript = what is spoken."""
    pinyin: str
    cue: str
    scene: Scene
    """Scene of the target word."""
    screen_text: str
    """Text drawn on screen: sign, legend or subtitle (the competitor's sentence for `conflict`)."""
    variation: Variation = IDENTITY


# ---------------------------------------------------------------- tools and fonts


def require_tool(name: str, package: str) -> str:
    """Path of an executable, or SynthError naming the Debian package that provides it."""
    path = shutil.which(name)
    if path is None:
        raise SynthError(f"{name} not found on PATH: install the Debian package {package} "
                         f"(apt-get install -y {package})")
    return path


@lru_cache(maxsize=1)
def find_cjk_font() -> tuple[str, int]:
    """(font file, face index) of Noto Sans CJK SC, or SynthError naming fonts-noto-cjk."""
    if shutil.which("fc-match"):
        out = subprocess.run(["fc-match", "-f", "%{file}:%{index}", "Noto Sans CJK SC"],
                             capture_output=True, text=True, check=False).stdout.strip()
        file, _, index = out.rpartition(":")
        if "CJK" in file and Path(file).is_file():
            return file, int(index or 0)
    hits = sorted(glob.glob("/usr/share/fonts/**/NotoSansCJK*-Regular.tt[cf]", recursive=True))
    if hits:
        return hits[0], 2 if hits[0].endswith(".ttc") else 0  # .ttc face 2 is SC
    raise SynthError("Noto Sans CJK font not found: install the Debian package fonts-noto-cjk "
                     "(apt-get install -y fonts-noto-cjk)")


@lru_cache(maxsize=64)
def _font(size: int) -> ImageFont.FreeTypeFont:
    file, index = find_cjk_font()
    return ImageFont.truetype(file, max(6, size), index=index)


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


# ---------------------------------------------------------------- frames


def _fit_font(draw: ImageDraw.ImageDraw, text: str, max_w: int, start: int) -> ImageFont.FreeTypeFont:
    """Largest font (from `start` down) whose rendering of `text` fits in max_w pixels."""
    size = start
    while size > 6:
        font = _font(size)
        if draw.textlength(text, font=font) <= max_w:
            return font
        size -= 1
    return _font(6)


def _draw_centered(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], text: str,
                   fill: tuple[int, int, int], start: int) -> None:
    x0, y0, x1, y1 = box
    font = _fit_font(draw, text, int((x1 - x0) * 0.92), start)
    draw.text(((x0 + x1) / 2, (y0 + y1) / 2), text, font=font, fill=fill, anchor="mm")


def _draw_icon(draw: ImageDraw.ImageDraw, icon: str, box: tuple[int, int, int, int]) -> None:
    x0, y0, x1, y1 = box
    cx, cy, r = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2
    ink = (60, 60, 90)
    if icon == "circle":
        draw.ellipse(box, fill=ink)
    elif icon == "square":
        draw.rectangle(box, fill=ink)
    elif icon == "triangle":
        draw.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=ink)
    elif icon == "diamond":
        draw.polygon([(cx, y0), (x1, cy), (cx, y1), (x0, cy)], fill=ink)
    elif icon == "cross":
        w = r / 3
        draw.rectangle((cx - w, y0, cx + w, y1), fill=ink)
        draw.rectangle((x0, cy - w, x1, cy + w), fill=ink)
    elif icon == "bars":
        for k in range(3):
            draw.rectangle((x0 + k * 2 * r / 3, y1 - (k + 1) * 2 * r / 3, x0 + (k + 0.7) * 2 * r / 3, y1), fill=ink)
    elif icon == "waves":
        for k in range(3):
            yy = y0 + (k + 0.5) * 2 * r / 3
            draw.arc((x0, yy - r / 3, x1, yy + r / 3), 180, 360, fill=ink, width=max(1, int(r / 6)))
    else:  # star
        pts = [(cx + (r if k % 2 == 0 else r / 2.5) * math.sin(k * math.pi / 5),
                cy - (r if k % 2 == 0 else r / 2.5) * math.cos(k * math.pi / 5)) for k in range(10)]
        draw.polygon(pts, fill=ink)


def _base_frame(spec: SentenceSpec, size: tuple[int, int]) -> Image.Image:
    """The still picture for a spec (cue-specific, moved/tinted by its Variation), without the progress bar."""
    w, h = size
    v = spec.variation
    bg = spec.scene.colour if spec.cue == "scene" else NEUTRAL_BG
    img = Image.new("RGB", size, tuple(min(255, max(0, c + t)) for c, t in zip(bg, v.tint)))
    draw = ImageDraw.Draw(img)

    def at(fx0: float, fy0: float, fx1: float, fy1: float) -> tuple[float, float, float, float]:
        # Fractions of the frame, shifted by the variation (identity: the exact boxes of the plain render).
        return w * (fx0 + v.dx), h * (fy0 + v.dy), w * (fx1 + v.dx), h * (fy1 + v.dy)

    def at_px(*fractions: float) -> tuple[int, int, int, int]:
        return tuple(int(c) for c in at(*fractions))

    # A plain speaker silhouette so every clip has "someone talking".
    draw.ellipse(at(0.42, 0.38, 0.58, 0.54), fill=(90, 90, 100))
    draw.rounded_rectangle(at(0.33, 0.56, 0.67, 0.9), radius=max(1, int(w * 0.06)), fill=(90, 90, 100))
    if spec.cue == "background":
        box = at_px(0.1, 0.06, 0.9, 0.3)
        draw.rectangle(box, fill=(20, 90, 60))
        _draw_centered(draw, box, spec.screen_text, (255, 255, 255), int(h * 0.16 * v.font_scale))
    elif spec.cue == "scene":
        _draw_icon(draw, spec.scene.icon, at_px(0.06, 0.06, 0.3, 0.3))
        box = at_px(0.04, 0.8, 0.52, 0.96)
        draw.rectangle(box, fill=(255, 255, 255))
        _draw_centered(draw, box, spec.screen_text, (20, 20, 20), int(h * 0.11 * v.font_scale))
    else:  # subtitle / conflict: a full-width subtitle band (only moves vertically)
        box = (0, int(h * (0.8 + min(0.0, v.dy))), w, h)
        draw.rectangle(box, fill=(0, 0, 0))
        _draw_centered(draw, box, spec.screen_text, (255, 255, 255), int(h * 0.12 * v.font_scale))
    return img


def render_frames(spec: SentenceSpec, size: tuple[int, int], n_frames: int) -> list[Image.Image]:
    """N RGB frames (size = (width, height)) showing the spec's cue; a thin bar at the top shows progress."""
    if n_frames <= 0:
        raise ValueError(f"n_frames must be positive, got {n_frames}")
    base = _base_frame(spec, size)
    frames = []
    for i in range(n_frames):
        img = base.copy()
        bar_w = round(size[0] * (i + 1) / n_frames)  # distinct frames, so samplers can be checked
        ImageDraw.Draw(img).rectangle((0, 0, bar_w - 1, max(1, size[1] // 40)), fill=(200, 40, 40))
        frames.append(img)
    return frames


# ---------------------------------------------------------------- audio and muxing


def synthesize_speech(pinyin: str, out_wav: Path, *, speed: int = 140, min_seconds: float = 0.0,
                      pitch: int = 50) -> float:
    """Speak tone-digit pinyin with espeak-ng into a 16 kHz mono PCM16 wav; returns its duration (s).

    Trailing silence pads the clip to `min_seconds`. `pitch` is espeak-ng's -p (0-99, default 50).
    """
    exe = require_tool("espeak-ng", "espeak-ng")
    if not 0 <= pitch <= 99:
        raise ValueError(f"pitch must be in 0..99 (espeak-ng -p), got {pitch}")
    out_wav = Path(out_wav)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "espeak.wav"
        pitch_args = [] if pitch == 50 else ["-p", str(pitch)]  # 50 is espeak's default: keep old argv
        proc = subprocess.run([exe, "-v", VOICE, "-s", str(speed), *pitch_args, "-w", str(raw), pinyin],
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0 or not raw.is_file():
            raise SynthError(f"espeak-ng failed for {pinyin!r}: {proc.stderr.strip()}")
        audio, rate = sf.read(raw, dtype="float32", always_2d=True)
    mono = audio.mean(axis=1)
    wav = soxr.resample(mono, rate, SAMPLE_RATE).astype(np.float32)
    pad = max(0, int(round(min_seconds * SAMPLE_RATE)) - len(wav))
    wav = np.concatenate([wav, np.zeros(pad, np.float32)])
    out_wav.parent.mkdir(parents=True, exist_ok=True)
    sf.write(out_wav, np.clip(wav, -1.0, 1.0), SAMPLE_RATE, subtype="PCM_16")
    return len(wav) / SAMPLE_RATE


def mux(frames: list[Image.Image], wav: Path, out_mp4: Path, fps: float) -> None:
    """Encode frames (H.264 yuv420p) + the wav (AAC) into an mp4 as long as the audio.

    Single-threaded x264 and bitexact flags keep the bytes reproducible for a fixed input.
    """
    exe = require_tool("ffmpeg", "ffmpeg")
    if not frames:
        raise ValueError("mux needs at least one frame")
    w, h = frames[0].size
    duration = sf.info(str(wav)).duration
    raw = b"".join(f.convert("RGB").tobytes() for f in frames)
    cmd = [exe, "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
           "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-framerate", str(fps), "-i", "-",
           "-i", str(wav), "-map", "0:v", "-map", "1:a",
           "-c:v", "libx264", "-preset", "medium", "-tune", "stillimage", "-crf", "30", "-pix_fmt", "yuv420p",
           "-threads", "1", "-c:a", "aac", "-b:a", "32k", "-ac", "1", "-ar", str(SAMPLE_RATE),
           "-t", f"{duration:.3f}", "-map_metadata", "-1", "-fflags", "+bitexact",
           "-flags:v", "+bitexact", "-flags:a", "+bitexact", "-movflags", "+faststart", str(out_mp4)]
    proc = subprocess.run(cmd, input=raw, capture_output=True, check=False)
    if proc.returncode != 0:
        raise SynthError(f"ffmpeg failed writing {out_mp4}: {proc.stderr.decode(errors='replace').strip()}")


# ---------------------------------------------------------------- manifest and MCQ


def manifest_row(spec: SentenceSpec, video: str, audio: str, duration_s: float) -> dict:
    """One manifest.jsonl object (media paths relative to the manifest's directory)."""
    return {"id": spec.id, "video": video, "audio": audio, "text": spec.text, "pinyin": spec.pinyin,
            "cue": spec.cue, "target": spec.target, "competitor": spec.competitor,
            "sentence_id": spec.sentence_id, "screen_text": spec.screen_text,
            "duration_s": round(duration_s, 3)}


def _options(correct: str, others: list[str], rng: random.Random) -> tuple[tuple[str, ...], str]:
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
            opts, ans = _options(spec.scene.legend, [other_legend, *_distractors(spec, 2, rng, "legend")], rng)
        else:
            question = "画面中的标志写的是哪个词？" if spec.cue == "background" else "字幕中出现的是哪个词？"
            shown, other = ((spec.competitor, spec.target) if spec.cue == "conflict"
                            else (spec.target, spec.competitor))
            opts, ans = _options(shown, [other, *_distractors(spec, 2, rng)], rng)
        items.append(McqItem(f"{spec.id}-v", question, opts, ans, video=video, modality="v"))
        opts, ans = _options(spec.target, _distractors(spec, 3, rng), rng)
        items.append(McqItem(f"{spec.id}-a", "说话人说的是哪个词？", opts, ans, audio=audio, modality="a"))
        if spec.cue != "conflict":
            opts, ans = _options(spec.target, [spec.competitor, *_distractors(spec, 2, rng)], rng)
            items.append(McqItem(f"{spec.id}-av", "结合画面和声音，说话人说的是哪个词？", opts, ans,
                                 video=video, modality="av"))
    return items


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def generate(out_dir: Path, n: int, seed: int, *, mcq: bool = False, size: tuple[int, int] = (224, 224),
             fps: float = 2.0, min_seconds: float = 0.0, speed: int = 140, progress: bool = True) -> Path:
    """Write N clips (wav + mp4) and manifest.jsonl (+ mcq.jsonl) under out_dir; returns the manifest path."""
    specs = make_sentences(n, seed)
    manifest = write_clips(specs, out_dir, size=size, fps=fps, min_seconds=min_seconds, speed=speed,
                           progress=progress)
    if mcq:
        paths = {spec.id: (f"clips/{spec.id}.mp4", f"clips/{spec.id}.wav") for spec in specs}
        items = make_mcq(specs, paths, seed)
        _write_jsonl(out_dir / "mcq.jsonl", [{**asdict(it), "options": list(it.options)} for it in items])
    return manifest


def _write_clip(spec: SentenceSpec, out_dir: Path, size: tuple[int, int], fps: float, min_seconds: float,
                speed: int) -> dict:
    wav_rel, mp4_rel = f"clips/{spec.id}.wav", f"clips/{spec.id}.mp4"
    v = spec.variation
    duration = synthesize_speech(spec.pinyin, out_dir / wav_rel, speed=v.speed or speed, min_seconds=min_seconds,
                                 pitch=v.pitch)
    with _RENDER_LOCK:  # the cached FreeType faces are shared and not thread-safe
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
