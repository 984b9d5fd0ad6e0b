-- What the platform ingested from the game's "trajectories" table: one immutable snapshot of a window's
-- rows per ingest that found its content changed. Validation, judging and training read snapshots, never
-- the game's table, so a checkpoint's lineage names exactly the rows it was trained on even after the
-- game edits or deletes them.

CREATE TABLE window_snapshots (
    id bigserial PRIMARY KEY,
    window_id timestamptz NOT NULL,
    -- 1, 2, ... per window: the window's content version.
    version integer NOT NULL CHECK (version >= 1),
    -- sha256 over the snapshot's (source id, row hash) pairs in source-id order.
    content_hash text NOT NULL CHECK (content_hash ~ '^[0-9a-f]{64}$'),
    rows integer NOT NULL CHECK (rows >= 0),
    -- Against the window's previous snapshot (all rows are "added" in the first).
    rows_added integer NOT NULL CHECK (rows_added >= 0),
    rows_changed integer NOT NULL CHECK (rows_changed >= 0),
    rows_gone integer NOT NULL CHECK (rows_gone >= 0),
    -- Where the window's ground truth came from; the judge's context only.
    outcome_source text NOT NULL CHECK (outcome_source IN ('market_outcomes', 'price_history', 'none')),
    outcomes jsonb NOT NULL,
    -- The latest createdAt / updatedAt among the rows read: what the game had recorded by then.
    recorded_until timestamptz,
    ingested_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (window_id, version)
);

-- One game row per snapshot, as recorded (the row's columns as JSON, the game's camelCase names, minus
-- the bookkeeping columns the game or publishing rewrite: updatedAt, usedInTraining, trainedInBatch, and
-- the game's own judge columns). content_hash is sha256 of that JSON's canonical (jsonb) text.
CREATE TABLE snapshot_rows (
    snapshot_id bigint NOT NULL REFERENCES window_snapshots (id) ON DELETE CASCADE,
    -- The game's "id" (TEXT primary key).
    source_id text NOT NULL,
    trajectory_id text,
    agent_id text,
    content_hash text NOT NULL CHECK (content_hash ~ '^[0-9a-f]{64}$'),
    recorded jsonb NOT NULL,
    PRIMARY KEY (snapshot_id, source_id)
);
CREATE INDEX snapshot_rows_trajectory ON snapshot_rows (trajectory_id);
