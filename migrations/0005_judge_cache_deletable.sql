-- A cached judge answer that no longer validates must be deletable (the judge's error says to delete
-- it and re-score), even while the window's stored permutation scores still cite it: the citation is
-- cleared, and re-scoring the window replaces those rows anyway.
ALTER TABLE judge_permutation_scores
    DROP CONSTRAINT judge_permutation_scores_cache_key_fkey,
    ADD CONSTRAINT judge_permutation_scores_cache_key_fkey
        FOREIGN KEY (cache_key) REFERENCES judge_cache (cache_key) ON DELETE SET NULL;
