"""Folders that appear complete or not at all: written aside, fsynced, then renamed into place."""

import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path


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
    references (e.g. a checkpoint written by a run that crashed before registering it).
    """
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
