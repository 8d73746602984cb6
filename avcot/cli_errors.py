"""Known user errors end a command with a one-line message and exit status 2 instead of a traceback."""
from __future__ import annotations

import sys
from collections.abc import Callable


def user_errors() -> tuple[type[Exception], ...]:
    """Exceptions whose message alone tells the user what to fix (it names the file and says why)."""
    from avcot.data.rows import BadRowError
    from avcot.model import CheckpointError

    return (CheckpointError, BadRowError)


def run_command(main: Callable[[list[str] | None], object], args: list[str] | None = None) -> int:
    """Run `main(args)`: its int status (0 for None or any other result), or 2 with `error: ...` on stderr."""
    try:
        status = main(args)
    except user_errors() as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    return status if isinstance(status, int) else 0
