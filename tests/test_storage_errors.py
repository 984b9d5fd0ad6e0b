"""Errors a person can act on: a full disk or a read-only folder names the path, the free space and
what to do, and that explanation (not the library's) is what a failed run reports."""

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import torch

from babylon_assets.tools.train_run import failure_reason
from babylon_assets.training.files import StorageError, write_folder_atomically
from babylon_assets.training.train import TrainingFailedError


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs: a real file system that fills up."""
    mount = tmp_path / "disk"
    mount.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def save_big_tensor(folder: Path) -> None:
    torch.save(torch.zeros(1_000_000), folder / "weights.pt")  # 4 MB


def test_a_full_disk_names_the_path_the_free_space_and_what_to_do(tiny_disk: Path) -> None:
    target = tiny_disk / "checkpoints" / "step-1"
    with pytest.raises(StorageError) as raised:
        write_folder_atomically(target, save_big_tensor)
    message = str(raised.value)
    assert f"no space left on {tiny_disk / 'checkpoints'}" in message
    assert "free of" in message and "BABYLON_HOME" in message
    assert "inline_container" not in message
    assert not target.exists()


def test_a_read_only_folder_is_named(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        # root writes through permission bits; a read-only bind mount is what stops it.
        folder = tmp_path / "ro"
        folder.mkdir()
        subprocess.run(["mount", "--bind", str(folder), str(folder)], check=True)
        subprocess.run(["mount", "-o", "remount,bind,ro", str(folder)], check=True)
    else:
        folder = tmp_path / "ro"
        folder.mkdir(mode=0o555)
    try:
        with pytest.raises(StorageError, match=rf"cannot write in {folder}: .*read-only"):
            write_folder_atomically(folder / "step-1", save_big_tensor)
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", "-l", str(folder)], check=True)


def test_a_failed_run_reports_the_projects_explanation_not_the_library_cause() -> None:
    @dg.op
    def train_step() -> None:
        try:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")
        except RuntimeError as error:
            raise TrainingFailedError(f"step 3 failed ({error}); no space left on /x: 0 B free") from error

    @dg.job(name=f"job_{uuid.uuid4().hex[:6]}")
    def one_step() -> None:
        train_step()

    result = one_step.execute_in_process(raise_on_error=False)
    assert failure_reason(result).startswith("train_step: step 3 failed (")
    assert "no space left on /x" in failure_reason(result)
