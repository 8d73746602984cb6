"""VLM OCR (``ocr: chat``): a vision-language model reads the frames and sorts the text itself.

The VASR paper has Qwen2.5-VL read the on-screen text and separate spoken subtitles from background
text (watermarks, logos, text on objects). Here the frames go to any vision chat model with
``OCR_INSTRUCTION``, which asks for JSON ``{"subtitles": [...], "background": [...]}``. No transcript
is needed. ``parse_ocr_reply`` never raises: it returns the split or the reason the reply is not
one, and ``ChatOcr.split`` turns that reason into the row's reject, quoting the reply.
"""
from __future__ import annotations

import json
import re

import numpy as np

from avcot.pipeline.backends import ChatBackend, Message, TextPart, frame_parts
from avcot.pipeline.chat_roles import prompt_fingerprint
from avcot.pipeline.roles import OcrSplit

OCR_INSTRUCTION = (
    "Read all text visible in these video frames. Sort each distinct piece of text into one of two lists: "
    '"subtitles" (captions that show the words being spoken) and "background" (watermarks, logos, channel '
    "names, signs, text on objects or screens). Copy the text exactly as shown. Answer with one JSON object "
    'and nothing else: {"subtitles": ["..."], "background": ["..."]}. Use empty lists when there is no text.'
)
_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL | re.IGNORECASE)
MAX_REPLY = 200_000
"""Longer replies are refused unparsed (a model that loops; json.loads would still be linear, but the
rows would be junk)."""


def _texts(value: object, key: str) -> tuple[str, ...] | str:
    """The list under `key` as distinct stripped strings, or why it is not a list of strings."""
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return f"'{key}' is not a list of strings"
    return tuple(dict.fromkeys(v.strip() for v in value if v.strip()))


def parse_ocr_reply(reply: object) -> OcrSplit | str:
    """The OcrSplit in a VLM reply, or a short reason it has none. Never raises, on any input.

    Accepts the bare object or one inside a ```json fence; keys other than the two lists are ignored;
    a missing list is empty. Anything else (not text, not JSON, not an object, lists of non-strings)
    is a reason string.
    """
    if not isinstance(reply, str):
        return f"reply is {type(reply).__name__}, not text"
    if len(reply) > MAX_REPLY:
        return f"reply is {len(reply)} characters, more than {MAX_REPLY}"
    fenced = _FENCE.search(reply)
    body = (fenced.group(1) if fenced else reply).strip()
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:
        return f"reply is not JSON ({type(exc).__name__})"
    if not isinstance(data, dict):
        return f"reply is JSON {type(data).__name__}, not an object"
    if "subtitles" not in data and "background" not in data:
        return "reply has neither 'subtitles' nor 'background'"
    subs, background = _texts(data.get("subtitles"), "subtitles"), _texts(data.get("background"), "background")
    for part in (subs, background):
        if isinstance(part, str):
            return part
    return OcrSplit(subs, background)


def _excerpt(reply: object, limit: int = 300) -> str:
    text = reply if isinstance(reply, str) else repr(reply)
    return repr(text) if len(text) <= limit else f"{text[:limit // 2]!r} … {text[-limit // 2:]!r} ({len(text)} chars)"


class ChatOcr:
    """VisualTextReader through a vision chat model (frames sent as PNG images)."""

    @staticmethod
    def version() -> str:
        """Prompt and parser version (enters the resume hash through the role identity)."""
        return f"chat_ocr:v1:{prompt_fingerprint(OCR_INSTRUCTION)}"

    def __init__(self, chat: ChatBackend) -> None:
        self.chat = chat
        self.identity = f"{self.version()}({chat.identity})"

    def split(self, frames: np.ndarray) -> OcrSplit:
        """Subtitles and background text of uint8 [T, H, W, 3] frames; ValueError quoting a bad reply."""
        reply = self.chat.chat([Message("user", (*frame_parts(frames), TextPart(OCR_INSTRUCTION)))])
        parsed = parse_ocr_reply(reply)
        if isinstance(parsed, str):
            raise ValueError(f"VLM OCR reply is not the JSON asked for: {parsed}: {_excerpt(reply)}")
        return parsed
