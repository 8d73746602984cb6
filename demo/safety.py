"""Upload checks for the demo: every path the UI hands over is resolved, confined and probed.

A path is accepted only when, after `Path.resolve()` (which follows symlinks and `..`), it lies
inside one of the allowed roots (the served app allows only its own private upload dir, which holds
nothing but files posted to its upload route and the copies Gradio makes of the bundled examples),
has an allowed extension for its kind, is no larger than the size limit, and its content really is
that kind of media (probed with `avcot.media.probe`, or Pillow for images). The checks run in that
order so that nothing outside the roots is ever opened. Refusals name only the file's base name,
never a server path.

`request_files` finds the file references in a raw request value (Gradio's FileData dicts, at any
depth), so that the app can run these checks on what a client posted before Gradio copies anything.
"""
from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Kind = Literal["video", "audio", "image"]

EXTENSIONS: dict[str, frozenset[str]] = {
    "video": frozenset({".mp4", ".webm", ".mov", ".mkv", ".avi"}),
    "audio": frozenset({".wav", ".mp3", ".flac", ".m4a"}),
    "image": frozenset({".png", ".jpg", ".jpeg"}),
}
MB = 1024 * 1024


class UploadError(ValueError):
    """A user-facing refusal of an uploaded or selected file (the message is shown as is)."""


@dataclass(frozen=True)
class UploadPolicy:
    """Where the demo may read files from and how large they may be."""

    roots: tuple[Path, ...]
    """Allowed directories (resolved); a file must lie inside one of them."""
    max_bytes: int = 50 * MB
    """Largest accepted file."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "roots", tuple(Path(r).resolve() for r in self.roots))


def resolve_inside(path: str | Path, roots: tuple[Path, ...]) -> Path:
    """`path` resolved, if it is a file inside one of `roots`; else `UploadError` (nothing is opened).

    `~` is not expanded and URLs are not fetched: a client's string is only ever a local path.
    """
    if not str(path).strip():
        raise UploadError("no file was given")
    name = _base_name(path)
    real = Path(path).resolve()  # relative paths resolve against the cwd, which is never a root
    if not any(real.is_relative_to(root) for root in roots):
        raise UploadError(f"refusing to read {name!r}: only files uploaded to this demo (or its bundled "
                          "examples) can be used")
    if not real.is_file():
        raise UploadError(f"file {name!r} does not exist")
    return real


def _base_name(path: str | Path) -> str:
    """The last part of a client-given path or URL: safe to echo back, it reveals nothing of the server."""
    return Path(str(path).rstrip("/").split("?")[0]).name or "?"


def request_files(value: object) -> list[str]:
    """The `path` of every file reference (a dict with a "path" key) anywhere inside a raw request value."""
    found: list[str] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if "path" in item and item["path"] is not None:
                if not isinstance(item["path"], str):
                    raise UploadError("malformed file reference: 'path' must be a string")
                found.append(item["path"])
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return found


def check_request_value(value: object, kind: Kind | None, policy: UploadPolicy) -> None:
    """Refuse a raw request value that references any file the demo did not receive through its upload.

    `kind` is what the receiving component takes (None: it takes no files, so any reference is refused).
    Every referenced file must pass `validate_upload` for that kind.
    """
    for path in request_files(value):
        if kind is None:
            raise UploadError(f"refusing {_base_name(path)!r}: this input does not take files")
        validate_upload(path, kind, policy)


def check_extension(path: Path, kind: Kind) -> None:
    """Refuse a file whose extension is not allowed for `kind`."""
    allowed = EXTENSIONS[kind]
    if path.suffix.lower() not in allowed:
        raise UploadError(f"{path.name!r} is not an accepted {kind} file: expected one of "
                          f"{', '.join(sorted(allowed))}")


def check_size(path: Path, max_bytes: int) -> None:
    """Refuse a file larger than `max_bytes`."""
    size = path.stat().st_size
    if size > max_bytes:
        raise UploadError(f"{path.name!r} is {size / MB:.1f} MB; the limit is {max_bytes / MB:.0f} MB")
    if size == 0:
        raise UploadError(f"{path.name!r} is empty")


def check_content(path: Path, kind: Kind) -> None:
    """Refuse a file whose content is not `kind` media, whatever its extension says."""
    if kind == "image":
        _check_image(path)
        return
    from avcot.media import MediaError, probe

    try:
        info = probe(path)
    except MediaError as e:
        # the decoder's message names the full upload path; the user only needs the file name
        detail = str(e).replace(str(path), path.name)
        raise UploadError(f"{path.name!r} could not be read as {kind}: {detail}") from None
    except Exception as e:  # noqa: BLE001 - any decoder failure means "not a media file" to the user
        raise UploadError(f"{path.name!r} could not be read as {kind} ({type(e).__name__})") from None
    has = info.has_video if kind == "video" else info.has_audio
    if not has:
        raise UploadError(f"{path.name!r} has no {kind} stream")


def _check_image(path: Path) -> None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.verify()
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise UploadError(f"{path.name!r} could not be read as an image ({type(e).__name__})") from None


def validate_upload(path: str | Path | None, kind: Kind, policy: UploadPolicy) -> Path:
    """The resolved path of an acceptable `kind` file, or `UploadError` saying why not."""
    if path is None:
        raise UploadError(f"please upload a {kind} file")
    real = resolve_inside(path, policy.roots)
    check_extension(real, kind)
    check_size(real, policy.max_bytes)
    check_content(real, kind)
    return real


class UploadDir:
    """A private temp dir for uploads, removed by `cleanup()` (idempotent)."""

    def __init__(self, parent: str | Path | None = None) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="avcot-demo-", dir=parent)).resolve()

    def cleanup(self) -> None:
        """Delete the directory and everything uploaded into it."""
        shutil.rmtree(self.path, ignore_errors=True)

    def __enter__(self) -> UploadDir:
        return self

    def __exit__(self, *exc) -> None:
        self.cleanup()
