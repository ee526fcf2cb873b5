"""Writing output files: never through a symbolic link, never half-written, never over a file unless told.

Every file metricc writes (``metricc compile -o``, the experiments' reports, tables and PNGs) goes
through :func:`write_file`:

- the data goes to a new temporary file in the target's folder (created with ``O_EXCL`` and
  ``O_NOFOLLOW``, so nothing planted there is followed), which then takes the target's name in one
  step: a reader, or a crash, never sees half a file;
- without ``overwrite`` the target must not exist, and a symbolic link counts as existing even when
  it points nowhere: the name is taken with ``os.link``, which fails rather than replace anything,
  so a file or link planted between the check and the write is not replaced either;
- with ``overwrite`` (``--force``) the target is replaced with ``os.replace``, which replaces a
  symbolic link itself: the file it points to is never written. A folder shared with others (or a
  ``--out`` an attacker can write into) cannot redirect metricc's output to another file.

The replaced file's permissions are not kept: the new file has the default permissions (0666 less
the umask), as a file the command created.
"""

from __future__ import annotations

import errno
import io
import os
import secrets
from pathlib import Path

_OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)


def refusal(path: Path) -> str | None:
    """Why ``path`` may not be written without ``overwrite``, or None when nothing is there."""
    if path.is_symlink():
        return (f"{path} is a symbolic link (to {os.readlink(path)}); metricc does not write through links: "
                "remove it, or pass --force to replace the link itself (the file it points to is left alone)")
    if path.exists():
        return f"{path} exists; pass --force to overwrite it"
    return None


def check_writable(paths, overwrite: bool, option: str = "the output") -> None:
    """Raise ``FileExistsError`` (with what to do) for the first of ``paths`` that ``write_file`` would refuse:
    check before a long computation, not after it. ``option`` names where the path came from (``-o``)."""
    for path in map(Path, paths):
        if path.is_dir() and not path.is_symlink():
            raise IsADirectoryError(f"{path} is a folder; {option} needs a file name, e.g. {path / 'loss.py'}")
        reason = None if overwrite else refusal(path)
        if reason is not None:
            raise FileExistsError(reason)


def write_file(path, data: str | bytes, *, overwrite: bool = False) -> Path:
    """Write ``data`` (text as UTF-8) to ``path`` atomically; see the module's docstring for the rules."""
    path = Path(path)
    check_writable([path], overwrite)
    folder = path.parent
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"cannot write {path}: {folder} is a file, not a folder")
    if not folder.is_dir():
        raise FileNotFoundError(f"cannot write {path}: folder {folder} does not exist")
    payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    temporary = _write_temporary(folder, path.name, payload)
    try:
        if overwrite:
            os.replace(temporary, path)
        else:
            _link_new(temporary, path)
    finally:
        if os.path.lexists(temporary):
            os.unlink(temporary)
    return path


def save_figure(figure, path, *, overwrite: bool = False, **savefig_options) -> Path:
    """``figure.savefig`` by way of :func:`write_file` (matplotlib itself would follow a link)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format=savefig_options.pop("format", "png"), **savefig_options)
    return write_file(path, buffer.getvalue(), overwrite=overwrite)


def _write_temporary(folder: Path, name: str, payload: bytes) -> Path:
    for _ in range(100):
        temporary = folder / f".{name}.{secrets.token_hex(6)}.tmp"
        try:
            descriptor = os.open(temporary, _OPEN_FLAGS, 0o666)  # the umask applies, as for any new file
        except FileExistsError:
            continue
        try:
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(payload)
                handle.flush()
                os.fsync(handle.fileno())
        except BaseException:
            os.unlink(temporary)
            raise
        return temporary
    raise FileExistsError(f"could not create a temporary file in {folder}")


def _link_new(temporary: Path, path: Path) -> None:
    """Give ``temporary`` the name ``path`` only if nothing (no file, no link) has that name."""
    try:
        os.link(temporary, path)
    except FileExistsError:
        raise FileExistsError(refusal(path) or f"{path} exists; pass --force to overwrite it") from None
    except OSError as error:  # a file system without hard links: create the name exclusively, then fill it
        if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        descriptor = os.open(path, _OPEN_FLAGS, 0o666)
        with os.fdopen(descriptor, "wb") as handle, open(temporary, "rb") as source:
            handle.write(source.read())
