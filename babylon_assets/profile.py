"""The deployment profile: a deliberate, announced choice between local and production parts.

`local`: embedded PostgreSQL unless DATABASE_URL is set, the outcome judge (no LLM), the torch
trainer on CPU with a tiny model built from a config, W&B offline.
`local-llm`: the local profile with the RULER judge against SmolLM2-135M served by xllamacpp on
127.0.0.1 (started by the platform; no key, no download).
`production`: DATABASE_URL required, the RULER judge over HTTP, the configured trainer backend,
W&B online with WANDB_API_KEY. Nothing ever falls back from one to the other.
"""

import sys
from typing import Literal, get_args

from babylon_assets.settings import SettingsReader

Profile = Literal["local", "local-llm", "production"]
PROFILE_ENV = "BABYLON_PROFILE"

_announced: set[Profile] = set()


def active_profile() -> Profile:
    """BABYLON_PROFILE, `local` when unset (announced once on stderr); anything else is an error."""
    settings = SettingsReader()
    if settings.value(PROFILE_ENV) is None:
        if "local" not in _announced:
            _announced.add("local")
            print(
                f"babylon: {PROFILE_ENV} is not set; using the local profile "
                "(outcome judge, CPU torch trainer, W&B offline)",
                file=sys.stderr,
            )
        return "local"
    choices: tuple[Profile, ...] = get_args(Profile)
    profile = settings.choice(PROFILE_ENV, choices, None)
    settings.check()
    return profile
