-- Which trainer holds each model. A trainer takes the next token while it holds the model's advisory
-- lock; the transaction registering a checkpoint locks this row and checks the token is still its own
-- (and that its lock's session still holds the lock), so two trainers can never both register.
CREATE TABLE model_fences (
    model_name text PRIMARY KEY,
    token bigint NOT NULL CHECK (token > 0),
    taken_at timestamptz NOT NULL DEFAULT now()
);
