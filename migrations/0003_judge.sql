-- The judge's own records: its answer cache, how each window was split and shown, and its traffic.
-- trajectory_scores and window_scores (0002) hold the final scores; these tables explain them.

-- Every judge answer that passed validation, keyed by sha256 of (judge model, rubric version, the
-- exact messages sent, permutation): re-scoring a window or re-training costs no judge call.
-- Never replaced with a window; answers obtained before a failure stay here for the retry.
CREATE TABLE judge_cache (
    cache_key text PRIMARY KEY CHECK (cache_key ~ '^[0-9a-f]{64}$'),
    judge_model text NOT NULL,
    rubric_version text NOT NULL,
    permutation integer NOT NULL CHECK (permutation >= 0),
    raw_answer text NOT NULL,
    prompt_tokens integer NOT NULL CHECK (prompt_tokens >= 0),
    completion_tokens integer NOT NULL CHECK (completion_tokens >= 0),
    -- NULL when LiteLLM has no price for the model (self-hosted judges).
    cost_usd double precision CHECK (cost_usd >= 0),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- The deterministic split of a window into judge groups (members in the order of the split).
CREATE TABLE judge_groups (
    window_id timestamptz NOT NULL,
    group_index integer NOT NULL CHECK (group_index >= 0),
    trajectory_ids text[] NOT NULL CHECK (cardinality(trajectory_ids) > 0),
    PRIMARY KEY (window_id, group_index)
);

-- Each trajectory's raw score under each order its group was shown in; the final score in
-- trajectory_scores is their mean.
CREATE TABLE judge_permutation_scores (
    window_id timestamptz NOT NULL,
    group_index integer NOT NULL,
    permutation integer NOT NULL CHECK (permutation >= 0),
    trajectory_id text NOT NULL,
    position integer NOT NULL CHECK (position >= 1),
    score double precision NOT NULL CHECK (score >= 0 AND score <= 1),
    explanation text NOT NULL,
    -- A cached answer that no longer validates must stay deletable (the judge's error says to delete
    -- it and re-score): the citation is cleared, and re-scoring the window replaces these rows anyway.
    cache_key text REFERENCES judge_cache (cache_key) ON DELETE SET NULL,
    PRIMARY KEY (window_id, trajectory_id, permutation),
    FOREIGN KEY (window_id, group_index) REFERENCES judge_groups (window_id, group_index) ON DELETE CASCADE
);

-- Judge traffic per scored window: what the asset metadata reports.
CREATE TABLE judge_window_stats (
    window_id timestamptz PRIMARY KEY,
    judge text NOT NULL,
    rubric_version text NOT NULL,
    calls_made integer NOT NULL CHECK (calls_made >= 0),
    calls_cached integer NOT NULL CHECK (calls_cached >= 0),
    prompt_tokens bigint NOT NULL CHECK (prompt_tokens >= 0),
    completion_tokens bigint NOT NULL CHECK (completion_tokens >= 0),
    cost_usd double precision NOT NULL CHECK (cost_usd >= 0),
    unpriced_calls integer NOT NULL CHECK (unpriced_calls >= 0),
    scored_at timestamptz NOT NULL DEFAULT now()
);

-- Why a window's last scoring attempt failed; removed when the window is next scored successfully.
-- A failed attempt leaves the window's previous scores in place.
CREATE TABLE judge_failures (
    window_id timestamptz PRIMARY KEY,
    judge text NOT NULL,
    reason text NOT NULL,
    failed_at timestamptz NOT NULL DEFAULT now()
);
