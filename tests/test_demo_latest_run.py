"""The demo serves the newest run's model with the media settings it was trained with, and ships its examples."""
from __future__ import annotations

import json
import os
from pathlib import Path

import avcot
from avcot.data.clips import CAVSR_MEDIA, MCQ_MEDIA
from avcot.processor import TINY
from avcot.training_settings import TrainingSettings, write_training_settings
from demo import app as demo_app
from demo.inference import DemoSettings, load_clip
from demo.latest_run import choose_model, newest_run_model
from demo.runtime import ModelLoadError
from demo.views import load_examples

REPO = Path(__file__).resolve().parent.parent


def _run_dir(runs: Path, name: str, kind: str, mtime: float, settings: TrainingSettings | None = None) -> Path:
    """A fake run's checkpoints/<kind> directory with the given modification time."""
    ckpt = runs / name / "version_0" / "checkpoints"
    path = ckpt / kind
    path.mkdir(parents=True)
    (path / ("config.json" if kind == "model-last" else "adapter_config.json")).write_text("{}")
    if settings is not None:
        write_training_settings(ckpt, settings)  # beside the model dirs, as TrainingSettingsSaver writes it
    os.utime(path, (mtime, mtime))
    return path


def test_the_newest_run_model_by_mtime_is_served(tmp_path):
    runs = tmp_path / "runs"
    full = _run_dir(runs, "tiny", "model-last", 1_000_000)
    adapter = _run_dir(runs, "lora", "adapter-last", 2_000_000)
    choice = choose_model(None, None, runs)
    assert (choice.base, choice.adapter) == (TINY, str(adapter)) and str(adapter) in choice.message
    os.utime(full, (3_000_000, 3_000_000))  # the full run trained again since
    choice = choose_model(None, None, runs)
    assert (choice.base, choice.adapter) == (str(full), None) and str(full) in choice.message
    assert newest_run_model(runs).path == full


def test_no_run_falls_back_to_tiny_and_says_so(tmp_path):
    (tmp_path / "runs" / "x" / "checkpoints").mkdir(parents=True)  # a run that saved nothing yet
    for runs in (tmp_path / "runs", tmp_path / "missing"):
        choice = choose_model(None, None, runs)
        assert (choice.base, choice.adapter, choice.run) == (TINY, None, None)
        assert "tiny" in choice.message and "configs/tiny.yaml" in choice.message


def test_model_flags_win_over_the_runs_folder(tmp_path):
    runs = tmp_path / "runs"
    _run_dir(runs, "tiny", "model-last", 1_000_000)
    assert (choose_model("tiny", None, runs).base, choose_model("tiny", None, runs).run) == (TINY, None)
    choice = choose_model(None, "some/adapter", runs)
    assert (choice.base, choice.adapter) == (TINY, "some/adapter")


def _main_until_load(monkeypatch, capsys, argv: list[str]) -> tuple[list, str]:
    """Run demo.app.main up to the model load (stubbed to fail), returning the load calls and stderr."""
    calls = []

    def fake_load(base, adapter, **kw):
        calls.append((base, adapter))
        raise ModelLoadError("stub: not loading in this test")

    monkeypatch.setattr(demo_app, "load_model", fake_load)
    assert demo_app.main(argv) == 2
    return calls, capsys.readouterr().err


def test_main_says_which_model_it_serves(tmp_path, monkeypatch, capsys):
    runs = tmp_path / "runs"
    calls, err = _main_until_load(monkeypatch, capsys, ["--runs", str(runs)])
    assert calls == [(TINY, None)] and "no trained model" in err
    full = _run_dir(runs, "tiny", "model-last", 1_000_000)
    calls, err = _main_until_load(monkeypatch, capsys, ["--runs", str(runs)])
    assert calls == [(str(full), None)] and f"newest run's model {full}" in err


def test_media_settings_come_from_the_run_and_flags_win(tmp_path):
    runs = tmp_path / "runs"
    _run_dir(runs, "tiny", "model-last", 1_000_000,
             TrainingSettings(num_frames=6, frame_size=168, max_seconds=7.0, target="avcot"))
    choice = choose_model(None, None, runs)
    media = demo_app.demo_settings(demo_app.parse_args(["--runs", str(runs)]), choice)
    assert (media.cavsr.num_frames, media.cavsr.frame_size, media.cavsr.max_seconds) == (6, 168, 7.0)
    assert (media.mcq.num_frames, media.mcq.frame_size, media.mcq.max_seconds) == (6, 168, 7.0)
    args = demo_app.parse_args(["--runs", str(runs), "--num-frames", "2", "--max-seconds", "3"])
    media = demo_app.demo_settings(args, choice)
    assert (media.cavsr.num_frames, media.cavsr.frame_size, media.cavsr.max_seconds) == (2, 168, 3.0)
    tiny = demo_app.demo_settings(demo_app.parse_args([]), choose_model("tiny", None, runs))
    assert (tiny.cavsr, tiny.mcq) == (CAVSR_MEDIA, MCQ_MEDIA)  # no run settings: each task's default


def test_a_malformed_training_settings_file_stops_with_its_name(tmp_path, monkeypatch, capsys):
    runs = tmp_path / "runs"
    full = _run_dir(runs, "tiny", "model-last", 1_000_000)
    (full / "training_settings.json").write_text("{not json")
    monkeypatch.setattr(demo_app, "load_model", lambda base, adapter, **kw: None)
    assert demo_app.main(["--runs", str(runs)]) == 2
    assert str(full / "training_settings.json") in capsys.readouterr().err


def test_default_examples_ship_inside_the_package_and_every_one_loads():
    package = Path(avcot.__file__).resolve().parent
    examples_dir = demo_app.DEFAULT_EXAMPLES
    assert examples_dir.is_relative_to(package) and examples_dir.parent.name == "assets"  # package-data: assets/**
    assert demo_app.parse_args([]).examples == examples_dir
    rows = [json.loads(line) for line in (examples_dir / "manifest.jsonl").read_text("utf-8").splitlines()]
    examples = load_examples(examples_dir)
    assert len(examples) == len(rows) >= 2
    assert any(e.question and len(e.options) == 4 for e in examples)
    for example in examples:
        assert example.video.resolve().is_relative_to(package)
        clip = load_clip(example.video, DemoSettings().cavsr, need_audio=True)
        assert clip.audio is not None and len(clip.audio) > 0, example.video


def test_package_data_covers_the_examples():
    import tomllib

    pattern = "assets/**/*"
    globs = tomllib.loads((REPO / "pyproject.toml").read_text("utf-8"))["tool"]["setuptools"]["package-data"]["avcot"]
    assert pattern in globs
    package = Path(avcot.__file__).resolve().parent
    shipped = set(package.glob(pattern))
    assert all(p in shipped for p in demo_app.DEFAULT_EXAMPLES.rglob("*") if p.is_file())
