-- How far a window's judge scores can be trusted: Kendall tau between the scores and the realized P&L,
-- and between the scores of each pair of permutations (orders shown to the judge), averaged over the
-- window's groups. NULL when not measurable (one permutation, or groups with constant values).
CREATE TABLE judge_window_quality (
    window_id timestamptz PRIMARY KEY,
    judge text NOT NULL,
    score_pnl_tau double precision CHECK (score_pnl_tau BETWEEN -1 AND 1),
    permutation_tau double precision CHECK (permutation_tau BETWEEN -1 AND 1),
    groups integer NOT NULL CHECK (groups >= 0),
    measured_at timestamptz NOT NULL DEFAULT now()
);
