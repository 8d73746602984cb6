"""LightningCLI entry point: configs parse, fit writes checkpoints + adapters, predict writes one line per clip."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from avcot.cli import main

REPO = Path(__file__).resolve().parent.parent
CONFIGS = ("tiny", "vasr_7b_lora", "qlora_7b_single_gpu", "fsdp_7b")
SYNTH = REPO / "tests" / "data" / "synth" / "sft_avcot.jsonl"  # tiny.yaml trains AV-CoT targets


@pytest.mark.parametrize("name", CONFIGS)
def test_config_starts_with_its_command_and_parses(name, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    path = REPO / "configs" / f"{name}.yaml"
    first = path.read_text().splitlines()[0]
    assert first == f"# python -m avcot.cli fit --config configs/{name}.yaml"
    with pytest.raises(SystemExit) as done:
        main(["fit", "--config", f"configs/{name}.yaml", "--print_config"])
    assert done.value.code == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["model"]["class_path"] == "lit_modules.sft.SFTModule"
    assert cfg["data"]["class_path"] == "datamodules.cavsr.CavsrDataModule"


def test_paper_hyperparameters_in_the_7b_config(capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    with pytest.raises(SystemExit):
        main(["fit", "--config", "configs/vasr_7b_lora.yaml", "--print_config"])
    cfg = yaml.safe_load(capsys.readouterr().out)
    m = cfg["model"]["init_args"]
    assert (m["lora"]["r"], m["lora"]["alpha"], m["lora"]["dropout"], m["lr"]) == (8, 32, 0.05, 1e-4)
    assert cfg["trainer"]["max_epochs"] == 3 and cfg["trainer"]["precision"] == "bf16-mixed"


def test_defaults_apply_without_class_path(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--model.lr", "0.003", "--data.train_manifest", str(SYNTH), "--print_config"])
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["model"]["class_path"] == "lit_modules.sft.SFTModule" and cfg["model"]["init_args"]["lr"] == 0.003
    assert cfg["data"]["init_args"]["train_manifest"] == str(SYNTH)


def _overrides(tmp_path: Path) -> list[str]:
    return ["--trainer.default_root_dir", str(tmp_path), "--trainer.logger.init_args.save_dir", str(tmp_path),
            "--data.init_args.train_manifest", str(SYNTH), "--data.init_args.predict_manifest", str(SYNTH),
            "--predictions.output_path", str(tmp_path / "predictions.jsonl")]


def test_fit_then_predict_through_the_cli(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    lora = ["--model.init_args.finetune", "lora"]  # tiny.yaml fine-tunes fully; this test follows the adapter
    cli = main(["fit", "--config", "configs/tiny.yaml", *_overrides(tmp_path), *lora, "--trainer.max_steps", "2",
                "--trainer.limit_val_batches", "1"])
    assert cli.trainer.global_step == 2
    ckdir = tmp_path / "checkpoints"  # fixed beside the logger's version folders (avcot.cli)
    assert len(list(ckdir.glob("*.ckpt"))) == 1
    assert (ckdir / "adapter-last" / "adapter_model.safetensors").is_file()
    assert (tmp_path / "version_0" / "config.yaml").is_file()
    main(["predict", "--config", "configs/tiny.yaml", *_overrides(tmp_path / "p"), *lora,
          "--model.init_args.adapter", str(ckdir / "adapter-last"), "--model.init_args.max_new_tokens", "3",
          "--data.init_args.eval_batch_size", "6"])
    lines = [json.loads(x) for x in (tmp_path / "p" / "predictions.jsonl").read_text().splitlines()]
    want = [json.loads(x)["id"] for x in SYNTH.read_text().splitlines()]
    assert [x["id"] for x in lines] == want
    assert all(set(x) >= {"id", "text", "extracted"} and isinstance(x["text"], str) for x in lines)


def test_nested_lora_settings_on_the_command_line_and_in_help(capsys):
    """`--model.init_args.lora.r` sets one field (the others keep their defaults); --help documents each field."""
    with pytest.raises(SystemExit):
        main(["fit", "--model.init_args.lora.r", "4", "--print_config"])
    lora = yaml.safe_load(capsys.readouterr().out)["model"]["init_args"]["lora"]
    assert lora == {"r": 4, "alpha": 32, "dropout": 0.05, "target": "attention", "train_lm_head": False}
    with pytest.raises(SystemExit):
        main(["fit", "--model.help", "lit_modules.sft.SFTModule"])
    assert "LoRA rank." in capsys.readouterr().out  # the field's own docstring (avcot.model.LoraSettings)


@pytest.mark.parametrize("cls_path", ["lit_modules.sft.SFTModule", "lit_modules.grpo.GRPOModule"])
def test_lora_settings_travel_in_hparams_as_plain_data(cls_path, tmp_path):
    """Both modules keep `lora` as a plain dict in their hparams (a checkpoint loads with weights_only) and rebuild
    the same settings from it, as `load_from_checkpoint` does."""
    import importlib

    import torch

    from avcot.model import LoraSettings

    module_name, _, name = cls_path.rpartition(".")
    cls = getattr(importlib.import_module(module_name), name)
    settings = LoraSettings(r=4, alpha=8, dropout=0.0, target="all-linear")
    module = cls(lora=settings)
    assert module.lora == settings
    torch.save({"hyper_parameters": dict(module.hparams)}, tmp_path / "hp.pt")
    hparams = torch.load(tmp_path / "hp.pt", weights_only=True)["hyper_parameters"]
    assert hparams["lora"] == {"r": 4, "alpha": 8, "dropout": 0.0, "target": "all-linear", "train_lm_head": False}
    assert cls(**hparams).lora == settings
