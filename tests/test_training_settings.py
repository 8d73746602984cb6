"""Evaluation reads the media settings a checkpoint was trained with (`training_settings.json` inside or beside
`--ckpt`); a flag given on the command line wins; the report says where each setting came from."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from avcot.eval.__main__ import CAVSR_DEFAULTS, MCQ_DEFAULTS, build_parser, media_settings
from avcot.training_settings import (
    FILENAME,
    TrainingSettings,
    merge_media,
    read_training_settings,
    settings_from_hparams,
    write_training_settings,
)

SYNTH = Path(__file__).parent / "data" / "synth"
TRAINED = TrainingSettings(num_frames=2, frame_size=56, max_seconds=2.0, use_audio_in_video=True,
                           target="transcript")


def test_merge_takes_the_flag_then_the_recorded_value_then_the_default():
    values, sources = merge_media({"a": 5, "b": None, "c": None}, {"a": 1, "b": 2}, {"a": 0, "b": 0, "c": 9})
    assert values == {"a": 5, "b": 2, "c": 9}
    assert sources == {"a": "flag", "b": FILENAME, "c": "default"}
    values, _ = merge_media({"flag": False}, {"flag": True}, {"flag": True})
    assert values == {"flag": False}  # an explicit off (--no-...) is a given value, not a missing one


def test_settings_are_found_inside_or_beside_the_checkpoint_dir(tmp_path):
    ckpt_dir = tmp_path / "checkpoints"
    (ckpt_dir / "adapter-last").mkdir(parents=True)
    assert read_training_settings(ckpt_dir / "adapter-last") is None
    write_training_settings(ckpt_dir, TRAINED)  # beside adapter-last, as a run writes it
    assert read_training_settings(ckpt_dir / "adapter-last") == TRAINED
    inside = TrainingSettings(num_frames=8, frame_size=336)
    write_training_settings(ckpt_dir / "adapter-last", inside)  # a model dir carries its own
    assert read_training_settings(ckpt_dir / "adapter-last") == inside


@pytest.mark.parametrize("text", ["{not json", '{"num_frames": 2, "fps": 3}', "[2]"])
def test_a_malformed_settings_file_is_an_error_naming_it(tmp_path, text):
    (tmp_path / FILENAME).write_text(text)
    with pytest.raises(ValueError, match=FILENAME):
        read_training_settings(tmp_path)


def test_settings_from_a_datamodules_hparams_keep_only_the_media_fields():
    hp = {"num_frames": 8, "frame_size": 336, "max_seconds": 30, "use_audio_in_video": True, "target": "avcot",
          "batch_size": 4}
    assert settings_from_hparams(hp) == TrainingSettings(8, 336, 30, True, "avcot")
    assert settings_from_hparams({"num_frames": 8}).known() == {"num_frames": 8}


def _args(command: str, ckpt: Path | None, *flags: str):
    return build_parser().parse_args([command, "--data", "m.jsonl", "--out", "o",
                                      *(["--ckpt", str(ckpt)] if ckpt else []), *flags])


def test_mcq_eval_takes_the_trained_media_but_not_the_cavsr_prompt(tmp_path):
    write_training_settings(tmp_path, TrainingSettings(num_frames=6, frame_size=224, target="trace"))
    values, where = media_settings(_args("mcq", tmp_path, "--max-seconds", "5"), MCQ_DEFAULTS)
    assert values == {"frame_size": 224, "max_seconds": 5.0, "use_audio_in_video": False, "num_frames": 6}
    assert "num_frames=6 (training_settings.json)" in where and "max_seconds=5.0 (flag)" in where


def test_without_a_checkpoint_the_defaults_hold(tmp_path):
    values, where = media_settings(_args("cavsr", None), CAVSR_DEFAULTS)
    assert values == CAVSR_DEFAULTS and "training_settings.json" not in where
    values, where = media_settings(_args("cavsr", tmp_path), CAVSR_DEFAULTS)
    assert values == CAVSR_DEFAULTS and f"no training_settings.json in or beside {tmp_path}" in where


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    """Two committed synthetic clips, media paths made absolute."""
    rows = [json.loads(x) for x in (SYNTH / "manifest.jsonl").read_text(encoding="utf-8").splitlines()[:2]]
    for r in rows:
        r["video"], r["audio"] = str(SYNTH / r["video"]), str(SYNTH / r["audio"])
    path = tmp_path_factory.mktemp("eval") / "manifest.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    return path


def test_cavsr_eval_of_a_checkpoint_uses_its_training_settings_unless_a_flag_is_given(manifest, tmp_path):
    from avcot.eval.__main__ import main
    from avcot.model import LoraSettings, apply_lora, load_thinker

    ckdir = tmp_path / "checkpoints"
    apply_lora(load_thinker("tiny"), LoraSettings()).save_pretrained(str(ckdir / "adapter-last"))
    write_training_settings(ckdir, TRAINED)

    def run(out: str, *flags: str) -> dict:
        assert main(["cavsr", "--ckpt", str(ckdir / "adapter-last"), "--data", str(manifest), "--out",
                     str(tmp_path / out), "--ablations", "", "--max-new-tokens", "2", "--no-progress", *flags]) == 0
        return json.loads((tmp_path / out / "metrics.json").read_text(encoding="utf-8"))["run"]

    trained = run("as-trained")
    assert (trained["num_frames"], trained["frame_size"], trained["max_seconds"]) == (2, 56, 2.0)
    assert (trained["prompt"], trained["use_audio_in_video"]) == ("transcript", True)
    assert "num_frames=2 (training_settings.json)" in trained["settings_from"]
    flagged = run("flags", "--num-frames", "4", "--prompt", "avcot", "--no-use-audio-in-video")
    assert (flagged["num_frames"], flagged["frame_size"], flagged["prompt"]) == (4, 56, "avcot")
    assert flagged["use_audio_in_video"] is False
    assert "num_frames=4 (flag)" in flagged["settings_from"] and "frame_size=56 (training_settings.json)" in \
        flagged["settings_from"]
