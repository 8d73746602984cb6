"""Command line: `python -m avcot.cli fit|validate|test|predict --config configs/X.yaml` (LightningCLI).

Model and data are chosen by class path (LightningCLI subclass mode), so one entry point serves every
recipe: configs name `model.class_path: lit_modules.sft.SFTModule` (default) or another LightningModule
such as `lit_modules.grpo.GRPOModule`, and `data.class_path: datamodules.cavsr.CavsrDataModule` (default)
or another DataModule (e.g. an MCQ one). Without a class_path the defaults above are used, so
`--model.base tiny` works on the command line. `--print_config` shows every argument with its docstring.

`predict` writes `predictions.output_path` (JSONL, one {id, text, extracted} line per clip) through the
`PredictionWriter` callback, which is always attached.

A known user error (a base checkpoint that cannot be loaded, e.g. pickle weights) ends the command with
its one-line message on stderr and exit status 2, not a traceback.

This module is the CLI entry that wires LightningCLI to `lit_modules/` and `datamodules/`, so it is the one
module of `avcot` that imports them; the rest of the library never does (tests/test_data_layer.py checks).
"""
from __future__ import annotations

import os
import sys

from jsonargparse import set_parsing_settings
from lightning.pytorch.cli import LightningCLI

from lit_modules.checkpoint import PredictionWriter

DEFAULT_MODEL = "lit_modules.sft.SFTModule"
DEFAULT_DATA = "datamodules.cavsr.CavsrDataModule"


class AvcotCLI(LightningCLI):
    """LightningCLI with default model/data classes and an always-attached prediction writer."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_lightning_class_args(PredictionWriter, "predictions")
        parser.set_defaults({"model": {"class_path": DEFAULT_MODEL}, "data": {"class_path": DEFAULT_DATA}})


def main(args: list[str] | None = None, *, run: bool = True) -> AvcotCLI:
    """Run the CLI (`args` defaults to sys.argv[1:]); returns the LightningCLI object."""
    import lightning as L

    from datamodules.cavsr import CavsrDataModule  # noqa: F401 - importable defaults for class_path
    from lit_modules.sft import SFTModule  # noqa: F401

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Dataclass arguments (e.g. the modules' `lora: LoraSettings`) document each field in a docstring under it.
    set_parsing_settings(docstring_parse_attribute_docstrings=True)
    return AvcotCLI(
        L.LightningModule, L.LightningDataModule,
        subclass_mode_model=True, subclass_mode_data=True,
        args=args if args is not None else sys.argv[1:],
        run=run, save_config_kwargs={"overwrite": True},
    )


def run(args: list[str] | None = None) -> int:
    """`main` as a command: 0 on success, 2 with a one-line `error: ...` on stderr for a known user error."""
    from avcot.cli_errors import run_command

    return run_command(main, args)


if __name__ == "__main__":
    sys.exit(run())
