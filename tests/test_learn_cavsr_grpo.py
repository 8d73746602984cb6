"""The CAVSR learning benchmark's GRPO stage helpers (bench/learn_cavsr_grpo.py) and its wiring."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
SPEC = importlib.util.spec_from_file_location("learn_cavsr", ROOT / "bench" / "learn_cavsr.py")
learn = sys.modules.get("learn_cavsr") or importlib.util.module_from_spec(SPEC)
if "learn_cavsr" not in sys.modules:
    sys.modules["learn_cavsr"] = learn  # dataclasses look their module up here
    SPEC.loader.exec_module(learn)

from bench import learn_cavsr_grpo as stage  # noqa: E402

AVCOT_GRPO = stage.grpo_run("avcot")  # the AV-CoT GRPO run's rows in results.json and summary.md


def _write_metrics(path: Path, rewards: list[float | None]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["step,reward/mean,loss"] + [f"{4 + 5 * i},{'' if r is None else r},0.1" for i, r in enumerate(rewards)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_reward_curve_averages_consecutive_chunks_and_skips_rows_without_reward(tmp_path):
    csv = _write_metrics(tmp_path / "m.csv", [1.0, 1.2, None, 1.4, 1.6, 1.8])
    curve = stage.reward_curve(csv, parts=3)
    assert curve == [{"first_step": 4, "last_step": 9, "reward": 1.1},
                     {"first_step": 19, "last_step": 24, "reward": 1.5},
                     {"first_step": 29, "last_step": 29, "reward": 1.8}]
    assert "steps 4-9: 1.100" in stage.curve_line(curve)


def test_reward_curve_names_a_file_without_rewards(tmp_path):
    with pytest.raises(ValueError, match="m.csv: no reward/mean"):
        stage.reward_curve(_write_metrics(tmp_path / "m.csv", [None]))


def test_latest_metrics_takes_the_newest_version_by_number(tmp_path):
    for v in (2, 10):
        _write_metrics(tmp_path / f"version_{v}" / "metrics.csv", [1.0])
    assert stage.latest_metrics(tmp_path).parent.name == "version_10"
    with pytest.raises(FileNotFoundError, match="logged nothing"):
        stage.latest_metrics(tmp_path / "none")


def _runs(word_sft: float, word_rl: float, n: int = 108, target: str = "avcot") -> dict:
    def one(word: float) -> dict:
        rates = {"n": n, "competitor": 0.3, "frame": 1.0}
        return {"outcomes": {"true": {"all": dict(rates, word=word)}, "random": {"all": dict(rates, word=0.5)}}}

    return {target: one(word_sft), stage.grpo_run(target): one(word_rl)}


@pytest.mark.parametrize("sft, rl, words", [
    (0.60, 0.75, "raises it beyond noise, by the 10 points asked for"),
    (0.60, 0.70, "does not raise it beyond noise"),  # ten points on 108 clips: z = 1.55, within noise
    (0.60, 0.68, "does not raise it beyond noise"),  # z = 1.2
    (0.60, 0.55, "does not raise it beyond noise"),
])
def test_grpo_verdict_says_whether_the_gain_is_beyond_noise_and_big_enough(sft, rl, words):
    text = stage.grpo_verdict(_runs(sft, rl))
    assert f"({rl - sft:+.2f}; GRPO {words})" in text
    assert "random video 0.50 -> 0.50" in text


def test_grpo_verdict_beyond_noise_but_short_of_ten_points():
    text = stage.grpo_verdict(_runs(0.60, 0.66, n=2000))  # z = 3.9 at n = 2000
    assert "raises it beyond noise)" in text and "10 points" not in text


def test_grpo_verdict_is_empty_without_a_grpo_run():
    assert stage.grpo_verdict({"avcot": {}}) == ""


def test_grpo_verdict_of_the_transcript_model_compares_it_with_its_own_sft_run():
    runs = _runs(0.50, 0.75, target="transcript") | {"avcot": _runs(0.9, 0.9)["avcot"]}
    assert stage.grpo_targets_of(runs) == ["transcript"]
    text = stage.grpo_verdict(runs, "transcript")
    assert text.startswith("GRPO vs SFT (transcript): true-video word accuracy 0.50 -> 0.75")
    assert stage.grpo_verdict(runs) == ""  # no AV-CoT GRPO run here


def test_grpo_args_start_from_the_avcot_model_on_the_rl_clips(tmp_path):
    from avcot.cli import main as cli_main

    settings = learn.BenchSettings(out=str(tmp_path), grpo_steps=9, grpo_prompts=2, grpo_lr=5e-4, seed=3)
    cfg = cli_main(stage.grpo_args(settings, tmp_path / "avcot" / "m")[1:], run=False).config
    assert cfg.trainer.max_steps == 9 and cfg.trainer.default_root_dir == str(tmp_path / "avcot_grpo")
    m, d = cfg.model.init_args, cfg.data.init_args
    assert m.base == str(tmp_path / "avcot" / "m") and m.lr == 5e-4 and m.group_size == 4
    assert list(m.rewards) == ["avcot.rewards.cer_reward", "avcot.rewards.avcot_format_reward"]
    assert (m.clip_eps, m.beta, m.temperature) == (0.2, 0.01, 1.0)
    assert d.train_manifest == str(tmp_path / "rl.jsonl") and d.batch_size == 2 and d.target == "avcot"


def test_grpo_on_the_transcript_model_uses_its_completions_and_the_cer_reward_alone(tmp_path):
    from avcot.cli import main as cli_main

    settings = learn.BenchSettings(out=str(tmp_path), grpo_steps=9, grpo_target="transcript")
    cfg = cli_main(stage.grpo_args(settings, tmp_path / "transcript" / "m")[1:], run=False).config
    assert cfg.trainer.default_root_dir == str(tmp_path / "transcript_grpo")
    m, d = cfg.model.init_args, cfg.data.init_args
    assert m.base == str(tmp_path / "transcript" / "m") and d.target == "transcript"
    assert list(m.rewards) == ["avcot.rewards.cer_reward"] and list(m.reward_weights) == [1.0]
    with pytest.raises(SystemExit, match="--target transcript or both"):
        learn.run(learn.BenchSettings(out=str(tmp_path), target="avcot", grpo_steps=5, grpo_target="transcript"))


def test_grpo_needs_the_avcot_target_and_its_rl_manifest(tmp_path):
    with pytest.raises(SystemExit, match="--target avcot or both"):
        learn.run(learn.BenchSettings(out=str(tmp_path), target="transcript", grpo_steps=5))
    for name in ("train.jsonl", "test.jsonl"):
        (tmp_path / name).write_text("", encoding="utf-8")
    with pytest.raises(SystemExit, match="rl.jsonl"):
        learn.reuse_data(learn.BenchSettings(out=str(tmp_path), stage="train", grpo_steps=5))


def test_summary_table_adds_the_reward_curve_and_the_grpo_verdict():
    def one(word: float) -> dict:
        rates = {"n": 108, "word": word, "competitor": 0.3, "frame": 1.0, "exact": 0.5}
        return {"train_seconds": 1, "cer": {"true": 0.05, "random": 0.08},
                "outcomes": {"true": {"all": rates}, "random": {"all": dict(rates, word=0.5)}}}

    runs = {"avcot": one(0.6), AVCOT_GRPO: dict(one(0.8), reward_curve=[
        {"first_step": 0, "last_step": 9, "reward": 1.7}])}
    summary = {"date": "d", "command": "c", "machine": "m", "clips_train": 4, "clips_test": 2,
               "total_seconds": 2, "runs": runs}
    lines = learn.summary_table(summary).splitlines()
    assert any(line.startswith(f"| {AVCOT_GRPO} | true | 0.050 | 0.80 |") for line in lines)
    assert any(line.startswith("GRPO reward") and "steps 0-9: 1.700" in line for line in lines)
    assert any(line.startswith("GRPO vs SFT (AV-CoT): true-video word accuracy 0.60 -> 0.80") for line in lines)
    runs["transcript"], runs["transcript+grpo"] = one(0.5), dict(one(0.7), reward_curve=[
        {"first_step": 0, "last_step": 9, "reward": 0.9}])
    lines = learn.summary_table(summary).splitlines()
    assert any(line.startswith("GRPO reward (CER, max 1)") and "0.900" in line for line in lines)
    assert any(line.startswith("GRPO vs SFT (transcript): true-video word accuracy 0.50 -> 0.70") for line in lines)


def test_stage_grpo_reruns_grpo_on_the_earlier_avcot_model_and_keeps_the_earlier_entry(tmp_path, monkeypatch):
    import json

    settings = learn.BenchSettings(out=str(tmp_path), stage="grpo", grpo_steps=3, grpo_lr=1e-4)
    with pytest.raises(SystemExit, match="results.json of an earlier run"):
        learn.run(settings)

    def entry(word: float) -> dict:
        rates = {"n": 108, "word": word, "competitor": 0.3, "frame": 1.0, "exact": 0.5}
        return {"model": str(tmp_path / "avcot" / "m"), "train_seconds": 1, "cer": {"true": 0.05, "random": 0.08},
                "outcomes": {"true": {"all": rates}, "random": {"all": dict(rates, word=0.5)}},
                "reward_curve": [{"first_step": 0, "last_step": 2, "reward": 1.5}]}

    earlier = {"date": "d", "command": "first", "machine": "m", "clips_train": 4, "clips_test": 2,
               "total_seconds": 2, "runs": {"avcot": entry(0.6), AVCOT_GRPO: entry(0.5)}}
    (tmp_path / "results.json").write_text(json.dumps(earlier), encoding="utf-8")
    (tmp_path / "test.jsonl").write_text('{"id": "t"}\n', encoding="utf-8")
    with pytest.raises(SystemExit, match="rl.jsonl"):
        learn.run(settings)
    (tmp_path / "rl.jsonl").write_text('{"id": "r"}\n', encoding="utf-8")
    seen = []
    monkeypatch.setattr(learn, "grpo_stage", lambda s, model, rows: seen.append((s.grpo_lr, model, rows)) or entry(0.7))
    summary = learn.run(settings)
    assert seen == [(1e-4, tmp_path / "avcot" / "m", [{"id": "t"}])]
    runs = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))["runs"]
    assert runs[AVCOT_GRPO]["outcomes"]["true"]["all"]["word"] == 0.7
    assert runs[f"{AVCOT_GRPO} (earlier)"]["outcomes"]["true"]["all"]["word"] == 0.5
    assert summary["command"].startswith("first; then")
    table = (tmp_path / "summary.md").read_text(encoding="utf-8")
    assert "true-video word accuracy 0.60 -> 0.70" in table and f"| {AVCOT_GRPO} (earlier) | true |" in table
