"""train_policy against real PostgreSQL: lineage, resume, crash safety, held-out margins, the asset."""

import asyncio
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import psycopg
import pytest
from psycopg import sql

from babylon_assets.db.connection import connect, run_with_connection
from babylon_assets.errors import ConfigurationError
from babylon_assets.evaluation.promotion import PromotionDecision, promote
from babylon_assets.metadata import MISSING
from babylon_assets.simulation.writer import simulate
from babylon_assets.tools.cli import main
from babylon_assets.training import metric_names, registry
from babylon_assets.training.assets import trained_checkpoint
from babylon_assets.training.config import TrainingConfig
from babylon_assets.training.data import dropout_rate, eligible_windows, load_scored_trajectories
from babylon_assets.training.lineage import checkpoint_lineage
from babylon_assets.training.publish import publish_target
from babylon_assets.training.train import NoTrainableWindowsError, train_policy
from babylon_assets.training.types import CheckpointRef, PolicySpec, ScoredGroup, ScoredTrajectory, StepOutcome
from babylon_assets.trajectories.models import lookback_start
from resources.database import DatabaseResource
from resources.trainer import TrainerResource
from resources.wandb import WandbResource
from tests.support.trajectory_rows import ingest_and_validate

WINDOWS = 4
AGENTS = 5
SECRET = "wandb-test-key-not-real-0123456789"


def score_windows(url: str, windows: list[datetime]) -> None:
    """Stand-in for the judge: within each window, scores 0, 0.25, ... 1 by agent id."""
    with connect(url) as conn:
        for window_id in windows:
            rows = conn.execute(
                "SELECT trajectory_id FROM trajectory_validations WHERE window_id = %s AND accepted ORDER BY agent_id",
                (window_id,),
            ).fetchall()
            for rank, (trajectory_id,) in enumerate(rows):
                conn.execute(
                    "INSERT INTO trajectory_scores "
                    "(trajectory_id, window_id, group_index, score, judge, rubric_version) "
                    "VALUES (%s, %s, 0, %s, 'test-judge', 'v1')",
                    (trajectory_id, window_id, rank / (len(rows) - 1)),
                )
            conn.execute(
                "INSERT INTO window_scores (window_id, judge, rubric_version, groups, trajectories, snapshot_id) "
                "SELECT %s, 'test-judge', 'v1', 1, %s, snapshot_id FROM window_validations WHERE window_id = %s",
                (window_id, len(rows), window_id),
            )


