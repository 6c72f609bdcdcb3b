"""Crash-safe file primitives: atomic writes, appends under a lock, checksums."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Iterator


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Write ``path`` atomically: ``write(tmp_path)`` fills a temp file in the same folder, which
    is fsynced and renamed over ``path``. A crash leaves either the old file or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())
    try:
        write(tmp_path)
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
        _fsync_dir(path.parent)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Atomically replace ``path`` with ``text`` (UTF-8)."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Atomically replace ``path`` with ``data``."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


@contextlib.contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """Exclusive advisory lock on ``path`` (created if missing), held for the ``with`` block."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def folder_lock(path: str | os.PathLike) -> Iterator[Path]:
    """Exclusive advisory lock on the folder ``path`` itself (created if missing; no lock file is left in
    it), held for the ``with`` block."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield path
    finally:
        os.close(fd)  # releases the lock


def append_line_locked(path: str | os.PathLike, line: str) -> bool:
    """Append one line to ``path`` under an exclusive lock, fsynced: concurrent writers never
    interleave or lose lines. A last line without its newline (hand edit, crash, copy) is first closed
    with one, so the new line is never glued onto it. Returns True when such a line was closed."""
    path = Path(path)
    if "\n" in line:
        raise ValueError("a record line must not contain a newline")
    with file_lock(path.with_name(path.name + ".lock")):
        with open(path, "ab+") as fh:
            unterminated = False
            if fh.seek(0, os.SEEK_END) > 0:
                fh.seek(-1, os.SEEK_END)
                unterminated = fh.read(1) != b"\n"
            fh.write((b"\n" if unterminated else b"") + line.encode("utf-8") + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
    return unterminated


@contextlib.contextmanager
def exclusive_dir(path: str | os.PathLike, what: str = "run folder") -> Iterator[Path]:
    """Hold a non-blocking exclusive lock on folder ``path`` for the ``with`` block, or raise UserError at once
    when another process holds it (two runs with the same output folder cannot run together). The folder is
    created if missing and removed again, with the parents created for it, if the block fails and left it
    empty (so a refused run leaves no trace)."""
    from ..errors import UserError

    path = Path(path)
    created = [p for p in [path, *path.parents] if not p.exists()]
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create {what} {path}: {exc.strerror}") from None
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"another process is using the {what} {path}; wait for it or choose another "
                            f"folder") from None
        yield path
    except BaseException:
        for folder in created:  # deepest first
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if empty
        raise
    finally:
        os.close(fd)  # releases the lock


def check_output_paths(folders: Iterable[str | os.PathLike] = (), files: Iterable[str | os.PathLike] = ()) -> None:
    """UserError (one line naming the path) unless every folder in ``folders`` is a writable folder or can be
    created as one, and every file in ``files`` is a writable regular file or can be created in such a folder.
    Creates nothing: called before the work starts, so nothing fails on an output path hours in."""
    from ..errors import UserError

    for folder in folders:
        check_can_create_dir(folder)
    for file in map(Path, files):
        if file.exists() and not file.is_file():
            raise UserError(f"output file {file} exists and is not a regular file")
        if file.exists() and not os.access(file, os.W_OK):
            raise UserError(f"output file {file} is not writable")
        check_can_create_dir(file.parent)


def publish_file_set(out_dir: str | os.PathLike, write: Callable[[Path], list[Path]]) -> list[Path]:
    """Write a set of files into ``out_dir`` so that an interruption never leaves some of them new and some old
    while the set is being made: ``write(stage)`` writes every file into a fresh hidden staging folder inside
    ``out_dir`` (same file system) and returns their paths; they are fsynced, then each is renamed over its
    name in ``out_dir``. Guarantee: each file is at every moment wholly old or wholly new; a crash while
    ``write`` runs (all the slow work) leaves every old file untouched; only a crash inside the final loop of
    renames (microseconds, no computation) can leave the set mixed, and the next publish replaces it whole.
    Files of ``out_dir`` that ``write`` does not produce (e.g. a records folder inside it) are never touched.
    Stale staging folders of killed writers are removed first; callers serialise writers (``folder_lock``)."""
    from ..errors import UserError

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob(".publish-*"):
        shutil.rmtree(stale, ignore_errors=True)
    stage = Path(tempfile.mkdtemp(prefix=".publish-", dir=out_dir))
    try:
        staged = write(stage)
        targets = [out_dir / p.relative_to(stage) for p in staged]
        for target in targets:
            if target.exists() and not target.is_file():
                raise UserError(f"cannot write {target}: a folder of that name is in the way")
        for path in staged:
            with open(path, "rb+") as fh:
                os.fsync(fh.fileno())
        for path, target in zip(staged, targets):
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
        _fsync_dir(out_dir)
        return targets
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def check_can_create_dir(path: str | os.PathLike) -> Path:
    """UserError unless ``path`` is a writable folder or could be created as one; creates nothing (so a
    run can fail fast, before any download, without leaving an empty folder behind)."""
    from ..errors import UserError

    path = Path(path)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing == path and not path.is_dir():
        raise UserError(f"output folder {path} is not a folder")
    if not existing.is_dir():
        raise UserError(f"cannot create output folder {path}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"output folder {path} is not writable" if existing == path else
                        f"cannot create output folder {path}: {existing} is not writable")
    return path


def ensure_writable_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` if needed and check it is a writable directory; raise UserError if not."""
    from ..errors import UserError

    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create output folder {path}: {exc.strerror}") from None
    if not path.is_dir() or not os.access(path, os.W_OK):
        raise UserError(f"output folder {path} is not writable")
    return path
