"""SmolLM2-135M-Instruct converted once per test worker (about 4 s), shared by the tests that need it."""

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

from babylon_assets.training.hf_policy import SMOLLM2, resolve_base_model


@functools.cache
def smollm2_models_root() -> Path:
    """A models root holding the converted folder; removed when the test session ends."""
    root = Path(tempfile.mkdtemp(prefix="babylon-test-models-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    resolve_base_model(SMOLLM2, root)
    return root
