"""Steps 1-3 of the CAVSR learning benchmark (bench/learn_cavsr.py): synthesise the clips, keep the ones only
the video decides, write each clip's AV-CoT target, split, and the competitor-video manifest."""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from bench.learn_cavsr_report import VISUAL_CUES

if TYPE_CHECKING:  # the settings record lives in the script, which imports this module
    from bench.learn_cavsr import BenchSettings

CUE_LABEL = {"background": "背景文字", "subtitle": "字幕", "scene": "场景"}


def generate_set(settings: BenchSettings, name: str, seed: int, renders: int,
                 cues: tuple[str, ...] = VISUAL_CUES) -> list[dict]:
    """Fresh synthetic clips (every content showing one of `cues` x renders); rows with absolute media paths."""
    from avcot.synth import all_contents, write_clips

    data_dir = Path(settings.out) / name
    specs = all_contents(renders, seed, cues, parse_voices(settings.voices))
    if settings.pairs:  # fewer clips (smoke tests, quick runs); ids keep the pair key after the seed
        keys = {k.strip() for k in settings.pairs.split(",") if k.strip()}
        specs = [s for s in specs if s.id.split("-")[2] in keys]
        if not specs:
            raise ValueError(f"--pairs {settings.pairs!r} names no homophone pair of avcot.synth.PAIRS")
    manifest = write_clips(specs, data_dir, size=(224, 224), workers=settings.workers, progress=True)
    rows = read_rows(manifest)
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


def of_trained_contents(extra: list[dict], train_rows: list[dict]) -> list[dict]:
    """The extra renderings whose content is trained on (a held-out content stays held out)."""
    trained = {r["content"] for r in train_rows}
    return [r for r in extra if r["content"] in trained]


def split(rows: list[dict], settings: BenchSettings) -> tuple[list[dict], list[dict]]:
    """(train, test) with avcot.data.rows.split_rows, grouped by content, context or sentence template."""
    from avcot.data.rows import split_rows

    column = {"content": "content", "sentence": "sentence_id", "context": "context"}[settings.split]
    return split_rows(rows, settings.test_fraction, settings.seed, column)


def read_rows(path: Path) -> list[dict]:
    """The rows of a JSONL manifest this script wrote (blank lines skipped)."""
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def write_manifest(rows: list[dict], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(dict(r, trace=avcot_trace(r)), ensure_ascii=False) + "\n" for r in rows),
                    encoding="utf-8")
    return path


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
