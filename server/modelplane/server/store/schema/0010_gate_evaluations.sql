-- modelplane: expand-only
-- Rollout analysis gates: the evaluations behind a history entry (a GATE_EVALUATED entry, or the step a
-- gate decided), as the JSON of the GateEvaluation domain values; NULL for every other entry. The gates
-- themselves and each gate's last evaluation live in the rollout's body.
ALTER TABLE deployment_history ADD COLUMN gate_evaluations jsonb;
