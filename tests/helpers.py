"""Plain helpers shared by several test modules: fixture rows and manifests, JSON lines, tiny model batches.

Test modules import them as `from helpers import ...` (see tests/conftest.py for why this is a module and
not fixtures). Nothing here is a test; nothing here builds a model at import time.
"""
from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from avcot.traces import AVCoTTrace, render_avcot

DATA = Path(__file__).parent / "data"
SYNTH = DATA / "synth"
"""The committed synthetic clips (`manifest.jsonl`, `mcq.jsonl` and their media)."""
BAD = DATA / "bad"
"""Committed broken media (truncated and non-video files) for reject tests."""
FAST_PIPELINE = {"progress": False, "cavsr": {"ocr_frames": 1, "caption_frames": 2}, "avrt": {"visual_frames": 1}}
"""Pipeline settings that keep the offline pipeline runs short (fewest frames per stage)."""


def write_jsonl(path: Path, rows: list[dict | str]) -> Path:
    """Write `rows` as JSON lines (a str row is written as it is, for malformed-line tests); returns `path`."""
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n"
                            for r in rows), encoding="utf-8")
    return path


def write_manifest(rows: list[dict | str], path: Path) -> Path:
    """`write_jsonl` with the DataModule tests' argument order (rows first)."""
    return write_jsonl(path, rows)


def read_jsonl(path: Path) -> list[dict]:
    """Every line of a JSON-lines file, parsed."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def synth_rows() -> list[dict]:
    """The synth manifest's rows with absolute media paths (so copies of the manifest can live anywhere)."""
    return [dict(r, video=str(SYNTH / r["video"]), audio=str(SYNTH / r["audio"]))
            for r in read_jsonl(SYNTH / "manifest.jsonl")]


def trace_for(row: dict) -> str:
    """A hand-written AV-CoT trace for a synth row (the committed fixtures carry no trace)."""
    return render_avcot(AVCoTTrace(f"背景文字：{row['screen_text']}", row["pinyin"],
                                   f"画面支持“{row['target']}”而不是“{row['competitor']}”", row["text"]))


def traced_rows(n: int = 12) -> list[dict]:
    """The first `n` synth rows with absolute media paths and a `trace` column."""
    return [dict(r, trace=trace_for(r)) for r in synth_rows()[:n]]


def write_traced_manifest(dst: Path, n: int = 12) -> Path:
    """`traced_rows(n)` written to `dst` as a JSON-lines manifest."""
    return write_manifest(traced_rows(n), dst)


def varied_rows(n: int) -> list[dict]:
    """Traced synth rows whose traces differ a lot in length (so length grouping has something to group)."""
    rows = traced_rows(n)
    for i, r in enumerate(rows):
        r["trace"] = r["trace"] + "。" + "画面里的文字和发音一致" * (i % 4) * 3
    return rows


def tiny_prompt(seed: int = 0, frames: int = 4, seconds: float = 2.0, audio: bool = True,
                video: bool = True):
    """A seeded `avcot.chat.Prompt`: a 112x112 video (32 video tokens) and a short clip of noise."""
    import numpy as np

    from avcot.chat import Prompt

    rng = np.random.default_rng(seed)
    return Prompt(
        instruction="请转写这段语音。", system="sys",
        video=rng.integers(0, 255, (frames, 112, 112, 3), dtype=np.uint8) if video else None,
        audio=(rng.standard_normal(int(16000 * seconds)) * 0.1).astype(np.float32) if audio else None,
        fps=frames / seconds,
    )


def tiny_batch(processor, targets=("实验室里在做试验", "好"), *, seconds=(2.0, 1.0), side="right",
               use_audio_in_video=False, with_target=True) -> dict:
    """Collated batch of len(targets) examples with different audio lengths and target lengths."""
    from avcot.chat import collate, encode_example

    examples = [
        encode_example(processor, tiny_prompt(seed=i, seconds=s), t if with_target else None,
                       use_audio_in_video=use_audio_in_video)
        for i, (t, s) in enumerate(zip(targets, seconds))
    ]
    return collate(examples, processor.tokenizer.pad_token_id, padding_side=side)


@cache
def parsed_config(name: str) -> dict:
    """configs/<name>.yaml as the CLI resolves it (`fit --print_config`: every default and link filled in)."""
    import contextlib
    import io
    import os

    import pytest
    import yaml

    from avcot.cli import main

    repo = Path(__file__).resolve().parent.parent
    out, cwd = io.StringIO(), os.getcwd()
    os.chdir(repo)
    try:
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as done:
            main(["fit", "--config", f"configs/{name}.yaml", "--print_config"])
    finally:
        os.chdir(cwd)
    assert done.value.code == 0, f"configs/{name}.yaml does not parse"
    return yaml.safe_load(out.getvalue())
