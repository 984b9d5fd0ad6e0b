"""Where the platform keeps its local files: one project folder, `BABYLON_HOME` (default `.babylon`)."""

import os
from pathlib import Path

BABYLON_HOME_ENV = "BABYLON_HOME"


def babylon_home() -> Path:
    """The project-local, git-ignored folder for the embedded database, the Dagster instance, models,
    checkpoints and W&B runs."""
    return Path(os.environ.get(BABYLON_HOME_ENV, ".babylon")).resolve()
