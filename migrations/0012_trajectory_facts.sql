-- What each accepted row did, in a few numbers (babylon_assets/trajectories/facts.py), stored with its
-- verdict at validation: the outcome judge scores from these instead of loading and parsing the rows.
-- Rows validated before this migration have none (the constraint holds for rows written from now on):
-- the outcome judge refuses their window until it is validated again.
ALTER TABLE trajectory_validations ADD COLUMN facts jsonb;
ALTER TABLE trajectory_validations
    ADD CONSTRAINT trajectory_validations_facts CHECK (accepted = (facts IS NOT NULL)) NOT VALID;
