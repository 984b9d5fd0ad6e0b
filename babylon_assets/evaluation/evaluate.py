"""Closed-loop evaluation of a registered checkpoint: the base model, the checkpoint, the best checkpoint
before it and every scripted strategy play the same seeded, never-trained-on markets; the results are
compared pairwise over those markets and stored in PostgreSQL (policy_evaluations, policy_evaluation_results).
"""

import gc
import math
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import torch
from peft import PeftModel
from pydantic import BaseModel, ConfigDict
from scipy import stats

from babylon_assets.db.connection import Conn, connect
from babylon_assets.errors import BabylonError, ConfigurationError
from babylon_assets.evaluation.market_play import (
    EVALUATION_EPOCH,
    EpisodeResult,
    Reply,
    Respond,
    evaluation_market,
    persona,
    play_market,
    reply_schema,
    scripted_pnl,
)
from babylon_assets.evaluation.settings import EvaluationSettings
from babylon_assets.simulation.strategies import STRATEGIES
from babylon_assets.training.hf_policy import (
    JsonSchemaDecoding,
    generate_reply,
    load_base_model,
    load_tokenizer,
    resolve_base_model,
    undo_art_mask_patch,
)
from babylon_assets.training.torch_backend import MODEL_FOLDER, STATE_FILE, TrainerState
from babylon_assets.trajectories.messages import ChatMessage

BASE = "base"
CHECKPOINT = "checkpoint"
BEST = "best"
SCRIPTED_PREFIX = "scripted:"


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, allow_inf_nan=False)


class PairedComparison(Frozen):
    """candidate - reference over the same markets."""

    mean_difference: float
    # 95% t-interval of the mean difference; None with a single market.
    ci_low: float | None
    ci_high: float | None
    # One-sided paired t-test that the candidate is better.
    p_value: float
    win_rate: float


class PolicyScore(Frozen):
    policy: str
    checkpoint_id: int | None
    market_pnls: list[float]
    mean_pnl: float
    vs_base: PairedComparison | None
    invalid_rate: float | None
    tokens_per_second: float | None
    sample_reply: str | None


class EvaluationResult(Frozen):
    evaluation_id: int
    model_name: str
    step: int
    checkpoint_id: int
    best_before: int | None  # the best checkpoint's id when the evaluation began (None: there was none)
    settings: EvaluationSettings
    policies: list[PolicyScore]
    seconds: float

    def score(self, policy: str) -> PolicyScore:
        return next(score for score in self.policies if score.policy == policy)


def paired_comparison(candidate: Sequence[float], reference: Sequence[float]) -> PairedComparison:
    differences = [a - b for a, b in zip(candidate, reference, strict=True)]
    count = len(differences)
    mean = sum(differences) / count
    win_rate = sum(1.0 if d > 0 else 0.5 if d == 0 else 0.0 for d in differences) / count
    spread = stats.tstd(differences) if count > 1 else math.nan
    if count < 2 or spread == 0:
        # No spread: the difference is the same in every market, so it is certain in sign (or zero).
        low = high = mean if count > 1 else None
        return PairedComparison(
            mean_difference=mean, ci_low=low, ci_high=high, p_value=0.0 if mean > 0 else 1.0, win_rate=win_rate
        )
    half = float(stats.t.ppf(0.975, count - 1)) * float(spread) / math.sqrt(count)
    p_value = float(stats.ttest_rel(candidate, reference, alternative="greater").pvalue)
    return PairedComparison(
        mean_difference=mean, ci_low=mean - half, ci_high=mean + half, p_value=p_value, win_rate=win_rate
    )


def _responder(model: torch.nn.Module, folder: Path, settings: EvaluationSettings) -> Respond:
    tokenizer = load_tokenizer(folder)
    decoding = JsonSchemaDecoding(tokenizer, reply_schema()) if settings.decoding == "json-schema" else None

    def respond(messages: Sequence[ChatMessage]) -> Reply:
        reply = generate_reply(model, tokenizer, messages, settings.max_new_tokens, decoding)
        return Reply(text=reply.text, tokens=reply.tokens, seconds=reply.seconds)

    return respond


def load_checkpoint_policy(base_path: Path, location: Path) -> torch.nn.Module:
    """A torch checkpoint's weights for inference; LoRA adapters are merged into the base."""
    if not (location / STATE_FILE).is_file():
        raise BabylonError(
            f"checkpoint folder {location} has no {STATE_FILE}; restore it (checkpoints are never deleted)"
        )
    state = TrainerState.model_validate_json((location / STATE_FILE).read_text())
    if not state.lora:
        return load_base_model(location / MODEL_FOLDER)
    adapted = PeftModel.from_pretrained(load_base_model(base_path), location / MODEL_FOLDER)
    merged: torch.nn.Module = adapted.merge_and_unload()
    return merged


