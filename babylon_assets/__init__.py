"""Babylon training platform: trajectories -> validated windows -> judge scores -> policy checkpoints."""

import os

# LiteLLM downloads its model cost map from GitHub when imported unless told otherwise; the platform
# never downloads at run time, and the map shipped with the pinned version is the one we want. Every
# import of litellm (through art, by the judge or the trainer) happens below this package.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
