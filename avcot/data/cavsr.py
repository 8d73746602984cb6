"""CAVSR rows: manifest row -> `Clip` -> media -> student prompt -> encoded `Example`.

Manifest (Parquet or JSONL): columns id, video, audio, text, pinyin, cue, and optionally trace and
sentence_id. Relative media paths are relative to the manifest's directory. The prompt is the student
CAVSR instruction from `avcot.prompts` under `avcot.prompts.SYSTEM_PROMPT`.

Targets: "avcot" trains on the row's AV-CoT trace (a row without one is rejected, never silently trained
on its transcript); "transcript" trains on the plain transcript with the plain instruction (the paper's
"w/o AV-CoT" ablation). Without a target (generation) the prompt keeps the target's instruction.
"""
from __future__ import annotations

import random
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

from avcot.chat import Prompt, encode_example
from avcot.data.clips import CAVSR_MEDIA, MediaSettings, audio_seconds, load_clip
from avcot.data.examples import Example, text_tokens
from avcot.data.rows import StageError, media_problem
from avcot.manifest import cavsr_fields, resolve_media
from avcot.records import Clip

REQUIRED_COLUMNS = ("id", "video", "text")
Target = Literal["avcot", "transcript"]


def clip_from_row(row: dict, base_dir: Path) -> Clip:
    """A manifest row as a `Clip` (fields checked by `avcot.manifest.cavsr_fields`, the pipeline's schema
    too; ValueError saying what is wrong), media paths made absolute (relative = under the manifest's dir)."""
    f = cavsr_fields(row)
    return Clip(id=f.id, video=resolve_media(f.video, base_dir), audio=resolve_media(f.audio, base_dir),
                text=f.text, pinyin=f.pinyin, cue=f.cue, trace=f.trace)


def target_text(clip: Clip, target: Target) -> str:
    """The assistant turn to train on; raises ValueError when the row cannot supply it."""
    if target == "transcript":
        return clip.text
    if target == "avcot":
        if clip.trace is None:
            raise ValueError("target='avcot' but the row has no trace; run the pipeline first: python -m "
                             "avcot.pipeline cavsr --input MANIFEST --out DIR, then train on DIR/sft.jsonl "
                             "(or use target='transcript' for plain SFT)")
        return clip.trace
    raise ValueError(f"target must be 'avcot' or 'transcript', got {target!r}")


def stable_seed(text: str) -> int:
    """A process-independent seed from a row id (Python's hash() is salted per process)."""
    return zlib.crc32(text.encode("utf-8"))


def random_partner(clip: Clip, clips: Sequence[Clip], seed: int) -> str | None:
    """Video of another clip for the 'random video' ablation; fixed per (clip id, seed) across runs."""
    from avcot.media import random_video

    ids = [c.id for c in clips]
    index = ids.index(clip.id)
    return clips[random_video(ids, index, random.Random(seed * 1_000_003 + stable_seed(clip.id)))].video


def student_prompt_for(clip: Clip, target: Target, settings: MediaSettings, other_video: str | None = None) -> Prompt:
    """Decode the clip's media and wrap it in the student CAVSR prompt."""
    from avcot.prompts import SYSTEM_PROMPT, student_prompt

    media = load_clip(clip.video, clip.audio, settings, other_video=other_video)
    kind = "avcot" if target == "avcot" else "plain"
    return Prompt(instruction=student_prompt(kind), system=SYSTEM_PROMPT, video=media.frames, audio=media.audio,
                  fps=media.fps)


def build_example(clip: Clip, *, processor, target: Target, settings: MediaSettings, use_audio_in_video: bool,
                  with_target: bool = True, other_video: str | None = None) -> Example:
    """One `Example` for `clip` (no assistant turn when `with_target` is False: predict/generation)."""
    prompt = student_prompt_for(clip, target, settings, other_video)
    text = target_text(clip, target) if with_target else None
    enc = encode_example(processor, prompt, text, use_audio_in_video=use_audio_in_video)
    return Example(id=clip.id, encoded=enc, reference=clip.text)


def clip_length(clip: Clip, tokenizer, target: Target, settings: MediaSettings) -> int:
    """Estimated tokens of the clip's example that vary between clips: its target text, audio and video."""
    from avcot.length_batching import estimated_length, visual_tokens

    video = clip.video is not None and settings.video != "none"
    visual = visual_tokens(settings.num_frames, settings.frame_size) if video else 0
    return estimated_length(text_tokens(tokenizer, target_text(clip, target)),
                            audio_seconds(clip.audio, clip.video), settings.max_seconds, visual)


def checked_clip(row: dict, base_dir: Path, target: Target | None) -> Clip:
    """The row's `Clip` after the up-front checks (fields, target, media files); `StageError` naming the stage."""
    clip = clip_from_row(row, base_dir)
    if target is not None:
        try:
            target_text(clip, target)
        except ValueError as e:
            raise StageError("target", str(e)) from e
    problem = media_problem([clip.video, clip.audio])
    if problem is not None:
        raise StageError("media", problem)
    return clip


@dataclass(frozen=True)
class CavsrTask:
    """How CAVSR manifest rows become examples (`avcot.data.examples.RowTask`)."""

    target: Target = "avcot"
    """'avcot' = the row's AV-CoT trace; 'transcript' = the plain transcript with the plain instruction."""
    media: MediaSettings = CAVSR_MEDIA
    use_audio_in_video: bool = False
    """Interleave audio with the video frames (Qwen2.5-Omni layout)."""
    seed: int = 0
    """Seed of the 'random video' partner choice."""
    required: ClassVar[tuple[str, ...]] = REQUIRED_COLUMNS

    def __post_init__(self):
        if self.target not in ("avcot", "transcript"):
            raise ValueError(f"target must be 'avcot' or 'transcript', got {self.target!r}")

    def check(self, record: dict, base_dir: Path, with_target: bool) -> Clip:
        return checked_clip(record, base_dir, self.target if with_target else None)

    def builder(self, items: Sequence[Clip], processor, *, with_target: bool,
                media: MediaSettings | None = None) -> ClipBuilder:
        return ClipBuilder(list(items), self.seed, processor=processor, target=self.target,
                           settings=media or self.media, use_audio_in_video=self.use_audio_in_video,
                           with_target=with_target)

    def length(self, item: Clip, tokenizer) -> int:
        return clip_length(item, tokenizer, self.target, self.media)


class ClipBuilder:
    """Picklable record -> Example function for DataLoader workers (clips indexed once, not per item)."""

    def __init__(self, clips: list[Clip], seed: int, **kwargs):
        self.clips, self.seed, self.kwargs = clips, seed, kwargs
        self.by_id = {c.id: c for c in clips}

    def __call__(self, row: dict) -> Example:
        clip = self.by_id[str(row["id"])]
        other = random_partner(clip, self.clips, self.seed) if self.kwargs["settings"].video == "random" else None
        return build_example(clip, other_video=other, **self.kwargs)
