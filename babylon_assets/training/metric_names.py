"""Step metric names: ART 0.5.18's W&B names (art/model.py, art/unsloth/train.py), so runs of the torch
trainer and of the ART backends chart the same series. Keys without an ART counterpart use ART's sections."""

REWARD = "train/reward"
LOSS = "loss/train"
GRAD_NORM = "loss/grad_norm"
LEARNING_RATE = "loss/learning_rate"
GROUPS = "data/step_num_groups_submitted"
TRAINABLE_GROUPS = "data/step_num_groups_trainable"
TRAJECTORIES = "data/step_num_trajectories"
GRADIENT_STEPS = "data/step_num_gradient_steps"
TRAINER_TOKENS = "data/step_trainer_tokens"
STEP_TIME = "time/step_trainer_s"
# Ours, in ART's sections.
TOKENS = "data/step_num_tokens"
TRAINED_TRAJECTORIES = "data/step_num_trained_trajectories"
TRUNCATED_TRAJECTORIES = "data/step_num_truncated_trajectories"
WINDOWS = "data/step_num_windows"
DROPOUT_RATE = "data/step_dropout_rate"
# ART logs evaluations under the "val" split.
EVAL_MARGIN = "val/margin"
