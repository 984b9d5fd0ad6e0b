-- Trajectories as the game's recorder writes them (one row per agent episode), snake_case.
-- Columns are deliberately permissive: the reader validates every row and rejects bad ones with
-- a stored reason, so a malformed row must be storable rather than refused at insert time.
CREATE TABLE trajectories (
    id bigserial PRIMARY KEY,
    trajectory_id text,
    agent_id text,
    start_time timestamptz,
    end_time timestamptz,
    duration_ms bigint,
    -- UTC hour start; NULL for rows of the plugin logger, which records no window.
    window_id timestamptz,
    window_hours integer NOT NULL DEFAULT 1,
    episode_id text,
    scenario_id text,
    -- The recorder's stepsJson in its own camelCase shape; a JSON string here is recorder text
    -- that is decoded (or rejected) by the reader.
    steps jsonb,
    reward_components jsonb,
    metrics jsonb,
    metadata jsonb,
    total_reward double precision,
    episode_length integer,
    final_status text,
    final_balance double precision,
    final_pnl double precision,
    trades_executed integer,
    posts_created integer,
    is_training_data boolean NOT NULL DEFAULT true,
    used_in_training boolean NOT NULL DEFAULT false,
    trained_in_batch text,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Window discovery groups by window and counts distinct agents with enough steps: this index
-- answers it with an index-only scan at millions of rows.
CREATE INDEX trajectories_window_discovery
    ON trajectories (window_id, agent_id, episode_length)
    WHERE window_id IS NOT NULL AND is_training_data;
-- Duplicate detection and lookups by the recorder's id.
CREATE INDEX trajectories_trajectory_id ON trajectories (trajectory_id, id);

-- Ground truth per window, unknown to the agents while they acted: context for the judge only.
CREATE TABLE market_outcomes_stock (
    window_id timestamptz NOT NULL,
    ticker text NOT NULL,
    start_price double precision NOT NULL,
    end_price double precision NOT NULL,
    change_percent double precision NOT NULL,
    sentiment text NOT NULL CHECK (sentiment IN ('BULLISH', 'BEARISH', 'NEUTRAL')),
    news_events jsonb NOT NULL DEFAULT '[]'::jsonb,
    PRIMARY KEY (window_id, ticker)
);

CREATE TABLE market_outcomes_prediction (
    window_id timestamptz NOT NULL,
    market_id text NOT NULL,
    question text NOT NULL,
    outcome text NOT NULL CHECK (outcome IN ('YES', 'NO', 'UNRESOLVED')),
    final_probability double precision NOT NULL CHECK (final_probability BETWEEN 0 AND 1),
    PRIMARY KEY (window_id, market_id)
);
