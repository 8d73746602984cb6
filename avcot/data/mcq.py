"""MCQ (AVRT) rows: manifest row -> `McqItem` -> media -> student prompt -> encoded `Example`.

Manifest (Parquet or JSONL, the layout `avcot.synth --mcq` writes): id, question, options (2-4 strings, letter
order), answer (letter), video / audio / image paths (relative = under the manifest's directory; a row with a
video and no audio takes the video's own audio stream), optional trace (merged `<think>…</think><answer>X</answer>`),
modality, difficulty.

Targets: "trace" trains on each row's merged trace (SFT cold start; rows without one are rejected); "none"
gives prompt-only examples (GRPO rollouts, eval, predict). `reference` is the gold letter.

`modality` drops streams for the per-modality evaluation: "a" removes video and image (audio kept, taken from the
video when the row has no separate audio file), "v" removes audio, "av" keeps everything. Rows whose media are
all dropped are still asked (text only): that is what the ablation measures.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar, Literal

from avcot.chat import Prompt, encode_example
from avcot.data.clips import MCQ_MEDIA, NO_VIDEO_FPS, MediaSettings, audio_seconds, load_clip, load_image
from avcot.data.examples import Example, text_tokens
from avcot.data.rows import StageError, media_problem
from avcot.manifest import mcq_fields, resolve_media
from avcot.records import McqItem

REQUIRED_COLUMNS = ("id", "question", "options", "answer")
Modality = Literal["av", "a", "v"]
Target = Literal["trace", "none"]


def item_from_row(row: dict, base_dir: Path) -> McqItem:
    """A manifest row as an `McqItem` (fields checked by `avcot.manifest.mcq_fields`, the pipeline's schema too;
    ValueError saying what is wrong), media paths made absolute."""
    f = mcq_fields(row)
    return McqItem(id=f.id, question=f.question, options=f.options, answer=f.answer,
                   video=resolve_media(f.video, base_dir), audio=resolve_media(f.audio, base_dir),
                   image=resolve_media(f.image, base_dir), trace=f.trace, modality=f.modality,
                   difficulty=f.difficulty)


def drop_streams(item: McqItem, modality: Modality) -> McqItem:
    """The item with the streams `modality` excludes removed ('a': no video/image; 'v': no audio)."""
    if modality == "av":
        return item
    if modality == "a":
        # Audio-only: keep the soundtrack of the video as the audio file, drop the pictures.
        return replace(item, video=None, image=None, audio=item.audio or item.video)
    if modality == "v":
        return replace(item, audio=None)
    raise ValueError(f"modality must be 'av', 'a' or 'v', got {modality!r}")


def target_text(item: McqItem, target: Target) -> str | None:
    """The assistant turn: the merged trace ('trace'), nothing ('none'); ValueError if the row lacks it."""
    if target == "none":
        return None
    if target == "trace":
        if item.trace is None:
            raise ValueError("target='trace' but the row has no merged trace")
        return item.trace
    raise ValueError(f"target must be 'trace' or 'none', got {target!r}")


def mcq_prompt_for(item: McqItem, settings: MediaSettings, modality: Modality) -> Prompt:
    """Decode the item's remaining streams (after `modality` dropping) into the AVRT student prompt."""
    from avcot.prompts import SYSTEM_PROMPT, mcq_student_prompt

    item = drop_streams(item, modality)
    frames, audio, fps = None, None, NO_VIDEO_FPS
    if item.video is not None or item.audio is not None:
        media = load_clip(item.video, item.audio, settings)
        frames, audio, fps = media.frames, media.audio, media.fps
    if modality == "v":
        audio = None  # load_clip reads the video's soundtrack when there is no audio file
    image = load_image(item.image, settings.frame_size) if item.image is not None else None
    return Prompt(instruction=mcq_student_prompt(item.question, item.options), system=SYSTEM_PROMPT,
                  video=frames, audio=audio, image=image, fps=fps)


def build_example(item: McqItem, *, processor, target: Target, settings: MediaSettings, modality: Modality,
                  use_audio_in_video: bool) -> Example:
    """One `Example` for `item`; `reference` is the gold letter."""
    prompt = mcq_prompt_for(item, settings, modality)
    enc = encode_example(processor, prompt, target_text(item, target), use_audio_in_video=use_audio_in_video)
    return Example(id=item.id, encoded=enc, reference=item.answer)


def item_length(item: McqItem, tokenizer, target: Target, modality: Modality, settings: MediaSettings) -> int:
    """Estimated tokens of the item's example that vary between items: question, options, target, media."""
    from avcot.length_batching import estimated_length, visual_tokens

    item = drop_streams(item, modality)
    texts = (item.question, *item.options, target_text(item, target))
    seconds = audio_seconds(item.audio, item.video) if modality != "v" else 0.0
    visual = (visual_tokens(settings.num_frames, settings.frame_size) if item.video else 0) + \
        (visual_tokens(2, settings.frame_size) if item.image else 0)
    return estimated_length(text_tokens(tokenizer, *texts), seconds, settings.max_seconds, visual)


def checked_item(row: dict, base_dir: Path, target: Target) -> McqItem:
    """The row's `McqItem` after the up-front checks (fields, target, media files); `StageError` naming the stage."""
    item = item_from_row(row, base_dir)
    try:
        target_text(item, target)
    except ValueError as e:
        raise StageError("target", str(e)) from e
    problem = media_problem([item.video, item.audio], [item.image])
    if problem is not None:
        raise StageError("media", problem)
    return item


@dataclass(frozen=True)
class McqTask:
    """How MCQ manifest rows become examples (`avcot.data.examples.RowTask`)."""

    target: Target = "trace"
    """'trace' = the merged <think>/<answer> trace; 'none' = prompt only (GRPO rollouts, eval)."""
    modality: Modality = "av"
    """'av' keeps all streams; 'a' drops video/image; 'v' drops audio (per-modality eval)."""
    media: MediaSettings = MCQ_MEDIA
    use_audio_in_video: bool = False
    """Interleave the video's audio with its frames (Qwen2.5-Omni layout)."""
    required: ClassVar[tuple[str, ...]] = REQUIRED_COLUMNS

    def __post_init__(self):
        if self.modality not in ("av", "a", "v"):
            raise ValueError(f"modality must be 'av', 'a' or 'v', got {self.modality!r}")
        if self.target not in ("trace", "none"):
            raise ValueError(f"target must be 'trace' or 'none', got {self.target!r}")

    def check(self, record: dict, base_dir: Path, with_target: bool) -> McqItem:
        return checked_item(record, base_dir, self.target if with_target else "none")

    def builder(self, items: Sequence[McqItem], processor, *, with_target: bool,
                media: MediaSettings | None = None) -> ItemBuilder:
        return ItemBuilder({i.id: i for i in items}, processor=processor,
                           target=self.target if with_target else "none", settings=media or self.media,
                           modality=self.modality, use_audio_in_video=self.use_audio_in_video)

    def length(self, item: McqItem, tokenizer) -> int:
        return item_length(item, tokenizer, self.target, self.modality, self.media)


class ItemBuilder:
    """Picklable record -> Example function for DataLoader workers."""

    def __init__(self, items: dict[str, McqItem], **kwargs):
        self.items, self.kwargs = items, kwargs

    def __call__(self, row: dict) -> Example:
        return build_example(self.items[str(row["id"])], **self.kwargs)
