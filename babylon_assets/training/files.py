"""Folders that appear complete or not at all: written aside, fsynced, then renamed into place."""

import errno
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

from babylon_assets.errors import BabylonError

# Enough to fail where the write that failed did, when a library hid the OS error (see _probe).
PROBE_BYTES = 1 << 20


class StorageError(BabylonError):
    """Files could not be written for a reason a person fixes: a full disk, a read-only folder, permissions."""


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _existing(folder: Path) -> Path:
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def _probe(folder: Path) -> OSError | None:
    """The OS error writing in `folder` gives now, or None when writing works.

    Workaround for torch 2.13: torch.save turns a failed write into `RuntimeError: [enforce fail at
    inline_container.cc] unexpected pos`, dropping the OS error; writing a probe file recovers it.
    """
    probe = _existing(folder) / f".babylon-probe-{uuid.uuid4().hex}"
    try:
        with open(probe, "wb") as handle:
            handle.write(b"\0" * PROBE_BYTES)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as error:
        return error
    finally:
        probe.unlink(missing_ok=True)
    return None


def storage_message(error: OSError, folder: Path) -> str | None:
    """What a person reads for a write that failed in `folder`, or None for an error of another kind."""
    usage = shutil.disk_usage(_existing(folder))
    free = f"{_size(usage.free)} free of {_size(usage.total)}"
    move = "or set BABYLON_HOME to a folder on a disk with room, then run again"
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"no space left on {folder} ({free}); free some space (e.g. old checkpoints there) {move}"
    if error.errno == errno.EFBIG:
        return f"a file in {folder} hit the file size limit (`ulimit -f`, {free}); raise the limit {move}"
    if error.errno == errno.EROFS:
        return f"cannot write in {folder}: the file system is read-only; remount it writable {move}"
    if error.errno in (errno.EACCES, errno.EPERM):
        return f"cannot write in {folder}: permission denied; give this user write access {move}"
    return None


def _fsync_tree(root: Path) -> None:
    for folder, _, names in os.walk(root):
        for name in names:
            with open(Path(folder) / name, "rb") as handle:
                os.fsync(handle.fileno())
        _fsync_dir(Path(folder))


def _fsync_dir(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_folder_atomically(target: Path, write: Callable[[Path], None]) -> Path:
    """Call `write(temporary_folder)`, make it durable, then rename it to `target`.

    A folder already at `target` is replaced: callers only reach this for a folder that nothing
    references (e.g. a checkpoint written by a run that crashed before registering it). A full disk,
    a read-only folder or missing permissions raise StorageError naming the folder and the free space.
    """
    try:
        return _write_folder_atomically(target, write)
    except (OSError, RuntimeError) as error:
        cause = error if isinstance(error, OSError) else _probe(target.parent)
        message = None if cause is None else storage_message(cause, target.parent)
        if message is None:
            raise
        raise StorageError(message) from error


def _write_folder_atomically(target: Path, write: Callable[[Path], None]) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    # Leftovers of a writer of this target that was killed mid-write (callers serialise writers).
    for leftover in target.parent.glob(f".{target.name}.*-*"):
        shutil.rmtree(leftover)
    temporary = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex}"
    temporary.mkdir()
    try:
        write(temporary)
        _fsync_tree(temporary)
        if target.exists():
            stale = target.parent / f".{target.name}.stale-{uuid.uuid4().hex}"
            target.rename(stale)
            shutil.rmtree(stale)
        temporary.rename(target)
        _fsync_dir(target.parent)
    finally:
        if temporary.exists():
            shutil.rmtree(temporary)
    return target
