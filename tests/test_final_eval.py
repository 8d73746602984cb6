"""FinalEval: a fit ends with one line of corpus CERs, computed by avcot.eval on the model just trained."""
from __future__ import annotations

import json
import re
from pathlib import Path

import lightning as L
import pytest
import yaml

from avcot.cli import main
from avcot.eval.cavsr import CavsrEvalSettings, run_cavsr
from avcot.eval.metrics import cer_by_ablation
from avcot.eval.runner import ModelSpec
from datamodules.cavsr import CavsrDataModule
from lit_modules.final_eval import FinalEval, eval_line
from lit_modules.sft import SFTModule

REPO = Path(__file__).resolve().parent.parent
SYNTH = REPO / "tests" / "data" / "synth" / "sft_avcot.jsonl"
LINE = re.compile(r"^eval \(train clips\): CER true video (\d+\.\d\d) \| random video (\d+\.\d\d) \| report: (\S+)$",
                  re.M)


def test_eval_line_format():
    line = eval_line("train clips", {"true": 0.0349, "random": 0.41, "black": None}, "runs/x/eval/report.md")
    assert line == ("eval (train clips): CER true video 0.03 | random video 0.41 | black video n/a | "
                    "report: runs/x/eval/report.md")


def test_tiny_config_ends_its_run_with_the_final_eval(capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    with pytest.raises(SystemExit):
        main(["fit", "--config", "configs/tiny.yaml", "--print_config"])
    callbacks = yaml.safe_load(capsys.readouterr().out)["trainer"]["callbacks"]
    assert [c["class_path"] for c in callbacks if c["class_path"].endswith("FinalEval")] == [
        "lit_modules.final_eval.FinalEval"]


def _predictions(report_dir: Path) -> dict[tuple[str, str], str]:
    rows = [json.loads(x) for x in (report_dir / "predictions.jsonl").read_text("utf-8").splitlines()]
    return {(r["id"], r["ablation"]): r["output"] for r in rows}


def _four_clips(path: Path) -> Path:
    """The first four rows of the synthetic manifest (media paths made absolute), to keep the test short."""
    rows = [json.loads(x) for x in SYNTH.read_text("utf-8").splitlines()[:4]]
    for row in rows:
        row.update(video=str(SYNTH.parent / row["video"]), audio=str(SYNTH.parent / row["audio"]))
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return path


def test_a_short_fit_prints_the_numbers_avcot_eval_computes_for_its_model(tmp_path, capsys):
    L.seed_everything(0)
    manifest = _four_clips(tmp_path / "four.jsonl")
    dm = CavsrDataModule(train_manifest=str(manifest), val_fraction=0.0, split_column=None, batch_size=2,
                         num_frames=2, frame_size=56, max_seconds=3)
    # a few steps at a high rate, so the model's output depends on the clip and the two conditions differ
    module = SFTModule(finetune="full", lr=3e-2, max_new_tokens=12, lora={"train_lm_head": True})
    final = FinalEval(batch_size=4)
    trainer = L.Trainer(accelerator="cpu", max_steps=4, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=str(tmp_path), callbacks=[final],
                        limit_val_batches=0)
    trainer.fit(module, datamodule=dm)
    out = capsys.readouterr().out
    found = LINE.findall(out)
    assert len(found) == 1 and final.line in out, out
    true_cer, random_cer, report = found[0]
    assert Path(report) == tmp_path / "eval" / "report.md" and Path(report).is_file()

    # avcot.eval on the model the run saved (model-last) with the same settings gives the same CERs and texts
    model_dir = tmp_path / "checkpoints" if (tmp_path / "checkpoints").is_dir() else next(tmp_path.rglob("checkpoints"))
    settings = CavsrEvalSettings(data=str(manifest), out=str(tmp_path / "again"),
                                 model=ModelSpec(ckpt=str(model_dir / "model-last"), device="cpu"),
                                 ablations=("random",), batch_size=4, max_new_tokens=12, num_frames=2,
                                 frame_size=56, max_seconds=3, progress=False)
    again = run_cavsr(settings)
    cers = {s.name: s.cer for s in cer_by_ablation(again.predictions)}
    assert (true_cer, random_cer) == (f"{cers['true']:.2f}", f"{cers['random']:.2f}")
    assert _predictions(tmp_path / "eval") == _predictions(tmp_path / "again")
    assert module.model.training  # handed back in the mode it was in
