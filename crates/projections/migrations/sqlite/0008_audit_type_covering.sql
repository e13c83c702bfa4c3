-- Type + time-range queries walk (event_type, sequence) in log order and test the time on
-- the index entry itself: one covering index instead of two. (event_type, occurred_us) was
-- never chosen by the planner for these queries and cost a random-position insert per event.
DROP INDEX IF EXISTS audit_type_occurred;
DROP INDEX IF EXISTS audit_type;
CREATE INDEX audit_type ON audit_index (event_type, sequence, occurred_us);
