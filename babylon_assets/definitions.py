"""The platform's one `Definitions`: windows flow raw -> validated -> scored, then train a checkpoint.

Resources follow the active profile (BABYLON_PROFILE, announced when unset): local runs the outcome
judge, the CPU trainer and W&B offline; production the RULER judge, the configured trainer and W&B online.
"""

import dagster as dg

from babylon_assets.evaluation.assets import policy_evaluation, promotion_check
from babylon_assets.jobs import training_job, window_chain_job
from babylon_assets.judging.assets import judge_agreement_check, scored_groups, scored_groups_check, with_judge_kinds
from babylon_assets.profile import active_profile
from babylon_assets.training.assets import trained_checkpoint
from babylon_assets.trajectories.assets import raw_trajectories, validated_windows
from resources.database import DatabaseResource
from resources.judge import judge_resource_for
from resources.trainer import trainer_resource_for
from resources.wandb import wandb_resource_for
from sensors import fresh_windows_sensor, training_sensor

profile = active_profile()
judge = judge_resource_for(profile)

defs = dg.Definitions(
    assets=[
        raw_trajectories,
        validated_windows,
        with_judge_kinds(scored_groups, judge.kind),
        trained_checkpoint,
        policy_evaluation,
    ],
    asset_checks=[scored_groups_check, judge_agreement_check, promotion_check],
    jobs=[window_chain_job, training_job],
    sensors=[fresh_windows_sensor, training_sensor],
    # Also for the implicit asset job that backfills and the UI launch: every selection here is a chain,
    # and a Celery worker's pool process may not fork step processes (multiprocess executor) at all.
    executor=dg.in_process_executor,
    resources={
        "database": DatabaseResource(),
        "judge": judge,
        "trainer": trainer_resource_for(profile),
        "wandb": wandb_resource_for(profile),
    },
)
