"""Directories written atomically: built in a temporary sibling, then renamed into place.

A crash (even kill -9) while the files are written leaves the final name untouched: the old directory if
there was one, nothing otherwise. A finished directory replaces an existing one by two renames (old out of
the way, new in), so for a moment the name may be absent, never partial. Used for adapter dirs, full-model
dirs and exports.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def replace_dir(tmp: Path, target: Path) -> None:
    """Move the finished `tmp` to `target` by rename; an existing `target` is swapped out first, then removed."""
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)


@contextmanager
def atomic_dir(target: Path, *, tag: str = "tmp") -> Iterator[Path]:
    """Yield an empty temporary sibling of `target` to write into; on a normal exit it becomes `target`.

    On an exception the temporary directory is removed and `target` is left as it was. `tag` names the
    temporary directory (`.<target name>.<tag>-XXXX`), so a leftover says what wrote it.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.{tag}-", dir=target.parent))
    tmp.chmod(0o755)  # mkdtemp makes 0700; the final dir should read like any save_pretrained output
    try:
        yield tmp
        replace_dir(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
