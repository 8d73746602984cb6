"""Command line: `python -m avcot.cli fit|validate|test|predict --config configs/X.yaml` (LightningCLI).

Model and data are chosen by class path (LightningCLI subclass mode), so one entry point serves every
recipe: configs name `model.class_path: lit_modules.sft.SFTModule` (default) or another LightningModule
such as `lit_modules.grpo.GRPOModule`, and `data.class_path: datamodules.cavsr.CavsrDataModule` (default)
or another DataModule (e.g. an MCQ one). Without a class_path the defaults above are used, so
`--model.base tiny` works on the command line. `--print_config` prints every resolved value; the
documentation of each argument is in `--model.help CLASS` / `--data.help CLASS` (and `--help`).

Where a run writes: everything under `trainer.default_root_dir` (configs set only that), so
`--trainer.default_root_dir DIR` moves all of it:

    DIR/checkpoints/           *.ckpt, adapter-last/, adapter-step{N}/, model-last/, training_settings.json
    DIR/version_{N}/           the logger's files (metrics.csv or TensorBoard events), config.yaml,
                               hparams.yaml, rejects.jsonl: one folder per run, so a resumed run keeps the
                               earlier run's logs
    DIR/predictions.jsonl      `predict` output (unless `predictions.output_path` names another file)
    DIR/eval/                  the end-of-fit eval report (the `FinalEval` callback, configs/tiny.yaml)
    DIR/<encoder_cache_dir>    the SFT encoder cache when its path is relative (configs/tiny.yaml: encoder_cache/)

The logger's `save_dir` is linked to `default_root_dir` (a `save_dir` given in a config is replaced), and a
ModelCheckpoint without `dirpath` (Lightning's default one too) writes to `DIR/checkpoints`: a fixed path
with no version folder, which the GRPO configs and the docs can name.

`predict` writes JSONL, one {id, text, extracted} line per clip, through the `PredictionWriter` callback,
which is always attached.

A known user error (a base checkpoint that cannot be loaded, a manifest with no usable row) ends the
command with its one-line message on stderr and exit status 2, not a traceback.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

from jsonargparse import set_parsing_settings
from lightning.pytorch.cli import LightningCLI

from lit_modules.checkpoint import PredictionWriter

DEFAULT_MODEL = "lit_modules.sft.SFTModule"
DEFAULT_DATA = "datamodules.cavsr.CavsrDataModule"

# Messages every command printed that tell the user nothing they can act on. Matched by message, so a new
# warning from the same libraries still shows.
NOISE_WARNINGS = (
    r"LightningCLI's args parameter is intended",  # echoes argv whenever main() is given args in-process
    r"Found \d+ module\(s\) in eval mode",  # the frozen audio/vision towers are in eval mode on purpose
    r"`is_gradient_checkpointing` is deprecated",  # transformers deprecation hit inside the libraries
)
NOISE_LOGS = {
    "lightning.pytorch.utilities.rank_zero": r"💡 Tip:",  # suggestions to install Lightning's cloud packages
    "bitsandbytes.backends.cpu.ops": r"Failed to load CPU gemm_4bit_forward",  # an optional CPU kernel package
}


class _DropMatching(logging.Filter):
    """Drops log records whose message matches `pattern`."""

    def __init__(self, pattern: str):
        super().__init__()
        self.pattern = re.compile(pattern)

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.search(record.getMessage())


@contextlib.contextmanager
def quiet_noise() -> Iterator[None]:
    """Silence `NOISE_WARNINGS` and `NOISE_LOGS` while a command runs; other warnings pass, and the filters
    are removed afterwards."""
    filters = [(logging.getLogger(name), _DropMatching(pattern)) for name, pattern in NOISE_LOGS.items()]
    with warnings.catch_warnings():
        for pattern in NOISE_WARNINGS:
            warnings.filterwarnings("ignore", message=pattern)
        for logger, f in filters:
            logger.addFilter(f)
        try:
            yield
        finally:
            for logger, f in filters:
                logger.removeFilter(f)


def place_checkpoints(trainer) -> None:
    """Point every ModelCheckpoint without a `dirpath` at `<default_root_dir>/checkpoints`.

    Lightning's own choice would be the logger's version folder (`version_{N}/checkpoints`), a path that
    changes from run to run; the adapters and `model-last/` written beside the checkpoints must be findable.
    """
    target = os.path.realpath(Path(trainer.default_root_dir).expanduser() / "checkpoints")
    for cb in trainer.checkpoint_callbacks:
        if cb.dirpath is None:
            cb.dirpath = target


class AvcotCLI(LightningCLI):
    """LightningCLI with default model/data classes, an always-attached prediction writer, and every output
    under `trainer.default_root_dir`."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_lightning_class_args(PredictionWriter, "predictions")
        parser.set_defaults({"model": {"class_path": DEFAULT_MODEL}, "data": {"class_path": DEFAULT_DATA}})
        parser.link_arguments("trainer.default_root_dir", "trainer.logger.init_args.save_dir")

    def instantiate_trainer(self, **kwargs):
        trainer = super().instantiate_trainer(**kwargs)
        place_checkpoints(trainer)
        return trainer


def main(args: list[str] | None = None, *, run: bool = True) -> AvcotCLI:
    """Run the CLI (`args` defaults to sys.argv[1:]); returns the LightningCLI object."""
    import lightning as L

    from datamodules.cavsr import CavsrDataModule  # noqa: F401 - importable defaults for class_path
    from lit_modules.sft import SFTModule  # noqa: F401

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # jsonargparse's deprecation notices are about how Lightning calls it, nothing a user can change.
    os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "off")
    # Dataclass arguments (e.g. the modules' `lora: LoraSettings`) document each field in a docstring under it.
    set_parsing_settings(docstring_parse_attribute_docstrings=True)
    with quiet_noise():
        return AvcotCLI(
            L.LightningModule, L.LightningDataModule,
            subclass_mode_model=True, subclass_mode_data=True,
            args=args, run=run, save_config_kwargs={"overwrite": True},
        )


def run(args: list[str] | None = None) -> int:
    """`main` as a command: 0 on success, 2 with a one-line `error: ...` on stderr for a known user error."""
    from avcot.cli_errors import run_command

    return run_command(main, args)


if __name__ == "__main__":
    sys.exit(run())
