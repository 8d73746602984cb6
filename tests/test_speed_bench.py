"""The benches run end to end on the tiny model (CPU smoke: records written, no timing asserted)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_bench_sft_tiny_writes_both_paths_and_ratios(tmp_path):
    out = tmp_path / "sft.jsonl"
    assert _load("bench_sft").main(["--size", "tiny", "--bsz", "1", "--iters", "1", "--out", str(out)]) == 0
    recs = _records(out)
    check = next(r for r in recs if r["stage"] == "check")
    assert check["rel_diff"] < 1e-5
    steps = [r for r in recs if r["stage"] == "sft"]
    assert {(r["path"], r["mode"]) for r in steps} == {("ours", "plain"), ("stock", "plain"), ("ours", "ckpt"),
                                                      ("stock", "ckpt")}
    assert all("error" not in r and r["samples_per_s"] > 0 for r in steps)
    assert len([r for r in recs if r["stage"] == "ratio"]) == 2
    cache = next(r for r in recs if r["stage"] == "cache")
    assert cache["misses"] == 2 and cache["hits"] > 0  # one audio + one video computed once, then read back


def test_bench_rollout_tiny_writes_both_paths_and_ratios(tmp_path):
    out = tmp_path / "rollout.jsonl"
    args = ["--size", "tiny", "--new", "4", "--iters", "1", "--check-tokens", "4", "--out", str(out)]
    assert _load("bench_rollout").main(args) == 0
    recs = _records(out)
    check = next(r for r in recs if r["stage"] == "check")
    assert check["exact"] is True and check["leading_agreement"] == [4]
    gens = [r for r in recs if r["stage"] == "generate"]
    assert {(r["path"], r["prompts"], r["group"]) for r in gens} == {
        (p, b, g) for p in ("ours", "stock") for b, g in ((1, 1), (1, 4), (4, 1))}
    assert all("error" not in r and r["gen_tokens_per_s"] > 0 for r in gens)
    assert len([r for r in recs if r["stage"] == "ratio"]) == 3
