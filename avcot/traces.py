"""AV-CoT traces and <think>/<answer> completions: render, parse (never raising), merge input.

Parsers are lenient about what models actually emit (markdown bold/headings around headers,
full-width colons, content on the header line) and never raise: on unparseable input
``parse_avcot`` returns None and ``extract_transcription`` falls back to the last non-empty line.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from avcot.prompts import merger_prompt
from avcot.records import LETTERS

HEADERS = ("Multimodal Perceive", "Visual Cues", "Acoustic Analysis", "Disambiguation Reasoning", "Transcription")
_HEADER_RE = re.compile(
    r"^[ \t#>*\-]*(" + "|".join(HEADERS) + r")[ \t*]*[:：][ \t*]*(.*)$", re.IGNORECASE | re.MULTILINE
)
_TAGS = ("<think>", "</think>", "<answer>", "</answer>")
_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)
_THINK_RE = re.compile(r"<think>(.*?)</think>", re.DOTALL | re.IGNORECASE)
_LETTER_FIRST = re.compile(r"[\s(（\[【\"'“*]*(?:(?:answer|option|选项|答案)\s*(?:is)?\s*[:：]?\s*)?"
                           r"[(（\[【]?([A-D])(?![A-Za-z0-9])", re.IGNORECASE)
_QUOTES = "\"'“”‘’「」『』*`"


@dataclass(frozen=True)
class AVCoTTrace:
    """The four parts of an AV-CoT response."""

    visual_cues: str
    acoustic_pinyin: str
    reasoning: str
    transcription: str


def render_avcot(trace: AVCoTTrace) -> str:
    """Render a trace with each header on its own line and its content on the following lines."""
    return (
        f"Multimodal Perceive:\nVisual Cues:\n{trace.visual_cues.strip()}\n"
        f"Acoustic Analysis:\n{trace.acoustic_pinyin.strip()}\n"
        f"Disambiguation Reasoning:\n{trace.reasoning.strip()}\n"
        f"Transcription:\n{trace.transcription.strip()}"
    )


def _sections(text: str) -> dict[str, str]:
    """Header (lower-case) -> content; a repeated header keeps its last occurrence."""
    matches = list(_HEADER_RE.finditer(text))
    found: dict[str, str] = {}
    for k, m in enumerate(matches):
        end = matches[k + 1].start() if k + 1 < len(matches) else len(text)
        body = (m.group(2) + text[m.end():end]).strip()
        found[m.group(1).lower()] = body
    return found


def _clean_line(text: str) -> str:
    """Join lines, drop stray think/answer tags and wrapping quotes or markdown."""
    for tag in _TAGS:
        text = text.replace(tag, " ")
    joined = " ".join(line.strip() for line in text.splitlines() if line.strip())
    return joined.strip().strip(_QUOTES).strip()


def parse_avcot(text: str) -> AVCoTTrace | None:
    """Parse an AV-CoT response; None unless it has a non-empty Transcription section. Never raises."""
    try:
        if not isinstance(text, str):
            return None
        found = _sections(text)
        transcription = _clean_line(found.get("transcription", ""))
        if not transcription:
            return None
        return AVCoTTrace(
            visual_cues=found.get("visual cues", ""),
            acoustic_pinyin=found.get("acoustic analysis", ""),
            reasoning=found.get("disambiguation reasoning", ""),
            transcription=transcription,
        )
    except Exception:  # noqa: BLE001 - the contract is "never raises" on model output
        return None


def extract_transcription(text: str) -> str:
    """Transcription of a response: the AV-CoT section, else the last non-empty line ('' if none)."""
    try:
        if not isinstance(text, str):
            return ""
        parsed = parse_avcot(text)
        if parsed is not None:
            return parsed.transcription
        for line in reversed(text.splitlines()):
            cleaned = _clean_line(line)
            if cleaned:
                return cleaned
        return ""
    except Exception:  # noqa: BLE001
        return ""


def render_think_answer(think: str, answer: str) -> str:
    """'<think>\\n…\\n</think>\\n<answer>X</answer>'; refuses parts that would break the format."""
    for part, name in ((think, "think"), (answer, "answer")):
        if any(tag in part.lower() for tag in _TAGS):
            raise ValueError(f"render_think_answer: {name} text contains a think/answer tag: {part[:80]!r}")
    if not answer.strip():
        raise ValueError("render_think_answer: empty answer")
    return f"<think>\n{think.strip()}\n</think>\n<answer>{answer.strip()}</answer>"


def parse_answer(text: str) -> str | None:
    """Option letter A-D from the last <answer> tag ('B', ' (B) ', 'B. text', 'Answer: B'); else None."""
    try:
        if not isinstance(text, str):
            return None
        tags = _ANSWER_RE.findall(text)
        if not tags:
            return None
        content = tags[-1].strip()
        m = _LETTER_FIRST.match(content)
        if m and m.group(1).upper() in LETTERS:
            letter = m.group(1)
            # a lone lower-case letter is fine ("b"), but "a cat" is an English article, not option A
            if letter.isupper() or re.fullmatch(r"[\s(（\[]*[a-d][\s)）\].:：]*", content):
                return letter.upper()
        return None
    except Exception:  # noqa: BLE001
        return None


def split_think_answer(text: str) -> tuple[str, str | None]:
    """(reasoning, letter): the <think> content (else the whole text minus answer tags), parse_answer."""
    think = _THINK_RE.findall(text)
    reasoning = think[-1] if think else _ANSWER_RE.sub("", text)
    return reasoning.strip(), parse_answer(text)


def merge_traces(question: str, options: Sequence[str], visual_trace: str, audio_trace: str,
                 visual_answer: str | None = None, audio_answer: str | None = None) -> str:
    """Merger prompt from two teacher outputs; answers default to the letters parsed from them."""
    v_think, v_letter = split_think_answer(visual_trace)
    a_think, a_letter = split_think_answer(audio_trace)
    return merger_prompt(
        question, options,
        visual_trace=v_think, visual_answer=visual_answer or v_letter or "(none)",
        audio_trace=a_think, audio_answer=audio_answer or a_letter or "(none)",
    )
