"""Scoring accepted trajectories: the RULER judge, the outcome judge, and what they store."""

import os

# LiteLLM downloads its model cost map from GitHub at import unless told otherwise; the platform
# never downloads at run time, and the cost map shipped with the pinned version is the one we want.
# This must run before anything imports litellm (art does), hence the package's __init__.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
