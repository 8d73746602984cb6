"""The benches run end to end on the tiny model (CPU smoke: records written, no timing asserted)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

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


def test_real_size_shapes_match_the_reference_sample():
    """The 7b/3b benches build the reference's model and sample (checked on the meta device: no memory)."""
    import torch

    from bench import benchkit

    meta = torch.device("meta")
    big = benchkit.build_thinker("7b", torch.bfloat16, meta)
    assert abs(sum(p.numel() for p in big.parameters()) / 1e9 - 8.93) < 0.01  # the 7B thinker has 8.93 B parameters
    batch = benchkit.make_batch(big, "7b", 2)
    assert batch["input_ids"].shape == (2, 1622)  # 24 + 250 audio + 1024 video + 4 markers + 320 text
    assert int((batch["labels"][0] != -100).sum()) == 320
    assert int((batch["input_ids"][0] == big.config.audio_token_id).sum()) == 250
    assert int((batch["input_ids"][0] == big.config.video_token_id).sum()) == 1024
    small = benchkit.build_thinker("3b", torch.bfloat16, meta)
    assert len(small.model.language_model.layers) == 36 and small.config.text_config.hidden_size == 2048
    assert not any(p.requires_grad for p in small.model.audio_tower.parameters())  # towers frozen


def test_bench_sft_tiny_qlora_nf4_runs_ours_only(tmp_path):
    """The QLoRA command of bench/README.md (nf4 LM linears, all levers, LM checkpointing) on the tiny model."""
    pytest.importorskip("bitsandbytes")
    out = tmp_path / "nf4.jsonl"
    args = ["--size", "tiny", "--quant", "nf4", "--levers", "cache,label,ckpt", "--modes", "ckpt", "--bsz", "1",
            "--no-stock", "--iters", "1", "--out", str(out)]
    assert _load("bench_sft").main(args) == 0
    recs = _records(out)
    assert next(r for r in recs if r["stage"] == "nf4")["linears"] > 0
    steps = [r for r in recs if r["stage"] == "sft"]
    assert [(r["path"], r["quant"], r["lm_ckpt"]) for r in steps] == [("ours", "nf4", True)]
    assert "error" not in steps[0] and steps[0]["samples_per_s"] > 0


def test_gpu_suite_stages_run_on_cpu_with_the_tiny_model(tmp_path):
    """bench/gpu_suite.sh (the one-call-per-stage GPU recipe) passes arguments the benches accept."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, PYTHON=sys.executable, OUT=str(tmp_path / "out"), WHEELS=str(tmp_path / "no-wheels"),
               NEW="2")
    suite = ["bash", str(ROOT / "bench" / "gpu_suite.sh")]
    done = subprocess.run(suite + ["rollout", "tiny", "--configs", "1xG,4x1"], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    recs = _records(tmp_path / "out" / "bench_rollout_tiny.jsonl")
    assert {(r["prompts"], r["group"]) for r in recs if r["stage"] == "ratio"} == {(1, 4), (4, 1)}  # flags pass
    assert "no-wheels/*.whl: using installed packages" in done.stdout
    missing = subprocess.run(suite + ["baseline", "tiny"], env=env, capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "run 'bench/gpu_suite.sh prepare'" in missing.stderr
    bad = subprocess.run(suite + ["bogus"], env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "unknown stage 'bogus'" in bad.stderr


@pytest.mark.slow
def test_real_widths_run_end_to_end_with_one_layer(tmp_path):
    """`--layers 1`: the 3b widths (vocab 152k, LM 2048, vision 1280, 1622-token sample) through both benches on
    CPU; our loss equals the stock loss and our greedy tokens equal HF generate's. (~2 min, ~4 GB RAM; the
    7b widths were checked the same way by hand: bench/RESULTS.md.)"""
    sft_out, roll_out = tmp_path / "sft.jsonl", tmp_path / "roll.jsonl"
    assert _load("bench_sft").main(["--size", "3b", "--layers", "1", "--bsz", "1", "--iters", "1", "--modes",
                                    "plain", "--out", str(sft_out)]) == 0
    check = next(r for r in _records(sft_out) if r["stage"] == "check")
    assert check["rel_diff"] < 1e-5
    assert [r["seq"] for r in _records(sft_out) if r["stage"] == "sft"] == [1622, 1622]
    assert _load("bench_rollout").main(["--size", "3b", "--layers", "1", "--new", "3", "--iters", "1",
                                        "--check-tokens", "3", "--out", str(roll_out)]) == 0
    assert next(r for r in _records(roll_out) if r["stage"] == "check")["exact"] is True


def test_rollout_configs_parse_and_refuse_bad_text():
    parse = _load("bench_rollout").parse_configs
    assert parse("1x1,1xG,4x1", 4) == [(1, 1), (1, 4), (4, 1)] and parse(" 2x3 ", 4) == [(2, 3)]
    for bad in ("2y", "ax1", ","):
        with pytest.raises(SystemExit, match="--configs"):
            parse(bad, 4)


def test_bench_ocr_cache_runs_the_engine_once_per_picture_and_reports_both(monkeypatch, capsys):
    from avcot.pipeline import local

    mod = _load("bench_ocr_cache")
    calls = []
    real_init = local.RapidOcr.__init__

    def counting_init(self, *a, **kw):
        real_init(self, *a, **kw)
        engine = self._engine
        self._engine = lambda frame: (calls.append(id(self)) or engine(frame))

    monkeypatch.setattr(local.RapidOcr, "__init__", counting_init)
    assert mod.main(["--clips", "2", "--reads", "3"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["clips"] == 2 and report["reads_per_clip"] == 3 and report["boxes_identical"] is True
    assert report["speedup"] == pytest.approx(report["stock_s"] / report["cached_s"], rel=0.02)
    per_instance = sorted(calls.count(i) for i in set(calls))
    assert per_instance == [1 + 2, 1 + 2 * 3]  # warm-up + every read (stock) vs warm-up + one per picture (cached)