def play_policy(model: torch.nn.Module, tokenizer_folder: Path, settings: EvaluationSettings) -> list[EpisodeResult]:
    """`model` plays the settings' markets (the same for every policy) as the settings' persona."""
    respond = _responder(model, tokenizer_folder, settings)
    agent = persona(settings.persona)
    return [
        play_market(respond, market, window_id, agent, settings.decisions)
        for window_id, market in (evaluation_market(settings.seed, index) for index in range(settings.markets))
    ]


class _Checkpoint(Frozen):
    id: int
    step: int
    location: str
    base_model: str
    backend: str


def _checkpoint(conn: Conn, model_name: str, step: int | None) -> _Checkpoint:
    row = conn.execute(
        "SELECT c.id, c.step, c.location, m.base_model, m.backend FROM policy_checkpoints AS c "
        "JOIN policy_models AS m ON m.name = c.model_name WHERE c.model_name = %s AND (%s::int IS NULL OR c.step = %s) "
        "ORDER BY c.step DESC LIMIT 1",
        (model_name, step, step),
    ).fetchone()
    if row is None:
        which = "any checkpoint" if step is None else f"step {step}"
        raise BabylonError(f"model {model_name!r} has no {which}; train it first (`babylon train`)")
    return _Checkpoint(id=row[0], step=row[1], location=row[2], base_model=row[3], backend=row[4])


def _best_id(conn: Conn, model_name: str) -> tuple[int, str] | None:
    row = conn.execute(
        "SELECT c.id, c.location FROM best_checkpoints AS b JOIN policy_checkpoints AS c ON c.id = b.checkpoint_id "
        "WHERE b.model_name = %s",
        (model_name,),
    ).fetchone()
    return None if row is None else (row[0], row[1])


def model_score(
    policy: str, checkpoint_id: int | None, episodes: Sequence[EpisodeResult], base: Sequence[float] | None
) -> PolicyScore:
    pnls = [episode.pnl for episode in episodes]
    seconds = sum(episode.seconds for episode in episodes)
    return PolicyScore(
        policy=policy,
        checkpoint_id=checkpoint_id,
        market_pnls=pnls,
        mean_pnl=sum(pnls) / len(pnls),
        vs_base=None if base is None else paired_comparison(pnls, base),
        invalid_rate=sum(e.invalid for e in episodes) / sum(e.decisions for e in episodes),
        tokens_per_second=sum(e.tokens for e in episodes) / seconds if seconds > 0 else None,
        sample_reply=episodes[0].first_reply,
    )


def evaluate_checkpoint(
    url: str, model_name: str, step: int | None, settings: EvaluationSettings, *, models_root: Path
) -> EvaluationResult:
    """Evaluate `model_name`'s checkpoint `step` (default: the latest) closed-loop and store the result."""
    started = time.perf_counter()
    with connect(url) as conn:
        checkpoint = _checkpoint(conn, model_name, step)
        best = _best_id(conn, model_name)
        used = conn.execute(
            "SELECT count(*) FROM checkpoint_windows AS w JOIN policy_checkpoints AS c ON c.id = w.checkpoint_id "
            "WHERE c.model_name = %s AND w.window_id >= %s AND w.window_id < %s",
            (model_name, EVALUATION_EPOCH, EVALUATION_EPOCH + timedelta(hours=settings.markets)),
        ).fetchone()
    if checkpoint.backend != "torch":
        raise ConfigurationError(
            f"model {model_name!r} is trained by backend {checkpoint.backend!r}, whose policy cannot be run here; "
            "its promotion uses the held-out margin"
        )
    if used is not None and used[0]:
        raise BabylonError(
            f"model {model_name!r} was trained on windows dated where the evaluation markets are "
            f"({EVALUATION_EPOCH:%Y-%m-%d} on); evaluate a model that was not"
        )
    markets = [evaluation_market(settings.seed, index) for index in range(settings.markets)]
    undo_art_mask_patch()
    base_path = resolve_base_model(checkpoint.base_model, models_root)
    base_episodes = play_policy(load_base_model(base_path), base_path, settings)
    base_pnls = [episode.pnl for episode in base_episodes]
    scores = [model_score(BASE, None, base_episodes, None)]
    played: list[tuple[str, int, str]] = [(CHECKPOINT, checkpoint.id, checkpoint.location)]
    if best is not None and best[0] != checkpoint.id:
        played.append((BEST, best[0], best[1]))
    for name, checkpoint_id, location in played:
        gc.collect()  # one model in memory at a time
        episodes = play_policy(load_checkpoint_policy(base_path, Path(location)), base_path, settings)
        scores.append(model_score(name, checkpoint_id, episodes, base_pnls))
    for index, strategy in enumerate(STRATEGIES):
        pnls = [scripted_pnl(index, market, window_id, settings.seed) for window_id, market in markets]
        scores.append(
            PolicyScore(
                policy=f"{SCRIPTED_PREFIX}{strategy.name}",
                checkpoint_id=None,
                market_pnls=pnls,
                mean_pnl=sum(pnls) / len(pnls),
                vs_base=paired_comparison(pnls, base_pnls),
                invalid_rate=None,
                tokens_per_second=None,
                sample_reply=None,
            )
        )
    evaluation_id = store_evaluation(url, checkpoint.id, settings, scores)
    return EvaluationResult(
        evaluation_id=evaluation_id,
        model_name=model_name,
        step=checkpoint.step,
        checkpoint_id=checkpoint.id,
        best_before=None if best is None else best[0],
        settings=settings,
        policies=scores,
        seconds=time.perf_counter() - started,
    )


