-- What the pipeline derives, keyed so that re-running a window replaces its results.

-- One verdict per stored row: accepted, or rejected with a human-readable reason.
CREATE TABLE trajectory_validations (
    row_id bigint PRIMARY KEY REFERENCES trajectories (id) ON DELETE CASCADE,
    trajectory_id text,
    window_id timestamptz,
    agent_id text,
    accepted boolean NOT NULL,
    reason text,
    validated_at timestamptz NOT NULL DEFAULT now(),
    CHECK (accepted = (reason IS NULL))
);
CREATE INDEX trajectory_validations_window ON trajectory_validations (window_id, accepted);

-- One row per validated window: what the blocking check and the sensors look at.
CREATE TABLE window_validations (
    window_id timestamptz PRIMARY KEY,
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
