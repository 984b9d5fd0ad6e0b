-- A judged group's result, keyed by everything it depends on: the judge, its rubric and settings, the
-- window's ground truth and the group's members (trajectory id and row content hash, in split order).
-- A re-run whose groups all hit is answered without loading, parsing or showing any trajectory. An
-- entry counts only while the judge answers it was made from are in judge_cache exactly as they were
-- (answers_hash): an answer deleted or changed there is asked for, and validated, again.
CREATE TABLE judge_group_cache (
    group_key text PRIMARY KEY CHECK (group_key ~ '^[0-9a-f]{64}$'),
    cache_keys text[] NOT NULL CHECK (cardinality(cache_keys) > 0),
    answers_hash text NOT NULL,
    -- The judge's GroupScoring (scores and permutation scores), as validated when it was made.
    scoring jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- sha256 over the sha256 of each answer's raw text, in the order given; NULL when one is not cached.
CREATE FUNCTION judge_answers_hash(cache_keys text[]) RETURNS text LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN count(c.cache_key) = cardinality(cache_keys) THEN encode(sha256(convert_to(
        string_agg(encode(sha256(convert_to(c.raw_answer, 'UTF8')), 'hex'), ',' ORDER BY k.ordinality), 'UTF8')), 'hex')
    END
    FROM unnest(cache_keys) WITH ORDINALITY AS k(cache_key, ordinality)
    LEFT JOIN judge_cache c ON c.cache_key = k.cache_key
$$;
