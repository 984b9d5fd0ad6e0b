"""How the local-llm judge's server runs, as a plain model without xllamacpp: `babylon judge serve`'s flags,
the judge resource and judging/local_llm.py read these fields, so each default is written once and
`babylon --help` does not load the server's code."""

from pydantic import BaseModel, ConfigDict, Field

# Where `babylon judge serve` listens unless told otherwise (a run's own server takes a free port, `port`'s
# default): a fixed port that BABYLON_JUDGE_API_BASE can name.
SERVE_PORT = 8765


class LocalJudgeSettings(BaseModel):
    """How the server runs, and the RULER settings that fit its context."""

    model_config = ConfigDict(frozen=True)

    port: int = Field(default=0, ge=0, le=65535, description="port on 127.0.0.1; 0: a free one chosen by the system")
    context_tokens: int = Field(default=8192, ge=512, description="at most SmolLM2's training context, 8192")
    threads: int = Field(default=1, ge=1, description="llama.cpp threads; on a busy 2-core machine 1 is sane")
    max_reply_tokens: int = Field(default=384, ge=16, description="the server's cap on one answer's length")
    start_timeout_seconds: float = Field(default=60.0, gt=0)
    # A call's prompt is processed at 50-150 tokens/s on one busy core.
    request_timeout_seconds: float = Field(default=300.0, gt=0)
    # What RULER may put in one call: prompt and answer must fit `context_tokens`. The budgets count
    # tiktoken tokens, and SmolLM2's tokenizer (one token per digit) needs about 3 times as many for RULER's
    # JSON of market prompts (5 x 400 came to 6,200); a prompt is processed at 50-150 tokens/s on one busy
    # core, so a window of 5 agents is one call of about a minute.
    group_size: int = Field(default=5, ge=1)
    max_trajectory_tokens: int = Field(default=250, ge=100)
    max_group_tokens: int = Field(default=1250, ge=100)
