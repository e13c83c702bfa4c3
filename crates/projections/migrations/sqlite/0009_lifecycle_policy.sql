-- The policy version the lifecycle judged health by (decline on red, maturity in good
-- health). NULL for rows folded before the lifecycle recorded it: `crm replay lifecycle`
-- fills it in.
ALTER TABLE lifecycle_customers ADD COLUMN policy_version TEXT;
