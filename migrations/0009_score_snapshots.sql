-- The snapshot a window's scores were computed from. A window whose content changed is ingested,
-- validated and scored again; until its new scores are stored, its scores belong to an older snapshot
-- than its validation, and training leaves it out rather than pair new trajectories with old scores.
-- NULL only for scores stored before this column existed whose window has no validation.
ALTER TABLE window_scores ADD COLUMN snapshot_id bigint REFERENCES window_snapshots (id);
UPDATE window_scores AS s SET snapshot_id = v.snapshot_id FROM window_validations AS v WHERE v.window_id = s.window_id;
