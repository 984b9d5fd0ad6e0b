"""Promotion on evidence: the `best` pointer moves to a candidate checkpoint only when it beats the current
best (the base model when there is none) on the closed-loop evaluation with a one-sided paired test, or, for
backends whose policy cannot be run here, on the held-out margin."""

from typing import Literal

from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict, Field, JsonValue

from babylon_assets.db.connection import Conn
from babylon_assets.errors import BabylonError
from babylon_assets.evaluation.evaluate import BASE, BEST, CHECKPOINT, paired_comparison
from babylon_assets.training.publish import PublishTarget, publish_promotion

Basis = Literal["closed-loop evaluation", "held-out margin"]


class PromotionDecision(BaseModel):
    model_config = ConfigDict(frozen=True, allow_inf_nan=False)

    promote: bool
    basis: Basis
    candidate_id: int
    candidate_step: int
    # The best checkpoint the candidate was compared with (None: there was none, compared with the base).
    incumbent_id: int | None
    reason: str
    evidence: dict[str, JsonValue] = Field(default_factory=dict)


def _latest_checkpoint(conn: Conn, model_name: str) -> tuple[int, int, str, float | None, float | None]:
    row = conn.execute(
        "SELECT id, step, backend, eval_margin_before, eval_margin_after FROM policy_checkpoints "
        "WHERE model_name = %s ORDER BY step DESC LIMIT 1",
        (model_name,),
    ).fetchone()
    if row is None:
        raise BabylonError(f"model {model_name!r} has no checkpoint to promote; train it first")
    return row[0], row[1], row[2], row[3], row[4]


def _current_best(conn: Conn, model_name: str) -> tuple[int, float | None] | None:
    row = conn.execute(
        "SELECT b.checkpoint_id, c.eval_margin_after FROM best_checkpoints AS b "
        "JOIN policy_checkpoints AS c ON c.id = b.checkpoint_id WHERE b.model_name = %s",
        (model_name,),
    ).fetchone()
    return None if row is None else (row[0], row[1])


def decide_promotion(conn: Conn, model_name: str, *, alpha: float) -> PromotionDecision:
    """Whether the model's latest checkpoint should become its best, and on what evidence."""
    candidate_id, step, backend, margin_before, margin_after = _latest_checkpoint(conn, model_name)
    best = _current_best(conn, model_name)
    incumbent = None if best is None else best[0]
    if incumbent == candidate_id:
        return PromotionDecision(
            promote=False,
            basis="closed-loop evaluation" if backend == "torch" else "held-out margin",
            candidate_id=candidate_id,
            candidate_step=step,
            incumbent_id=incumbent,
            reason=f"step {step} is already the best checkpoint",
        )
    if backend != "torch":
        reference_margin = margin_before if best is None else best[1]
        better = margin_after is not None and (reference_margin is None or margin_after > reference_margin)
        against = "the margin before this step" if best is None else "the best checkpoint's margin"
        return PromotionDecision(
            promote=better,
            basis="held-out margin",
            candidate_id=candidate_id,
            candidate_step=step,
            incumbent_id=incumbent,
            reason=f"held-out margin {margin_after} vs {against} {reference_margin}",
            evidence={"candidate_margin": margin_after, "reference_margin": reference_margin},
        )
    row = conn.execute(
        "SELECT id FROM policy_evaluations WHERE checkpoint_id = %s ORDER BY id DESC LIMIT 1", (candidate_id,)
    ).fetchone()
    if row is None:
        raise BabylonError(
            f"checkpoint step {step} of {model_name!r} has no closed-loop evaluation; materialize policy_evaluation "
            f"or run `babylon evaluate --model {model_name} --step {step}`"
        )
    pnls = {
        policy: (checkpoint_id, list(market_pnls))
        for policy, checkpoint_id, market_pnls in conn.execute(
            "SELECT policy, policy_checkpoint_id, market_pnls FROM policy_evaluation_results WHERE evaluation_id = %s",
            (row[0],),
        )
    }
    reference_name = BASE if best is None else BEST
    played = pnls.get(reference_name)
    if played is None or (best is not None and played[0] != incumbent):
        raise BabylonError(
            f"the latest evaluation of step {step} did not play the current best checkpoint (the best moved "
            f"since); run `babylon evaluate --model {model_name} --step {step}` again"
        )
    comparison = paired_comparison(pnls[CHECKPOINT][1], played[1])
    better = comparison.mean_difference > 0 and comparison.p_value < alpha
    return PromotionDecision(
        promote=better,
        basis="closed-loop evaluation",
        candidate_id=candidate_id,
        candidate_step=step,
        incumbent_id=incumbent,
        reason=(
            f"P&L vs {reference_name} {comparison.mean_difference:+.2f} per market over {len(played[1])} "
            f"market(s), one-sided paired p = {comparison.p_value:.3f} ({'<' if better else 'not <'} {alpha} "
            "with a positive difference)"
        ),
        evidence={"evaluation_id": row[0], "against": reference_name, **comparison.model_dump()},
    )


def promote(conn: Conn, model_name: str, decision: PromotionDecision, publish_to: PublishTarget | None = None) -> None:
    """Move the `best` pointer to the decided candidate, unless another promotion moved it meanwhile; with
    `publish_to` (BABYLON_PUBLISH=1) the game's rows are written in the same transaction."""
    if not decision.promote:
        raise BabylonError(f"step {decision.candidate_step} was not found better ({decision.reason}); not promoted")
    with conn.transaction():
        margin = conn.execute(
            "SELECT eval_margin_after FROM policy_checkpoints WHERE id = %s", (decision.candidate_id,)
        ).fetchone()
        moved = conn.execute(
            """
            INSERT INTO best_checkpoints (model_name, checkpoint_id, eval_margin, promoted_on, evidence)
            VALUES (%s, %s, %s, %s, %s)
            ON CONFLICT (model_name) DO UPDATE
            SET checkpoint_id = EXCLUDED.checkpoint_id, eval_margin = EXCLUDED.eval_margin,
                promoted_on = EXCLUDED.promoted_on, evidence = EXCLUDED.evidence, updated_at = now()
            WHERE best_checkpoints.checkpoint_id = %s
            """,
            (
                model_name,
                decision.candidate_id,
                None if margin is None else margin[0],
                decision.basis,
                Jsonb({"reason": decision.reason, **decision.evidence}),
                decision.incumbent_id,
            ),
        ).rowcount
        if moved != 1:
            raise BabylonError(f"the best checkpoint of {model_name!r} changed during promotion; run the check again")
        if publish_to is not None:
            publish_promotion(conn, publish_to, decision.candidate_id, {"reason": decision.reason, **decision.evidence})