@pytest.fixture
def scored_url(database_url: str, store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The store of a game database with scored windows (DATABASE_URL names the game's database)."""
    monkeypatch.setenv("BABYLON_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DATABASE_URL", database_url)
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=WINDOWS + 2)
    summary = simulate(database_url, agents=AGENTS, windows=WINDOWS, seed=7, start=start, steps_range=(5, 6))
    windows = [start + timedelta(hours=offset) for offset in range(WINDOWS)]
    assert len(summary.windows) == WINDOWS
    asyncio.run(ingest_and_validate(database_url, store_url, windows))
    score_windows(store_url, windows)
    yield store_url


def trainer_resource(tmp_path: Path, wandb_api_key: str | None = None) -> TrainerResource:
    # The default max_seq_len (2048 byte-level tokens of the tiny model) holds the system prompt, the first
    # prompt with its action format, and the first answer; a shorter one fails the step (nothing to train).
    return TrainerResource(
        model_name="policy",
        checkpoint_root=str(tmp_path / "checkpoints"),
        wandb_api_key=wandb_api_key,
    )


def wandb_resource(tmp_path: Path, api_key: str | None = None) -> WandbResource:
    return WandbResource(directory=str(tmp_path / "wandb"), project="babylon-test", api_key=api_key)


CONFIG = TrainingConfig(iterations=2, windows_per_iteration=1, learning_rate=1e-3, held_out_fraction=0.25)


def registered_steps(url: str) -> list[int]:
    with connect(url) as conn:
        return [row[0] for row in conn.execute("SELECT step FROM policy_checkpoints ORDER BY step")]


def test_training_resumes_the_step_counter_and_registers_lineage(scored_url: str, tmp_path: Path) -> None:
    first = train_policy(
        scored_url, trainer_resource(tmp_path).build(), wandb_resource(tmp_path), CONFIG, datetime.now(UTC)
    )
    assert (first.first_step, first.last_step, first.steps_done) == (1, 2, 2)
    assert len(first.held_out_windows) == 1 and first.held_out_windows[0] not in first.windows_used
    assert first.eval_margin_before is not None and first.eval_margin_after is not None
    assert first.steps[1].eval_margin_before == first.steps[0].eval_margin_after
    # Training alone never promotes: only the promotion check moves `best`, on evidence.
    assert first.best_checkpoint is None
    assert all(metric_names.LOSS in record.metrics and metric_names.REWARD in record.metrics for record in first.steps)

    second = train_policy(
        scored_url, trainer_resource(tmp_path).build(), wandb_resource(tmp_path), CONFIG, datetime.now(UTC)
    )
    assert (second.first_step, second.last_step) == (3, 4)
    # The second run starts from where the first ended.
    assert second.eval_margin_before == pytest.approx(first.eval_margin_after, abs=1e-5)
    assert registered_steps(scored_url) == [1, 2, 3, 4]
    # Unused windows first: steps 1-3 train the three training windows once each before step 4 reuses one.
    windows_by_step = [record.windows for record in [*first.steps, *second.steps]]
    assert len({window for windows in windows_by_step[:3] for window in windows}) == WINDOWS - 1
    assert first.held_out_windows[0] not in {window for windows in windows_by_step for window in windows}
    assert Path(second.checkpoint_path) == tmp_path / "checkpoints" / "policy" / "step-4"

    with connect(scored_url) as conn:
        lineage = conn.execute(
            "SELECT c.step, count(DISTINCT w.window_id), count(DISTINCT t.trajectory_id), c.score_versions, "
            "c.config, c.eval_margin_after, c.wandb_run_id, c.eval_windows FROM policy_checkpoints c "
            "JOIN checkpoint_windows w ON w.checkpoint_id = c.id "
            "JOIN checkpoint_trajectories t ON t.checkpoint_id = c.id AND t.window_id = w.window_id "
            "GROUP BY c.id ORDER BY c.step"
        ).fetchall()
        held_out = conn.execute("SELECT count(*) FROM training_window_splits WHERE held_out").fetchone()
        best = conn.execute("SELECT count(*) FROM best_checkpoints").fetchone()
    assert [(row[0], row[1], row[2]) for row in lineage] == [(step, 1, AGENTS) for step in (1, 2, 3, 4)]
    # Every step measured the margin on the one held-out window's pair.
    assert all(row[3] == ["test-judge@v1"] and row[5] is not None and row[6] and row[7] == 1 for row in lineage)
    config_text = json.dumps(lineage[0][4])
    assert "password" not in config_text.lower() and "api_key" not in config_text.lower()
    assert lineage[0][4]["training"]["iterations"] == 2
    # Without BABYLON_PUBLISH nothing is written to the game: no trajectory is marked.
    with connect(os.environ["DATABASE_URL"]) as conn:
        marked = conn.execute('SELECT count(*) FILTER (WHERE "usedInTraining") FROM "trajectories"').fetchone()
    assert marked == (0,)
    assert held_out == (1,)
    assert best == (0,)
    # One W&B run per materialization.
    assert len(list((tmp_path / "wandb" / "wandb").glob("offline-run-*"))) == 2

    third = checkpoint_lineage(scored_url, "policy", step=3)
    assert (third.step, third.score_versions) == (3, ["test-judge@v1"])
    assert [w.window for w in third.windows] == second.steps[0].windows
    assert third.windows[0].trajectories == AGENTS and third.eval_margin_after == second.steps[0].eval_margin_after


def test_babylon_lineage_prints_the_latest_checkpoint(
    scored_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["lineage", "--model", "policy"]) == 1
    assert "has no registered checkpoint; train it with `babylon train`" in capsys.readouterr().err
    result = train_policy(
        scored_url,
        trainer_resource(tmp_path).build(),
        wandb_resource(tmp_path),
        CONFIG.model_copy(update={"iterations": 1}),
        datetime.now(UTC),
    )
    assert main(["lineage", "--model", "policy"]) == 0
    printed = capsys.readouterr().out
    assert "checkpoint policy step 1 (torch)" in printed
    assert f"window {result.windows_used[0]}: {AGENTS} trajectories, scores 0.00-1.00 (snapshot v1)" in printed
    assert f"    trajectoryIds: {', '.join(sorted(result.steps[0].trajectory_ids))}" in printed


def test_a_crash_between_saving_and_registering_leaves_nothing_registered(
    scored_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    one_step = CONFIG.model_copy(update={"iterations": 1})
    train_policy(scored_url, trainer_resource(tmp_path).build(), wandb_resource(tmp_path), one_step, datetime.now(UTC))

    def crash(*args: object, **kwargs: object) -> int:
        raise KeyboardInterrupt("killed after the checkpoint was written")

    with monkeypatch.context() as patch:
        patch.setattr(registry, "register_checkpoint", crash)
        with pytest.raises(KeyboardInterrupt):
            train_policy(
                scored_url, trainer_resource(tmp_path).build(), wandb_resource(tmp_path), one_step, datetime.now(UTC)
            )
    orphan = tmp_path / "checkpoints" / "policy" / "step-2"
    assert orphan.is_dir()  # written completely, never registered
    assert registered_steps(scored_url) == [1]
    with connect(scored_url) as conn:
        assert conn.execute("SELECT count(*) FROM checkpoint_windows").fetchone() == (1,)
        assert conn.execute("SELECT count(*) FROM checkpoint_trajectories").fetchone() == (AGENTS,)

    # A writer killed mid-write leaves its temporary folder behind.
    (orphan.parent / ".step-2.tmp-killed").mkdir()
    resumed = train_policy(
        scored_url, trainer_resource(tmp_path).build(), wandb_resource(tmp_path), one_step, datetime.now(UTC)
    )
    assert (resumed.first_step, resumed.last_step) == (2, 2)
    assert registered_steps(scored_url) == [1, 2]
    assert resumed.checkpoint_path == str(orphan)
    # No temporary or stale folder is left beside the checkpoints.
    assert sorted(path.name for path in orphan.parent.iterdir()) == ["step-1", "step-2"]


def test_a_registration_failing_midway_leaves_nothing_registered(scored_url: str) -> None:
    policy = PolicySpec(name="policy", base_model="tiny", project="test", backend="torch")
    with connect(scored_url) as conn:
        found = conn.execute(
            "SELECT v.window_id, v.snapshot_id, v.source_id, v.trajectory_id FROM trajectory_validations v "
            "WHERE v.accepted LIMIT 1"
        ).fetchone()
    assert found is not None
    window, snapshot_id, source_id, trajectory_id = found
    twice = ScoredTrajectory(
        trajectory_id=trajectory_id,
        window_id=window,
        snapshot_id=snapshot_id,
        source_id=source_id,
        group_index=0,
        score=1.0,
        judge="j",
        rubric_version="v1",
        messages=[],
    )
    with connect(scored_url, autocommit=True) as conn:
        registry.ensure_policy_model(conn, policy)
        # The checkpoint row goes in first; the trajectory listed twice then breaks checkpoint_trajectories' key.
        with pytest.raises(psycopg.errors.UniqueViolation):
            registry.register_checkpoint(
                conn,
                policy=policy,
                outcome=StepOutcome(
                    step=1, metrics={}, checkpoint=CheckpointRef(backend="torch", step=1, location="/checkpoints/1")
                ),
                groups=[ScoredGroup(window_id=window, group_index=0, trajectories=[twice, twice])],
                config={},
                eval_margin_before=None,
                eval_margin_after=0.5,
                eval_windows=1,
                wandb_run_id=None,
                wandb_artifact=None,
                lease=registry.lock_model(conn, policy.name),
            )
        for table in ("policy_checkpoints", "checkpoint_windows", "checkpoint_trajectories", "best_checkpoints"):
            count = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
            assert conn.execute(count).fetchone() == (0,), table


def test_a_second_trainer_of_the_same_model_is_refused(scored_url: str, tmp_path: Path) -> None:
    with psycopg.connect(scored_url, autocommit=True) as holder:
        registry.try_lock_model(holder, "policy")
        with pytest.raises(registry.TrainingInProgressError, match="being trained by another run"):
            train_policy(
                scored_url, trainer_resource(tmp_path).build(), wandb_resource(tmp_path), CONFIG, datetime.now(UTC)
            )
    assert registered_steps(scored_url) == []


def test_no_scored_windows_is_an_error_that_names_the_command(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BABYLON_HOME", str(tmp_path / "home"))
    with pytest.raises(NoTrainableWindowsError, match="babylon simulate"):
        train_policy(store_url, trainer_resource(tmp_path).build(), wandb_resource(tmp_path), CONFIG, datetime.now(UTC))


def test_dropout_rate_sizes_toward_the_target() -> None:
    assert dropout_rate(1500, 1000, 0.3) == pytest.approx(0.3)
    assert dropout_rate(1200, 1000, 0.3) == pytest.approx(1 / 6)
    assert dropout_rate(1000, 1000, 0.3) == 0.0
    assert dropout_rate(10, 1000, 0.3) == 0.0


def test_dropout_applies_per_step_in_training(scored_url: str, tmp_path: Path) -> None:
    config = CONFIG.model_copy(
        update={"iterations": 1, "windows_per_iteration": 2, "target_trajectories": 8, "max_dropout": 0.3}
    )
    result = train_policy(
        scored_url, trainer_resource(tmp_path).build(), wandb_resource(tmp_path), config, datetime.now(UTC)
    )
    # 2 windows of 5: rate min(0.3, 1 - 8/10) = 0.2, so 2 of 10 trajectories are dropped.
    assert result.steps[0].dropout_rate == pytest.approx(0.2)
    assert result.steps[0].trajectories == 8


def test_dropout_is_sized_again_for_each_step(scored_url: str, tmp_path: Path) -> None:
    # Two windows keep 3 scored trajectories (at most one of them is held out), the others 5.
    with connect(scored_url) as conn:
        conn.execute(
            "DELETE FROM trajectory_scores WHERE score > 0.5 AND window_id IN "
            "(SELECT window_id FROM window_scores ORDER BY window_id LIMIT 2)"
        )
    config = CONFIG.model_copy(
        update={"min_agents": 3, "iterations": 3, "windows_per_iteration": 1, "target_trajectories": 4}
    )
    result = train_policy(
        scored_url, trainer_resource(tmp_path).build(), wandb_resource(tmp_path), config, datetime.now(UTC)
    )
    # One unused window per step: a window of 5 is thinned to 4 (rate 0.2), a window of 3 is kept whole.
    sized = {(round(record.dropout_rate, 6), record.trajectories) for record in result.steps}
    assert sized == {(0.2, 4), (0.0, 3)}


def test_trained_checkpoint_asset_materializes_with_metadata_and_never_shows_the_wandb_key(
    scored_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("WANDB_API_KEY", SECRET)
    key = dg.EnvVar("WANDB_API_KEY")
    result = dg.materialize(
        [trained_checkpoint],
        resources={
            "database": DatabaseResource(),
            "trainer": trainer_resource(tmp_path, wandb_api_key=key),
            "wandb": wandb_resource(tmp_path, api_key=key),
        },
        run_config=dg.RunConfig(ops={"trained_checkpoint": CONFIG.model_copy(update={"iterations": 1})}),
    )
    assert result.success
    # Both resources hold the key; it reaches no log, metadata, lineage row or W&B file.
    printed = capfd.readouterr()
    assert SECRET not in printed.out + printed.err
    assert not [event for event in result.all_events if SECRET in repr(event)]
    with connect(scored_url) as conn:
        assert conn.execute(
            "SELECT count(*) FROM policy_checkpoints WHERE config::text LIKE %s OR metrics::text LIKE %s",
            (f"%{SECRET}%", f"%{SECRET}%"),
        ).fetchone() == (0,)
    written = [path for path in (tmp_path / "wandb").rglob("*") if path.is_file()]
    assert written and not [path for path in written if SECRET.encode() in path.read_bytes()]
    [event] = result.get_asset_materialization_events()
    metadata = event.materialization.metadata
    assert metadata["step"] == dg.MetadataValue.int(1)
    assert metadata["windows_used"] == dg.MetadataValue.int(1)
    assert metadata["trajectories_used"] == dg.MetadataValue.int(AGENTS)
    assert isinstance(metadata["steps"], dg.MarkdownMetadataValue)
    header, _, first_step = [
        [cell.strip() for cell in line.strip("|").split("|")] for line in (metadata["steps"].md_str or "").splitlines()
    ]
    assert header == ["step", "trajectories", "loss", "reward", "grad norm", "eval margin"]
    # Loss, reward, grad norm and margin are all measured on the tiny model.
    assert first_step[:2] == ["1", str(AGENTS)] and MISSING not in first_step[2:]
    # The same numbers as numeric metadata (Dagster plots them), rounded, and one observation per step.
    for name in ["loss", "reward", "grad_norm", "eval_margin"]:
        number = metadata[name]
        assert isinstance(number, dg.FloatMetadataValue) and number.value is not None
        assert number.value == round(number.value, 6)
    [observation] = [event for event in result.all_events if event.event_type_value == "ASSET_OBSERVATION"]
    assert observation.asset_observation_data.asset_observation.metadata["step"] == dg.MetadataValue.int(1)
    assert metadata["checkpoint"] == dg.MetadataValue.path(str(tmp_path / "checkpoints" / "policy" / "step-1"))
    assert trained_checkpoint.op.tags["workload"] == "training"


def test_training_sees_exactly_the_lookback_windows_that_discovery_sees(scored_url: str) -> None:
    # The fixture's windows start WINDOWS + 2 hours before the current hour; a lookback of that many
    # whole hours holds the oldest one, one hour less does not, whatever the minute is now.
    now = datetime.now(UTC)
    oldest = lookback_start(now, WINDOWS + 2)
    with connect(scored_url) as conn:
        holding = eligible_windows(conn, TrainingConfig(lookback_hours=WINDOWS + 2), now)
        short = eligible_windows(conn, TrainingConfig(lookback_hours=WINDOWS + 1), now)
    assert holding[0].window_id == oldest
    assert oldest not in [window.window_id for window in short]
    assert len(holding) == len(short) + 1 == WINDOWS


def test_game_knowledge_never_reaches_what_the_trainer_sees(database_url: str, store_url: str) -> None:
    # The game's recorder keeps hindsight in metadataJson.gameKnowledge; it may inform a judge at most.
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
    simulate(database_url, agents=AGENTS, windows=1, seed=3, start=start)
    marker = "ACTUAL-OUTCOME-b8e1f0"
    with connect(database_url) as conn:
        conn.execute(
            """UPDATE "trajectories" SET "metadataJson" = jsonb_set("metadataJson"::jsonb,
                   '{gameKnowledge,futureOutcomes}', to_jsonb(%s::text))::text""",
            (marker,),
        )
    asyncio.run(ingest_and_validate(database_url, store_url, [start]))
    score_windows(store_url, [start])
    with connect(store_url) as conn:
        assert conn.execute(
            "SELECT count(*) FROM snapshot_rows WHERE recorded::text LIKE %s", (f"%{marker}%",)
        ).fetchone() == (AGENTS,)
    loaded = run_with_connection(store_url, lambda conn: load_scored_trajectories(conn, [start], min_actions=5))
    seen = json.dumps([m.model_dump() for t in loaded[start] for m in t.messages])
    assert len(loaded[start]) == AGENTS and marker not in seen and "gameKnowledge" not in seen


def test_publishing_names_the_promoted_checkpoint_in_the_game_and_marks_its_trajectories(
    scored_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    game_url = os.environ["DATABASE_URL"]
    monkeypatch.setenv("BABYLON_PUBLISH", "1")
    target = publish_target(game_url)
    assert target is not None and target.game_schema == "public"
    result = train_policy(
        scored_url,
        trainer_resource(tmp_path).build(),
        wandb_resource(tmp_path),
        CONFIG.model_copy(update={"iterations": 1}),
        datetime.now(UTC),
    )
    with connect(game_url) as conn:
        # Training alone writes nothing to the game: only a promotion publishes.
        assert conn.execute('SELECT count(*) FROM "trained_models"').fetchone() == (0,)
    decision = PromotionDecision(
        promote=True,
        basis="held-out margin",
        candidate_id=result.steps[0].checkpoint_id,
        candidate_step=1,
        incumbent_id=None,
        reason="test: promoted",
        evidence={"eval_margin_after": result.steps[0].eval_margin_after},
    )
    with connect(scored_url, autocommit=True) as conn:
        promote(conn, "policy", decision, target)
    with connect(game_url) as conn:
        published = conn.execute(
            'SELECT "modelId", "version", "baseModel", "status", "storagePath", "evalMetrics" FROM "trained_models"'
        ).fetchall()
        marked = conn.execute(
            'SELECT "trajectoryId", "trainedInBatch" FROM "trajectories" WHERE "usedInTraining" ORDER BY 1'
        ).fetchall()
    assert [row[:5] for row in published] == [("policy-step-1", "1", "tiny", "ready", result.checkpoint_path)]
    assert published[0][5]["eval_margin_after"] == result.steps[0].eval_margin_after
    assert [trajectory_id for trajectory_id, _ in marked] == sorted(result.steps[0].trajectory_ids)
    assert {batch for _, batch in marked} == {"policy/step-1"}
    # Publishing is one transaction with the promotion, so it needs the platform's schema in the game's database.
    monkeypatch.setenv("BABYLON_STORE_URL", "postgresql://postgres@127.0.0.1:5432/elsewhere")
    with pytest.raises(ConfigurationError, match="unset BABYLON_STORE_URL, or unset BABYLON_PUBLISH"):
        publish_target(game_url)
