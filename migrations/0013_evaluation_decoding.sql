-- How the policies' replies were decoded: under the action format's JSON schema, or freely. Evaluations
-- stored before this column decoded freely.
ALTER TABLE policy_evaluations ADD COLUMN decoding text NOT NULL DEFAULT 'free' CHECK (decoding IN ('json-schema', 'free'));
ALTER TABLE policy_evaluations ALTER COLUMN decoding DROP DEFAULT;
