"""Throughput of the pure pipeline core on synthetic rows (a script, not a test).

    python bench/bench_core.py --rows 100000

Times normalize+CER, pinyin, homophone lookup (lexicon build reported apart), AV-CoT trace
parsing and answer parsing, and prints a rows/s table.
"""
from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from avcot.phonetics import _lexicon, homophones, pinyin
from avcot.text import cer
from avcot.traces import AVCoTTrace, extract_transcription, parse_answer, render_avcot, render_think_answer

CHARS = "林冲对差拨说我在实验室工作今天天气很好他她们是事诗的了北京上海银行时间知道学校"
SWAPS = {"差": "柴", "拨": "伯", "实": "试", "他": "她", "是": "事", "知": "资"}
WORDS = ["差拨", "实验", "食言", "北京", "时间", "银行", "知道", "学校", "是", "他"]


@dataclass(frozen=True)
class Row:
    """One synthetic row: reference, a second ASR output with homophone swaps, rendered outputs."""

    ref: str
    hyp: str
    word: str
    trace: str
    mcq: str


def synth_rows(n: int, seed: int = 0) -> list[Row]:
    """n rows of 8-24 characters with ~10% homophone substitutions and punctuation."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        ref = "".join(rng.choice(CHARS) for _ in range(rng.randint(8, 24)))
        hyp = "".join(SWAPS.get(c, c) if rng.random() < 0.1 else c for c in ref) + rng.choice(["", "。", "！"])
        trace = render_avcot(AVCoTTrace("画面里有招牌", "pinyin", "选择更合理的词", ref))
        mcq = render_think_answer("看到并听到", rng.choice("ABCD"))
        rows.append(Row(ref, hyp, rng.choice(WORDS), trace, mcq))
    return rows


def timed(fn: Callable[[Row], object], rows: list[Row]) -> float:
    """Seconds to apply fn to every row."""
    start = time.perf_counter()
    for row in rows:
        fn(row)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    """Run every stage and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="synthetic rows per stage")
    parser.add_argument("--seed", type=int, default=0, help="random seed for the synthetic rows")
    args = parser.parse_args(argv)
    rows = synth_rows(args.rows, args.seed)

    start = time.perf_counter()
    _lexicon(False)
    build_s = time.perf_counter() - start
    stages: list[tuple[str, Callable[[Row], object]]] = [
        ("normalize+cer", lambda r: cer(r.ref, r.hyp)),
        ("pinyin", lambda r: pinyin(r.ref)),
        ("homophones", lambda r: homophones(r.word)),
        ("parse_avcot", lambda r: extract_transcription(r.trace)),
        ("parse_answer", lambda r: parse_answer(r.mcq)),
    ]
    print(f"homophone lexicon build (once): {build_s:.2f} s")
    print(f"{'stage':<16}{'rows':>10}{'seconds':>10}{'rows/s':>12}")
    for name, fn in stages:
        seconds = timed(fn, rows)
        print(f"{name:<16}{len(rows):>10}{seconds:>10.3f}{len(rows) / max(seconds, 1e-9):>12,.0f}")


if __name__ == "__main__":
    main()
