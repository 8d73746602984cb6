"""AV-CoT traces and <think>/<answer> completions: render, parse (never raising), merge input.

Parsers are lenient about what models actually emit (markdown bold/headings around headers,
full-width colons, content on the header line) and never raise: on unparseable or non-str input
``parse_avcot`` returns None, ``parse_answer`` None and ``extract_transcription`` '' (for text, it
falls back to the last non-empty line). They run in linear time on any input: the last tag is
found by an anchored greedy match (one pass), lazy ``(.*?)`` block scans stop at the last closing
tag (so an unclosed tag never restarts a scan to the end), and no regex has nested or adjacent
overlapping quantifiers. Tags match in any ASCII case (``<ANSWER>``).
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from avcot.prompts import merger_prompt
from avcot.records import LETTERS

HEADERS = ("Multimodal Perceive", "Visual Cues", "Acoustic Analysis", "Disambiguation Reasoning", "Transcription")
# Possessive runs: a long run of spaces or '#' that is no header fails once, not once per char.
# The two lookaheads only restate the first characters the rest needs; they reject the other
# lines in one step instead of trying five case-insensitive names (8x faster on a flood of lines).
_HEADER_RE = re.compile(
    r"^(?=[ \t#>*\-mvadt])[ \t#>*\-]*+(?=[mvadt])(" + "|".join(HEADERS) + r")[ \t*]*+[:：][ \t*]*+(.*)$",
    re.IGNORECASE | re.MULTILINE,
)
_ANY_TAG = re.compile(r"</?(?:think|answer)>", re.IGNORECASE | re.ASCII)
_BLOCK = {name: re.compile(f"<{name}>(.*?)</{name}>", re.I | re.A | re.S) for name in ("think", "answer")}
_CLOSE = {name: re.compile(f"</{name}>", re.I | re.A) for name in ("think", "answer")}
# Used with .match (anchored at 0): the greedy .* backs off from the end once, so each finds the
# last tag in one linear pass (a search() would retry from every start when there is none).
_LAST_CLOSE = {name: re.compile(f".*(</{name}>)", re.I | re.A | re.S) for name in ("think", "answer")}
_LAST_OPEN_ANSWER = re.compile(r".*<answer>", re.I | re.A | re.S)
_LEAD = re.compile(r"[\s(（\[【\"'“*]*")
# Keywords before the letter, each with an optional 'is' and colon; they may follow each other
# ('答案：选项B', 'Answer is option C'). Possessive runs: one linear pass, no backtracking.
_KEYWORD_RUN = re.compile(r"(?:(?:(?ai:answer|option)|选项|答案)\s*+(?:(?ai:is)\s*+)?(?:[:：]\s*+)?)*+")
_LONE_LOWER = re.compile(r"[\s(（\[]*[a-d][\s)）\].:：]*")
_QUOTES = "\"'“”‘’「」『』*`"
_INK = re.compile(r"[^\s" + re.escape(_QUOTES) + "]")
"""A character that survives cleaning: neither whitespace nor a wrapping quote or markdown mark."""
_LAST_INK = re.compile(r".*" + _INK.pattern, re.S)
_LAST_BREAK = re.compile(r".*[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]", re.S)
"""Up to the last of the characters ``str.splitlines`` breaks at."""


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
    """Header (lower-case) -> content; a repeated header keeps its last occurrence.

    One pass over the header matches, keeping only (match, end) of each header's last occurrence,
    so thousands of repeated headers cost linear time and no list of matches.
    """
    last: dict[str, tuple[re.Match[str], int]] = {}
    prev: re.Match[str] | None = None
    for m in _HEADER_RE.finditer(text):
        if prev is not None:
            last[prev.group(1).lower()] = (prev, m.start())
        prev = m
    if prev is not None:
        last[prev.group(1).lower()] = (prev, len(text))
    return {name: (m.group(2) + text[m.end():end]).strip() for name, (m, end) in last.items()}


def _clean_line(text: str) -> str:
    """Join lines, drop stray think/answer tags and wrapping quotes or markdown.

    Whitespace and quote/markdown marks are stripped from both ends in any interleaving
    (``* "x" *`` -> ``x``), by locating the first and last other character in one pass each.
    """
    text = _ANY_TAG.sub(" ", text)
    first = _INK.search(text)
    if first is None:
        return ""
    core = text[first.start():_LAST_INK.match(text).end()]
    return " ".join(filter(None, map(str.strip, core.splitlines())))


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
        # the last line with a character that survives cleaning, found without splitting the text
        text = _ANY_TAG.sub(" ", text)
        last = _LAST_INK.match(text)
        if last is None:
            return ""
        line_break = _LAST_BREAK.match(text, 0, last.end())
        return _clean_line(text[line_break.end() if line_break else 0:last.end()])
    except Exception:  # noqa: BLE001
        return ""


def render_think_answer(think: str, answer: str) -> str:
    """'<think>\\n…\\n</think>\\n<answer>X</answer>'; refuses parts that would break the format."""
    for part, name in ((think, "think"), (answer, "answer")):
        if _ANY_TAG.search(part):
            raise ValueError(f"render_think_answer: {name} text contains a think/answer tag: {part[:80]!r}")
    if not answer.strip():
        raise ValueError("render_think_answer: empty answer")
    return f"<think>\n{think.strip()}\n</think>\n<answer>{answer.strip()}</answer>"


def _closed_part(text: str, name: str) -> int:
    """End of the last closing </name> tag (0 if none): every opening tag before it is closed.

    Lazy ``<name>(.*?)</name>`` scans are linear only up to there; an opening tag after it would
    send the lazy scan to the end of the text, once per such tag (quadratic).
    """
    last_close = _LAST_CLOSE[name].match(text)
    return last_close.end() if last_close is not None else 0


def _blocks(text: str, name: str) -> list[str]:
    """Contents of the closed <name>…</name> blocks, left to right.

    A block opens at the next opening tag and closes at the first closing tag after it (a nested
    opening tag stays inside the content).
    """
    return _BLOCK[name].findall(text, 0, _closed_part(text, name))


def _last_answer(text: str) -> str | None:
    """Content of the last closed <answer> block: the last opening tag that some closing tag
    follows, up to the first closing tag after it; None when no <answer> is ever closed."""
    last_close = _LAST_CLOSE["answer"].match(text)
    if last_close is None:
        return None
    last_open = _LAST_OPEN_ANSWER.match(text, 0, last_close.start(1))
    if last_open is None:
        return None
    close = _CLOSE["answer"].search(text, last_open.end())
    return text[last_open.end():close.start()] if close is not None else None


def _letter(content: str) -> str | None:
    """Option letter at the start of answer content: '(B)', 'B. text', 'Answer: B', '选项B', 'b'.

    The keywords are skipped by one possessive regex (``_KEYWORD_RUN``): a plain ``\\s*(?:is)?\\s*[:：]?\\s*``,
    whose adjacent optional runs can give up characters to each other, backtracks cubically on long whitespace.
    """
    i = _KEYWORD_RUN.match(content, _LEAD.match(content).end()).end()
    if content[i:i + 1] in ("(", "（", "[", "【"):
        i += 1
    letter, after = content[i:i + 1], content[i + 1:i + 2]
    if not letter or letter.upper() not in LETTERS or (after.isascii() and after.isalnum()):
        return None
    # a lone lower-case letter is fine ("b"), but "a cat" is an English article, not option A
    if letter.isupper() or _LONE_LOWER.fullmatch(content):
        return letter.upper()
    return None


def parse_answer(text: str) -> str | None:
    """Option letter A-D from the last closed <answer> tag ('B', ' (B) ', 'B. text', 'Answer: B'); else None.

    Never raises; None for non-str input.
    """
    try:
        if not isinstance(text, str):
            return None
        content = _last_answer(text)
        return _letter(content.strip()) if content is not None else None
    except Exception:  # noqa: BLE001
        return None


def _strip_blocks(text: str, name: str) -> str:
    """`text` without its closed <name>…</name> blocks (tags included)."""
    end = _closed_part(text, name)
    return _BLOCK[name].sub("", text[:end]) + text[end:]


def split_think_answer(text: str) -> tuple[str, str | None]:
    """(reasoning, letter) of a <think>…</think><answer>X</answer> completion. Never raises.

    The reasoning is every closed <think> block, in order, joined by a blank line: a reply with
    two think blocks (a model that thinks, then thinks again) keeps both, nothing is dropped.
    Without a closed think block it is the whole text minus its closed <answer> blocks. Stray
    think/answer tags (a nested or unclosed one) are removed from the reasoning, which is prose.
    The letter is ``parse_answer(text)``. Non-str input gives ('', None).
    """
    try:
        if not isinstance(text, str):
            return "", None
        blocks = _blocks(text, "think")
        raw = "\n\n".join(b.strip() for b in blocks if b.strip()) if blocks else _strip_blocks(text, "answer")
        return _ANY_TAG.sub(" ", raw).strip(), parse_answer(text)
    except Exception:  # noqa: BLE001
        return "", None


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
