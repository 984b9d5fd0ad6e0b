-- The persistent policy, its registered checkpoints and their lineage.
-- A checkpoint row exists only once its files are complete on disk (or in W&B): the trainer writes
-- the files first and registers them, with all lineage rows, in one transaction afterwards.

CREATE TABLE policy_models (
    name text PRIMARY KEY,
    base_model text NOT NULL,
    project text NOT NULL,
    backend text NOT NULL CHECK (backend IN ('torch', 'art-local', 'art-serverless')),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE policy_checkpoints (
    id bigserial PRIMARY KEY,
    model_name text NOT NULL REFERENCES policy_models (name),
    step integer NOT NULL CHECK (step > 0),
    backend text NOT NULL CHECK (backend IN ('torch', 'art-local', 'art-serverless')),
    -- A local folder (torch, art-local) or a W&B artifact name (art-serverless).
    location text NOT NULL,
    -- Distinct "judge@rubric_version" of the scores trained on.
    score_versions text[] NOT NULL,
    -- Training configuration without secrets.
    config jsonb NOT NULL,
    metrics jsonb NOT NULL,
    -- Held-out log-likelihood margin of the policy this step started from, and of this checkpoint;
    -- NULL when there was no held-out pair to measure on.
    eval_margin_before double precision,
    eval_margin_after double precision,
    eval_windows integer NOT NULL DEFAULT 0,
    wandb_run_id text,
    wandb_artifact text,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (model_name, step)
);

-- The training sensor counts scored windows absent from this table.
CREATE TABLE checkpoint_windows (
    checkpoint_id bigint NOT NULL REFERENCES policy_checkpoints (id) ON DELETE CASCADE,
    window_id timestamptz NOT NULL,
    -- The ingested snapshot whose validated rows were trained on (immutable).
    snapshot_id bigint NOT NULL REFERENCES window_snapshots (id),
    PRIMARY KEY (checkpoint_id, window_id)
);
CREATE INDEX checkpoint_windows_window ON checkpoint_windows (window_id);

CREATE TABLE checkpoint_trajectories (
    checkpoint_id bigint NOT NULL REFERENCES policy_checkpoints (id) ON DELETE CASCADE,
    trajectory_id text NOT NULL,
    -- The game's row id and the snapshot holding the exact content trained on.
    snapshot_id bigint NOT NULL,
    source_id text NOT NULL,
    window_id timestamptz NOT NULL,
    group_index integer NOT NULL,
    score double precision NOT NULL,
    judge text NOT NULL,
    rubric_version text NOT NULL,
    PRIMARY KEY (checkpoint_id, trajectory_id),
    FOREIGN KEY (snapshot_id, source_id) REFERENCES snapshot_rows (snapshot_id, source_id)
);
CREATE INDEX checkpoint_trajectories_trajectory ON checkpoint_trajectories (trajectory_id);

-- Held-out windows are assigned once and never change, so no checkpoint ever trains on a window
-- that another checkpoint was evaluated on.
CREATE TABLE training_window_splits (
    window_id timestamptz PRIMARY KEY,
    held_out boolean NOT NULL,
    assigned_at timestamptz NOT NULL DEFAULT now()
);

-- The checkpoint with the highest held-out margin, per model.
CREATE TABLE best_checkpoints (
    model_name text PRIMARY KEY REFERENCES policy_models (name),
    checkpoint_id bigint NOT NULL REFERENCES policy_checkpoints (id),
    eval_margin double precision NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
