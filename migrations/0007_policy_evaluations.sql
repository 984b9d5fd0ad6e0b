-- Closed-loop evaluations of registered checkpoints: each policy (the base model, the checkpoint, the
-- current best, the scripted strategies) played the same seeded simulated markets.

CREATE TABLE policy_evaluations (
    id bigserial PRIMARY KEY,
    checkpoint_id bigint NOT NULL REFERENCES policy_checkpoints (id) ON DELETE CASCADE,
    seed integer NOT NULL,
    markets integer NOT NULL CHECK (markets > 0),
    decisions integer NOT NULL CHECK (decisions > 0),
    persona text NOT NULL,
    max_new_tokens integer NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX policy_evaluations_checkpoint ON policy_evaluations (checkpoint_id);

CREATE TABLE policy_evaluation_results (
    evaluation_id bigint NOT NULL REFERENCES policy_evaluations (id) ON DELETE CASCADE,
    -- 'base', 'checkpoint', 'best' (the best checkpoint before this one) or 'scripted:<strategy>'.
    policy text NOT NULL,
    -- The checkpoint whose weights played (NULL for the base model and scripted strategies).
    policy_checkpoint_id bigint REFERENCES policy_checkpoints (id) ON DELETE CASCADE,
    -- P&L per market, in market order: the paired statistics are recomputable from these.
    market_pnls double precision[] NOT NULL,
    mean_pnl double precision NOT NULL,
    -- 95% t-interval of the mean paired difference to the base model over the same markets.
    diff_ci_low double precision,
    diff_ci_high double precision,
    win_rate double precision,
    invalid_rate double precision,
    tokens_per_second double precision,
    PRIMARY KEY (evaluation_id, policy)
);

-- The `best` pointer moves only through the promotion check, on closed-loop evidence (torch) or on the
-- held-out margin (backends whose policy cannot run here); what it decided on is kept with it.
ALTER TABLE best_checkpoints ALTER COLUMN eval_margin DROP NOT NULL;
ALTER TABLE best_checkpoints ADD COLUMN promoted_on text NOT NULL DEFAULT 'held-out margin'
    CHECK (promoted_on IN ('closed-loop evaluation', 'held-out margin'));
ALTER TABLE best_checkpoints ADD COLUMN evidence jsonb NOT NULL DEFAULT '{}';
