"""Where a CLI run writes (everything under `trainer.default_root_dir`), which logger each config uses, and how
the commands talk to the user: no noise on stderr, defaults in `--help`, one line for a manifest without traces."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import parsed_config, traced_rows, write_jsonl

from avcot.cli import main, run

REPO = Path(__file__).resolve().parent.parent
GPU_CONFIGS = ("vasr_7b_lora", "fsdp_7b", "qlora_7b_single_gpu", "avrt_3b_sft", "avrt_3b_sft_lora", "avrt_3b_grpo",
               "cavsr_grpo", "fsdp_grpo_7b")
TINY_CONFIGS = ("tiny", "tiny_grpo")
TRAINING_CONFIGS = tuple(sorted(p.stem for p in (REPO / "configs").glob("*.yaml")
                                if p.read_text(encoding="utf-8").startswith("# python -m avcot.cli fit")))
NOISE = ("LightningCLI's args parameter", "💡 Tip", "gemm_4bit_forward", "module(s) in eval mode",
         "is_gradient_checkpointing")


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "avcot.cli", *args]


@pytest.mark.slow  # two tiny CLI runs in subprocesses: ~40-120 s on 2 shared cores
def test_fit_and_predict_write_everything_under_default_root_dir(tmp_path):
    """Only --trainer.default_root_dir is given: logs, rejects, checkpoints, adapters, training settings and
    predictions all land under it (relative to the working directory), nothing under runs/; stderr has no noise."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    manifest = write_jsonl(tmp_path / "m.jsonl", [*traced_rows(4), "{not json"])
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    common = ["--config", str(REPO / "configs" / "tiny.yaml"), "--trainer.default_root_dir", "elsewhere",
              "--trainer.enable_progress_bar", "false", "--data.init_args.train_manifest", str(manifest),
              "--data.init_args.predict_manifest", str(manifest)]
    fit = subprocess.run(_cli("fit", *common, "--trainer.max_steps", "2", "--trainer.limit_val_batches", "1"),
                         cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert fit.returncode == 0, fit.stderr[-3000:]
    root = cwd / "elsewhere"
    ckdir = root / "checkpoints"
    assert len(list(ckdir.glob("*.ckpt"))) == 1
    assert (ckdir / "model-last" / "model.safetensors").is_file()  # tiny.yaml is full fine-tuning
    assert (ckdir / "training_settings.json").is_file() and (root / "eval" / "report.md").is_file()  # FinalEval
    assert (root / "version_0" / "metrics.csv").is_file() and (root / "version_0" / "config.yaml").is_file()
    assert "line 5" in (root / "version_0" / "rejects.jsonl").read_text(encoding="utf-8")
    assert sorted(p.name for p in cwd.iterdir()) == ["elsewhere"]  # no runs/, no lightning_logs/
    for noise in NOISE:
        assert noise not in fit.stderr, noise

    pred = subprocess.run(_cli("predict", *common, "--model.init_args.base", str(ckdir / "model-last"),
                               "--model.init_args.max_new_tokens", "2", "--trainer.limit_predict_batches", "1"),
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert pred.returncode == 0, pred.stderr[-3000:]
    ids = [json.loads(line)["id"] for line in (root / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert ids and set(ids) <= {r["id"] for r in traced_rows(4)}
    assert sorted(p.name for p in cwd.iterdir()) == ["elsewhere"]


def test_logger_and_checkpoints_follow_default_root_dir_without_running(tmp_path):
    """The resolved trainer: the logger's save_dir and the checkpoint dir come from default_root_dir."""
    cli = main(["--config", str(REPO / "configs" / "tiny.yaml"), "--trainer.default_root_dir", str(tmp_path / "r"),
                "--data.init_args.train_manifest", str(REPO / "tests" / "data" / "synth" / "sft_avcot.jsonl")],
               run=False)
    assert Path(cli.trainer.logger.save_dir) == tmp_path / "r"
    assert Path(cli.trainer.checkpoint_callback.dirpath) == (tmp_path / "r" / "checkpoints").resolve()


@pytest.mark.parametrize("name", TRAINING_CONFIGS)
def test_configs_name_only_default_root_dir(name):
    """No config pins a logger save_dir, a checkpoint dirpath or a prediction path: default_root_dir moves them."""
    cfg = parsed_config(name)
    trainer = cfg["trainer"]
    assert trainer["default_root_dir"].startswith("runs/")
    assert "save_dir" not in trainer["logger"]["init_args"]  # a link target: print_config leaves it out
    assert trainer["logger"]["init_args"]["name"] == ""
    for cb in trainer.get("callbacks") or []:
        assert cb["init_args"].get("dirpath") is None, cb
    assert cfg["predictions"]["output_path"] is None


@pytest.mark.parametrize("name", GPU_CONFIGS)
def test_gpu_configs_log_to_tensorboard(name, tmp_path):
    """Each GPU config's logger is TensorBoard, and it instantiates and writes event files."""
    import importlib

    spec = parsed_config(name)["trainer"]["logger"]
    module, _, cls = spec["class_path"].rpartition(".")
    assert cls == "TensorBoardLogger"
    logger = getattr(importlib.import_module(module), cls)(**{**spec["init_args"], "save_dir": str(tmp_path)})
    logger.log_metrics({"train/loss": 1.5}, step=1)
    logger.finalize("success")
    assert list((tmp_path / "version_0").glob("events.out.tfevents.*"))


@pytest.mark.parametrize("name", TINY_CONFIGS)
def test_tiny_configs_keep_the_csv_logger(name):
    assert parsed_config(name)["trainer"]["logger"]["class_path"] == "lightning.pytorch.loggers.CSVLogger"


def test_tiny_config_shows_a_progress_bar():
    assert parsed_config("tiny")["trainer"]["enable_progress_bar"] is True


def test_start_paths_of_later_stages_are_what_earlier_stages_write():
    """A GRPO config's adapter/base under runs/ is `<default_root_dir of its SFT config>/checkpoints/...-last`."""
    roots = {parsed_config(n)["trainer"]["default_root_dir"] for n in GPU_CONFIGS}
    starts = []
    for name in GPU_CONFIGS:
        init = parsed_config(name)["model"]["init_args"]
        starts += [p for p in (init.get("adapter"), init.get("base")) if p and p.startswith("runs/")]
    assert starts, "no config starts from another's output"
    for path in starts:
        root, _, leaf = path.rpartition("/checkpoints/")
        assert root in roots and leaf in ("adapter-last", "model-last"), path


def test_a_cli_call_does_not_echo_argv_in_a_warning(recwarn, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    with pytest.raises(SystemExit):
        main(["fit", "--config", "configs/tiny.yaml", "--print_config"])
    assert not [w for w in recwarn if "args parameter" in str(w.message)]
    assert "args parameter" not in capsys.readouterr().err


def test_eval_help_shows_defaults(capsys):
    from avcot.eval.__main__ import build_parser
    from avcot.eval.cavsr import CavsrEvalSettings
    from avcot.eval.mcq import McqEvalSettings

    for sub, settings in (("cavsr", CavsrEvalSettings), ("mcq", McqEvalSettings)):
        flag = settings.__dataclass_fields__["max_new_tokens"].default  # the command's default is the API's
        with pytest.raises(SystemExit):
            build_parser().parse_args([sub, "--help"])
        out = " ".join(capsys.readouterr().out.split())
        assert f"(default: {flag})" in out and "(default: 4)" in out  # --max-new-tokens, --batch-size
        assert "(default: None)" not in out  # "as trained" options say what happens instead


def test_demo_help_shows_defaults(capsys):
    from demo.app import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "(default: 7860)" in out and "(default: float32)" in out and "(default: None)" not in out


def test_a_manifest_without_traces_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    """target: avcot on a manifest with no trace column: no traceback, one line that says to run the pipeline."""
    monkeypatch.chdir(REPO)
    rows = [{k: v for k, v in r.items() if k != "trace"} for r in traced_rows(3)]
    manifest = write_jsonl(tmp_path / "raw.jsonl", rows)
    code = run(["fit", "--config", "configs/tiny.yaml", "--trainer.default_root_dir", str(tmp_path / "out"),
                "--trainer.enable_progress_bar", "false", "--data.init_args.train_manifest", str(manifest)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "Traceback" not in "\n".join(err)
    assert err[-1].startswith(f"error: {manifest}: no usable rows")
    assert "has no trace; run the pipeline first: python -m avcot.pipeline cavsr" in err[-1]

