"""Promotion on evidence: `best` moves only to a checkpoint that beat the current best on the same markets."""

from pathlib import Path

import dagster as dg
import pytest

from babylon_assets.db.connection import connect
from babylon_assets.errors import BabylonError
from babylon_assets.evaluation.assets import EvaluationConfig, policy_evaluation, promotion_check
from babylon_assets.evaluation.evaluate import (
    PolicyScore,
    paired_comparison,
    store_evaluation,
)
from babylon_assets.evaluation.promotion import decide_promotion, promote
from babylon_assets.evaluation.settings import EvaluationSettings
from babylon_assets.training import registry
from babylon_assets.training.types import CheckpointRef, PolicySpec, StepOutcome
from resources.database import DatabaseResource
from resources.trainer import TrainerResource
from resources.wandb import WandbResource
from tests.support.training import register_without_lineage
from tests.test_evaluation import register_tiny_checkpoint

POLICY = PolicySpec(name="policy", base_model="tiny", project="test", backend="torch")
SETTINGS = EvaluationSettings(markets=4)


def _register(url: str, step: int, backend: str = "torch", margin: float | None = None) -> int:
    policy = POLICY.model_copy(update={"backend": backend})
    outcome = StepOutcome(
        step=step, metrics={}, checkpoint=CheckpointRef(backend=policy.backend, step=step, location=f"/x/{step}")
    )
    with connect(url, autocommit=True) as conn:
        registry.ensure_policy_model(conn, policy)
        lease = registry.lock_model(conn, policy.name)
        return register_without_lineage(
            conn, policy, outcome, lease, eval_margin_before=0.0, eval_margin_after=margin, eval_windows=1
        )


def _score(policy: str, checkpoint_id: int | None, pnls: list[float], base: list[float]) -> PolicyScore:
    return PolicyScore(
        policy=policy,
        checkpoint_id=checkpoint_id,
        market_pnls=pnls,
        mean_pnl=sum(pnls) / len(pnls),
        vs_base=paired_comparison(pnls, base),
        invalid_rate=0.0,
        tokens_per_second=10.0,
        sample_reply="{}",
    )


def _best(url: str) -> tuple[int, str, dict[str, object]] | None:
    with connect(url) as conn:
        row = conn.execute("SELECT checkpoint_id, promoted_on, evidence FROM best_checkpoints").fetchone()
    return None if row is None else (row[0], row[1], row[2])


def test_a_better_candidate_is_promoted_and_a_worse_one_is_kept_but_not(store_url: str) -> None:
    base = [0.0, 1.0, -1.0, 0.5]
    first = _register(store_url, 1)
    store_evaluation(
        store_url,
        first,
        SETTINGS,
        [_score("base", None, base, base), _score("checkpoint", first, [5.0, 6.5, 4.0, 6.0], base)],
    )
    with connect(store_url, autocommit=True) as conn:
        decision = decide_promotion(conn, "policy", alpha=0.05)
        assert decision.promote and decision.incumbent_id is None and decision.evidence["against"] == "base"
        promote(conn, "policy", decision)
    best = _best(store_url)
    assert best is not None and best[0] == first and best[1] == "closed-loop evaluation"
    p_value = best[2]["p_value"]  # the numbers it was promoted on are kept with it
    assert isinstance(p_value, float) and p_value < 0.05

    second = _register(store_url, 2)
    store_evaluation(
        store_url,
        second,
        SETTINGS,
        [
            _score("base", None, base, base),
            _score("best", first, [5.0, 6.5, 4.0, 6.0], base),
            _score("checkpoint", second, [4.0, 6.0, 3.0, 6.1], base),
        ],
    )
    with connect(store_url, autocommit=True) as conn:
        refused = decide_promotion(conn, "policy", alpha=0.05)
        assert not refused.promote and refused.incumbent_id == first and refused.evidence["against"] == "best"
        # Better than the base is not enough: it had to beat the best.
        assert "P&L vs best -0.60" in refused.reason
        with pytest.raises(BabylonError, match="not found better"):
            promote(conn, "policy", refused)
    assert _best(store_url) == best
    # The worse checkpoint stays registered and visible.
    with connect(store_url) as conn:
        assert [row[0] for row in conn.execute("SELECT step FROM policy_checkpoints ORDER BY step")] == [1, 2]


def test_a_checkpoint_without_an_evaluation_is_not_promoted(store_url: str) -> None:
    _register(store_url, 1)
    with connect(store_url, autocommit=True) as conn, pytest.raises(BabylonError, match="babylon evaluate"):
        decide_promotion(conn, "policy", alpha=0.05)


def test_backends_that_cannot_be_played_are_promoted_on_the_held_out_margin(store_url: str) -> None:
    first = _register(store_url, 1, backend="art-serverless", margin=0.2)
    with connect(store_url, autocommit=True) as conn:
        decision = decide_promotion(conn, "policy", alpha=0.05)
        assert decision.promote and decision.basis == "held-out margin"
        promote(conn, "policy", decision)
        _register(store_url, 2, backend="art-serverless", margin=0.1)
        assert not decide_promotion(conn, "policy", alpha=0.05).promote
    assert _best(store_url) is not None and _best(store_url)[0] == first  # type: ignore[index]


def test_the_blocking_check_refuses_a_checkpoint_no_better_than_the_base(
    database_url: str, store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("BABYLON_HOME", str(home))
    monkeypatch.setenv("DATABASE_URL", database_url)
    register_tiny_checkpoint(store_url, tmp_path, home)
    result = dg.materialize(
        [policy_evaluation, promotion_check],
        resources={
            "database": DatabaseResource(),
            "trainer": TrainerResource(model_name="policy"),
            "wandb": WandbResource(directory=str(tmp_path / "wandb"), project="babylon-test"),
        },
        run_config=dg.RunConfig(ops={"policy_evaluation": EvaluationConfig(markets=2, decisions=1, max_new_tokens=4)}),
        raise_on_error=False,
    )
    [check] = result.get_asset_check_evaluations()
    # The random tiny model holds every time, exactly like the base: no evidence, no promotion.
    assert not check.passed and check.metadata["promoted"] == dg.MetadataValue.bool(False)
    [materialization] = result.get_asset_materialization_events()
    assert materialization.materialization.metadata["markets"] == dg.MetadataValue.int(2)
    assert _best(store_url) is None
