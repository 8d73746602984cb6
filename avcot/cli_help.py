"""`--help` that shows each option's default, for the argparse commands (eval, demo, export)."""
from __future__ import annotations

import argparse


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: X)" to an option's help, except where it would mislead or repeat: a default of
    None (the help says what happens then, e.g. "as trained"), an on/off flag's False, or a help text
    that already names its default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default is None or action.default is False or "default" in text:
            return text
        return super()._get_help_string(action)