def store_evaluation(url: str, checkpoint_id: int, settings: EvaluationSettings, scores: Sequence[PolicyScore]) -> int:
    with connect(url) as conn, conn.transaction():
        row = conn.execute(
            "INSERT INTO policy_evaluations (checkpoint_id, seed, markets, decisions, persona, max_new_tokens, "
            "decoding) VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
            (
                checkpoint_id,
                settings.seed,
                settings.markets,
                settings.decisions,
                settings.persona,
                settings.max_new_tokens,
                settings.decoding,
            ),
        ).fetchone()
        if row is None:
            raise BabylonError(f"storing the evaluation of checkpoint {checkpoint_id} returned no id")
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO policy_evaluation_results (evaluation_id, policy, policy_checkpoint_id, market_pnls, "
                "mean_pnl, diff_ci_low, diff_ci_high, win_rate, invalid_rate, tokens_per_second) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                [
                    (
                        row[0],
                        score.policy,
                        score.checkpoint_id,
                        score.market_pnls,
                        score.mean_pnl,
                        None if score.vs_base is None else score.vs_base.ci_low,
                        None if score.vs_base is None else score.vs_base.ci_high,
                        None if score.vs_base is None else score.vs_base.win_rate,
                        score.invalid_rate,
                        score.tokens_per_second,
                    )
                    for score in scores
                ],
            )
    evaluation_id: int = row[0]
    return evaluation_id


def render_evaluation(result: EvaluationResult) -> str:
    """One line per policy: mean P&L, its paired difference to the base with the 95% CI, win rate, invalid
    replies, tokens/s."""
    lines = [
        f"model {result.model_name} step {result.step}: {result.settings.markets} market(s) of "
        f"{result.settings.decisions} decision(s), seed {result.settings.seed}, persona {result.settings.persona}, "
        f"{result.settings.decoding} decoding",
        f"{'policy':<22} {'mean P&L':>9} {'vs base (95% CI)':>28} {'p':>6} {'win':>5} {'invalid':>8} {'tok/s':>6}",
    ]
    for score in result.policies:
        comparison = score.vs_base
        if comparison is None:
            versus, p_value, win = "", "", ""
        else:
            interval = (
                ""
                if comparison.ci_low is None or comparison.ci_high is None
                else f" [{comparison.ci_low:+.2f}, {comparison.ci_high:+.2f}]"
            )
            versus = f"{comparison.mean_difference:+.2f}{interval}"
            p_value, win = f"{comparison.p_value:.3f}", f"{comparison.win_rate:.2f}"
        invalid = "" if score.invalid_rate is None else f"{score.invalid_rate:.2f}"
        speed = "" if score.tokens_per_second is None else f"{score.tokens_per_second:.1f}"
        lines.append(
            f"{score.policy:<22} {score.mean_pnl:>+9.2f} {versus:>28} {p_value:>6} {win:>5} {invalid:>8} {speed:>6}"
        )
    lines.append(f"evaluation {result.evaluation_id} stored; {result.seconds:.0f} s")
    return "\n".join(lines)
