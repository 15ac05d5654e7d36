"""Every file derivgen writes or reads from a user's path, in one place.

- Writes are atomic: a complete temporary file beside the target is renamed over it
  (``os.replace``), so a reader (or a crash, or kill -9) sees the old file or the new one,
  never a part and never no file. Several files are staged first and swapped in one by
  one; if a swap fails, the files already swapped get their old contents back (kept as
  hard links, so the target never goes missing).
- Files get the mode a plain ``open()`` would give them (0666 minus the umask), not
  ``mkstemp``'s 0600, so another user can import a regenerated ``generated/``.
- The temporary files of an earlier run that was killed are removed (only ours, by name,
  and only while holding the folder's lock, so a concurrent run's are left alone).
- An output folder is checked before any work starts: not empty, not a file, writable.
- A spec is read only if it is a regular file of reasonable size (a FIFO would hang the
  read and /dev/zero never end).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import secrets
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

#: Largest spec file read (a spec is a few kilobytes; this is far above any real one).
MAX_SPEC_BYTES = 1 << 20
#: Temporary and backup files this module makes (``.<name>.<8 random>.tmp`` and
#: ``.bak``), and the backups earlier versions made (``.<name>.bak``).
_LEFTOVER = re.compile(r"^\..+\.([a-z0-9_]{8}\.tmp|[a-z0-9_]{8}\.bak|(py|npz|json|png|md)\.bak)$")


class WriteError(OSError):
    """A path derivgen cannot write or read: one line, exit status 2."""


def path_argument(text: str) -> Path:
    """An argparse ``type`` for a path: the empty string is refused (``Path("")`` would
    quietly be the current folder)."""
    import argparse

    if not text:
        raise argparse.ArgumentTypeError("an empty path")
    return Path(text)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode ``open()`` gives a new file: 0666 minus the umask."""
    return 0o666 & ~_umask()


def _describe(exc: OSError) -> str:
    return exc.strerror or str(exc)


def check_folder(folder: Path | str, what: str = "--out") -> Path:
    """A folder derivgen may write into, created if need be; checked now, before any
    work: not an empty name, not a file or device, writable.

    Raises:
        WriteError: Naming the folder and what is wrong.
    """
    if str(folder) == "":
        raise WriteError(f"{what}: an empty path (give a folder)")
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise WriteError(f"{what} {folder}: not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = tempfile.TemporaryFile(dir=folder)
        probe.close()
    except OSError as exc:
        raise WriteError(f"{what} {folder}: cannot write there ({_describe(exc)})") from None
    return folder


@contextlib.contextmanager
def locked(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` (two writers into one folder take turns)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def clean_leftovers(folder: Path) -> list[Path]:
    """Remove the temporary and backup files an interrupted run left in ``folder`` (call
    it holding the folder's lock)."""
    removed = []
    for path in folder.iterdir():
        if _LEFTOVER.match(path.name) and path.is_file() and not path.is_symlink():
            with contextlib.suppress(OSError):
                path.unlink()
                removed.append(path)
    return removed


def _stage(folder: Path, name: str, fill: Callable[[IO[bytes]], None]) -> Path:
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            fill(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, file_mode())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def _backup(target: Path) -> Path:
    """A hard link to ``target`` under a fresh hidden name (the old contents, kept
    without ever taking the target's name away)."""
    while True:
        backup = target.with_name(f".{target.name}.{secrets.token_hex(4)}.bak")
        try:
            os.link(target, backup)
            return backup
        except FileExistsError:
            continue


def _check_target(path: Path) -> None:
    if path.is_symlink() or (path.exists() and not path.is_file()):
        kind = "a folder" if path.is_dir() else "not a regular file"
        raise WriteError(f"{path}: {kind} where a file is to be written")


def atomic_write(path: Path | str, fill: Callable[[IO[bytes]], None] | bytes | str) -> Path:
    """Write one file atomically (see the module docstring).

    Args:
        path: The file.
        fill: Its contents (bytes or text), or a function writing them to a binary handle.

    Raises:
        WriteError: The path cannot be written (one line).
    """
    path = Path(path)
    if isinstance(fill, str):
        fill = fill.encode("utf-8")
    if isinstance(fill, bytes):
        data = fill
        fill = lambda handle: handle.write(data)  # noqa: E731
    folder = check_folder(path.parent, "folder")
    _check_target(path)
    try:
        tmp = _stage(folder, path.name, fill)
        os.replace(tmp, path)
    except OSError as exc:
        raise WriteError(f"{path}: cannot write ({_describe(exc)})") from None
    return path


def write_files(folder: Path | str, files: dict[str, bytes | str]) -> list[Path]:
    """Write every file into ``folder``, all or nothing.

    Each file is staged beside its target first; then each target is replaced in turn
    (the old one kept as a hard link until all are in). A failure puts every replaced
    file back. Leftovers of an interrupted earlier run are removed first.

    Raises:
        WriteError: A target is a folder, or the folder cannot be written.
    """
    folder = check_folder(folder)
    targets = [folder / name for name in files]
    for target in targets:
        _check_target(target)
    with locked(folder):
        clean_leftovers(folder)
        staged: list[tuple[Path, Path]] = []
        try:
            for name, text in files.items():
                data = text.encode("utf-8") if isinstance(text, str) else text
                staged.append((_stage(folder, name, lambda h, d=data: h.write(d)), folder / name))
        except BaseException as exc:
            for tmp, _ in staged:
                tmp.unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise WriteError(f"{folder}: cannot write ({_describe(exc)})") from None
            raise
        replaced: list[tuple[Path, Path | None]] = []
        try:
            for tmp, target in staged:
                backup = _backup(target) if target.exists() else None
                replaced.append((target, backup))
                os.replace(tmp, target)
        except BaseException as exc:
            for target, backup in reversed(replaced):
                if backup is not None:
                    os.replace(backup, target)
                    # (a rename between two links to one file does nothing: the target
                    # was never replaced, and its backup is still there)
                    backup.unlink(missing_ok=True)
                else:
                    target.unlink(missing_ok=True)
            for tmp, _ in staged:
                tmp.unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise WriteError(f"{folder}: cannot write ({_describe(exc)})") from None
            raise
        for _, backup in replaced:
            if backup is not None:
                backup.unlink(missing_ok=True)
    return targets


def read_spec(path: Path | str) -> bytes:
    """A spec file's bytes: only a regular file, at most :data:`MAX_SPEC_BYTES`.

    Raises:
        WriteError: Naming the file and what is wrong (missing, a folder, a FIFO or a
            device, too large, unreadable).
    """
    path = Path(path)
    try:
        # O_NONBLOCK: opening a FIFO with no writer must not hang before the check below
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise WriteError(f"{path}: cannot read the spec ({_describe(exc)})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = "a folder" if stat.S_ISDIR(info.st_mode) else "not a regular file"
            raise WriteError(f"{path}: cannot read the spec ({kind})")
        if info.st_size > MAX_SPEC_BYTES:
            raise WriteError(f"{path}: cannot read the spec (larger than {MAX_SPEC_BYTES} bytes)")
        chunks, size = [], 0
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_SPEC_BYTES:
                raise WriteError(
                    f"{path}: cannot read the spec (larger than {MAX_SPEC_BYTES} bytes)"
                )
        return b"".join(chunks)
    except OSError as exc:
        if isinstance(exc, WriteError):
            raise
        if exc.errno == errno.EAGAIN:
            raise WriteError(f"{path}: cannot read the spec (not a regular file)") from None
        raise WriteError(f"{path}: cannot read the spec ({_describe(exc)})") from None
    finally:
        os.close(fd)
