"""The end-of-training check of a CAVSR run: corpus CER of the model just trained, printed as one line.

`FinalEval` runs `avcot.eval.cavsr.evaluate_model` on the module's model as it is in memory (no second
load) over a manifest, by default the DataModule's training manifest, with the DataModule's processor, media
settings and target as the eval prompt: the clips with their own video and with another clip's video
("random"). It prints

    eval (train clips): CER true video 0.03 | random video 0.41 | report: runs/tiny/eval/report.md

and writes the eval's report.md / metrics.json / predictions.jsonl under `out` (default: `eval/` in the
trainer's default_root_dir, beside `checkpoints/`: the last run's, like its model-last / adapter-last).
On the training clips this measures memorisation, not generalisation: it says the run learnt what it was
shown, and the random-video figure says how much of that came from the picture.
"""
from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback

CONDITION_LABELS = {"true": "true video", "black": "black video", "random": "random video",
                    "audio_only": "audio only"}


def eval_line(label: str, cers: dict[str, float | None], report: Path | str) -> str:
    """`eval (<label>): CER true video 0.03 | random video 0.41 | report: <path>` ('n/a': nothing scored)."""
    parts = [f"{CONDITION_LABELS.get(c, c)} {'n/a' if v is None else f'{v:.2f}'}" for c, v in cers.items()]
    return f"eval ({label}): CER {' | '.join(parts)} | report: {report}"


class FinalEval(Callback):
    """At the end of `fit`, evaluate the trained model on CAVSR clips and print one line of corpus CERs."""

    def __init__(self, manifest: str | None = None, label: str = "train clips",
                 ablations: tuple[str, ...] = ("random",), out: str | None = None, batch_size: int = 4,
                 max_new_tokens: int | None = None, seed: int = 0):
        """
        Args:
            manifest: CAVSR manifest to evaluate on; None: the DataModule's `train_manifest`.
            label: What the manifest is, for the printed line.
            ablations: Conditions besides the true video (black, random, audio_only).
            out: Report directory; None: `eval/` in the trainer's default_root_dir.
            batch_size: Generation batch size.
            max_new_tokens: Generation budget; None: the module's `max_new_tokens`.
            seed: Seed of the random-video partner choice.
        """
        from avcot.eval.cavsr import parse_ablations

        self.manifest, self.label, self.out = manifest, label, out
        self.ablations = parse_ablations(",".join(ablations))
        self.batch_size, self.max_new_tokens, self.seed = batch_size, max_new_tokens, seed
        self.line: str | None = None
        """The printed line, once fit has ended."""

    def settings(self, trainer: L.Trainer, pl_module: L.LightningModule):
        """`CavsrEvalSettings` from this callback's arguments, the DataModule's media and the module's model."""
        from avcot.eval.cavsr import CavsrEvalSettings
        from avcot.eval.runner import ModelSpec

        dm = trainer.datamodule
        hp, mp = dm.hparams, pl_module.hparams
        manifest = self.manifest or hp.get("train_manifest")
        if not manifest:
            raise ValueError("FinalEval needs a manifest: set its `manifest` or the DataModule's train_manifest")
        out = Path(self.out) if self.out else Path(trainer.default_root_dir) / "eval"
        prompt = hp.get("target", "avcot")
        if prompt not in ("avcot", "transcript"):
            raise ValueError(f"FinalEval scores CAVSR transcriptions; the DataModule's target is {prompt!r}")
        return CavsrEvalSettings(
            data=str(manifest), out=str(out), model=ModelSpec(ckpt=f"(in memory: the end of a run in {out.parent})",
                                                              base=mp.get("base", "tiny"), seed=mp.get("seed", 0)),
            ablations=self.ablations, prompt=prompt, batch_size=self.batch_size,
            max_new_tokens=self.max_new_tokens or mp.get("max_new_tokens", 256), num_frames=hp["num_frames"],
            frame_size=hp["frame_size"], max_seconds=hp["max_seconds"],
            use_audio_in_video=hp.get("use_audio_in_video", False), seed=self.seed, progress=False,
            settings_from="the training DataModule's settings")

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:  # one evaluation, by the rank that writes the run's files
            return
        from avcot.eval.cavsr import conditions, evaluate_model
        from avcot.eval.metrics import cer_by_ablation

        settings = self.settings(trainer, pl_module)
        model = pl_module.model
        was_training = model.training
        model.eval()
        try:
            result = evaluate_model(model, trainer.datamodule.processor, settings)
        finally:
            model.train(was_training)
        cers = {s.name: s.cer for s in cer_by_ablation(result.predictions)}
        self.line = eval_line(self.label, {c: cers.get(c) for c in conditions(settings)}, result.files.report)
        print(self.line, flush=True)
