"""The tiny AVRT SFT recipe and the tiny eval recipes: first line is the command, they parse, a short run works;
`python -m avcot.eval --config` (YAML of the command's flags, command-line flags win)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from avcot.cli import main as cli_main
from avcot.eval.__main__ import apply_config, build_parser
from avcot.eval.__main__ import main as eval_main

REPO = Path(__file__).resolve().parent.parent
SYNTH = REPO / "tests" / "data" / "synth"


def _parse(argv: list[str]):
    parser = build_parser()
    apply_config(parser, argv)
    return parser.parse_args(argv)


def _yaml(tmp_path: Path, values: dict) -> str:
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(values), encoding="utf-8")
    return str(path)


def test_eval_config_gives_defaults_and_flags_win(tmp_path):
    cfg = _yaml(tmp_path, {"data": "m.jsonl", "out": "o", "num-frames": 2, "max_new_tokens": 7,
                           "ablations": ["black", "audio_only"], "t2s": True, "use-audio-in-video": True})
    args = _parse(["cavsr", "--config", cfg])
    assert (args.data, args.out, args.num_frames, args.max_new_tokens) == ("m.jsonl", "o", 2, 7)
    assert args.ablations == "black,audio_only" and args.t2s is True and args.use_audio_in_video is True
    args = _parse(["cavsr", "--config", cfg, "--num-frames", "6", "--out", "p", "--no-use-audio-in-video"])
    assert (args.num_frames, args.out, args.use_audio_in_video, args.data) == (6, "p", False, "m.jsonl")
    assert _parse(["cavsr", "--data", "d", "--out", "o"]).num_frames is None  # no config: as before


@pytest.mark.parametrize("values,match", [
    ({"data": "m", "out": "o", "modalitiez": "a"}, "'modalitiez' is not a flag of 'avcot.eval mcq'"),
    ({"data": "m", "out": "o", "dtype": "float8"}, "dtype: 'float8' is not one of"),
    ({"data": "m", "out": "o", "num_frames": "four"}, "num_frames: invalid literal"),
    (["data", "m"], "expected a mapping"),
])
def test_eval_config_errors_name_the_file_and_key(tmp_path, values, match):
    cfg = _yaml(tmp_path, values)
    with pytest.raises(SystemExit, match=match) as err:
        _parse(["mcq", "--config", cfg])
    assert cfg in str(err.value)


def test_eval_without_data_still_refused_without_a_config(capsys):
    with pytest.raises(SystemExit):
        _parse(["mcq", "--out", "o"])
    assert "--data" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["tiny_eval_cavsr", "tiny_eval_mcq"])
def test_tiny_eval_recipes_start_with_their_command_and_parse(name, monkeypatch):
    monkeypatch.chdir(REPO)
    command = name.removeprefix("tiny_eval_")
    first = (REPO / "configs" / f"{name}.yaml").read_text(encoding="utf-8").splitlines()[0]
    assert first == f"# python -m avcot.eval {command} --config configs/{name}.yaml"
    args = _parse([command, "--config", f"configs/{name}.yaml"])
    assert Path(args.data).is_file() and args.base == "tiny" and args.ckpt.startswith("runs/")


def _short_manifest(tmp_path: Path, source: str, n: int) -> Path:
    rows = [json.loads(x) for x in (SYNTH / source).read_text(encoding="utf-8").splitlines()[:n]]
    for r in rows:
        for k in ("video", "audio", "image"):
            if r.get(k):
                r[k] = str(SYNTH / r[k])
    path = tmp_path / source
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.mark.parametrize("name,source,extra", [
    ("tiny_eval_cavsr", "sft_avcot.jsonl", ["--ablations", "black"]),
    ("tiny_eval_mcq", "mcq.jsonl", ["--modalities", "av"]),
])
def test_tiny_eval_recipe_short_run(name, source, extra, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    command = name.removeprefix("tiny_eval_")
    out = tmp_path / "eval"
    data = _short_manifest(tmp_path, source, 2)
    assert eval_main([command, "--config", f"configs/{name}.yaml", "--ckpt", "none", "--data", str(data),
                      "--out", str(out), "--max-new-tokens", "4", "--no-progress", *extra]) == 0
    rows = [json.loads(x) for x in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 2 * (2 if command == "cavsr" else 1)  # cavsr: true video + black
    assert (out / "report.md").is_file() and (out / "metrics.json").is_file()


def test_tiny_avrt_sft_recipe_parses_and_a_short_run_writes_the_adapter(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    text = (REPO / "configs" / "tiny_avrt_sft.yaml").read_text(encoding="utf-8")
    assert text.splitlines()[0] == "# python -m avcot.cli fit --config configs/tiny_avrt_sft.yaml"
    with pytest.raises(SystemExit) as done:
        cli_main(["fit", "--config", "configs/tiny_avrt_sft.yaml", "--print_config"])
    assert done.value.code == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["data"]["class_path"] == "datamodules.mcq.McqDataModule"
    assert cfg["data"]["init_args"]["target"] == "trace" and cfg["model"]["init_args"]["base"] == "tiny"
    train = [json.loads(x) for x in (REPO / cfg["data"]["init_args"]["train_manifest"]).read_text().splitlines()]
    assert train and all("<answer>" in r["trace"] for r in train)
    # the same recipe, everything it writes moved under tmp_path, two steps
    cli = cli_main(["fit", "--config", "configs/tiny_avrt_sft.yaml", "--trainer.default_root_dir", str(tmp_path),
                    "--trainer.max_steps", "2", "--trainer.limit_val_batches", "1"])
    assert cli.trainer.global_step == 2
    assert (tmp_path / "checkpoints" / "adapter-last" / "adapter_model.safetensors").is_file()
    assert (tmp_path / "checkpoints" / "training_settings.json").is_file()
