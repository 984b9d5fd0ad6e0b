-- What the pipeline derives, keyed so that re-running a window replaces its results.

-- One verdict per row of the window's validated snapshot: accepted, or rejected with a human-readable reason.
-- Only the window's latest validation is kept; its snapshot is window_validations.snapshot_id.
CREATE TABLE trajectory_validations (
    snapshot_id bigint NOT NULL,
    source_id text NOT NULL,
    trajectory_id text,
    window_id timestamptz NOT NULL,
    agent_id text,
    -- The agent id as compared for distinct agents (trimmed, case-folded); NULL when rejected for it.
    agent_key text,
    steps integer,
    -- The game's "isEvaluation": held out from training, measured on.
    is_evaluation boolean NOT NULL DEFAULT false,
    accepted boolean NOT NULL,
    reason text,
    validated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (snapshot_id, source_id),
    FOREIGN KEY (snapshot_id, source_id) REFERENCES snapshot_rows (snapshot_id, source_id) ON DELETE CASCADE,
    CHECK (accepted = (reason IS NULL)),
    CHECK (NOT accepted OR (agent_key IS NOT NULL AND steps IS NOT NULL AND trajectory_id IS NOT NULL))
);
CREATE INDEX trajectory_validations_window ON trajectory_validations (window_id, accepted);
CREATE INDEX trajectory_validations_trajectory ON trajectory_validations (trajectory_id) WHERE accepted;

-- One row per validated window: what the blocking check and the sensors look at.
CREATE TABLE window_validations (
    window_id timestamptz PRIMARY KEY,
    snapshot_id bigint NOT NULL REFERENCES window_snapshots (id),
    accepted integer NOT NULL,
    rejected integer NOT NULL,
    distinct_agents integer NOT NULL,
    validated_at timestamptz NOT NULL DEFAULT now()
);

-- The judge's final score for each accepted trajectory (averaged over permutations).
-- Accepted trajectory ids are unique (later duplicates are rejected), so they key the score.
CREATE TABLE trajectory_scores (
    trajectory_id text PRIMARY KEY,
    window_id timestamptz NOT NULL,
    group_index integer NOT NULL,
    score double precision NOT NULL CHECK (score >= 0 AND score <= 1),
    judge text NOT NULL,
    rubric_version text NOT NULL,
    scored_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX trajectory_scores_window ON trajectory_scores (window_id, group_index);

-- One row per scored window: the training sensor counts these.
CREATE TABLE window_scores (
    window_id timestamptz PRIMARY KEY,
    judge text NOT NULL,
    rubric_version text NOT NULL,
    groups integer NOT NULL,
    trajectories integer NOT NULL,
    scored_at timestamptz NOT NULL DEFAULT now()
);
