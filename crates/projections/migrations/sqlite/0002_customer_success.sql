-- Trust account: balances per tier and the ledger of every deposit and withdrawal.
CREATE TABLE IF NOT EXISTS trust_accounts (
    customer_id    TEXT PRIMARY KEY,
    basic          INTEGER NOT NULL,
    value_added    INTEGER NOT NULL,
    emotional      INTEGER NOT NULL,
    balance        INTEGER NOT NULL,
    version        INTEGER NOT NULL,
    last_sequence  INTEGER NOT NULL,
    policy_version TEXT NOT NULL,
    state          TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS trust_ledger (
    customer_id    TEXT NOT NULL,
    sequence       INTEGER NOT NULL,
    entry_no       INTEGER NOT NULL,
    event_id       TEXT NOT NULL,
    event_type     TEXT NOT NULL,
    version        INTEGER NOT NULL,
    occurred_at    TEXT NOT NULL,
    tier           TEXT NOT NULL,
    points         INTEGER NOT NULL,
    rule           TEXT NOT NULL,
    policy_version TEXT NOT NULL,
    PRIMARY KEY (customer_id, sequence, entry_no)
);

-- Health score, colour, reasons and value tier per customer.
CREATE TABLE IF NOT EXISTS customer_health (
    customer_id            TEXT PRIMARY KEY,
    score                  INTEGER NOT NULL,
    color                  TEXT NOT NULL,
    reasons                TEXT NOT NULL,
    tier                   TEXT NOT NULL,
    version                INTEGER NOT NULL,
    last_sequence          INTEGER NOT NULL,
    policy_version         TEXT NOT NULL,
    has_active_contract    INTEGER NOT NULL,
    activity_reference     TEXT,
    inactivity_flagged_for TEXT,
    state                  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS customer_health_color ON customer_health (color);

-- Churn alerts: open and resolved.
CREATE TABLE IF NOT EXISTS alerts (
    customer_id        TEXT NOT NULL,
    alert_id           TEXT NOT NULL,
    status             TEXT NOT NULL,
    color              TEXT NOT NULL,
    score              INTEGER NOT NULL,
    reasons            TEXT NOT NULL,
    recommended_action TEXT NOT NULL,
    raised_at          TEXT NOT NULL,
    escalated_at       TEXT,
    resolved_at        TEXT,
    interventions      TEXT NOT NULL,
    PRIMARY KEY (customer_id, alert_id)
);
CREATE INDEX IF NOT EXISTS alerts_status_color ON alerts (status, color);

-- Renewals: every contract with its term and status.
CREATE TABLE IF NOT EXISTS renewal_customers (
    customer_id   TEXT PRIMARY KEY,
    version       INTEGER NOT NULL,
    last_sequence INTEGER NOT NULL,
    state         TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS renewals (
    customer_id  TEXT NOT NULL,
    contract_id  TEXT NOT NULL,
    starts_on    TEXT NOT NULL,
    ends_on      TEXT NOT NULL,
    notice_days  INTEGER NOT NULL,
    status       TEXT NOT NULL,
    value_minor  INTEGER NOT NULL,
    currency     TEXT NOT NULL,
    PRIMARY KEY (customer_id, contract_id)
);
CREATE INDEX IF NOT EXISTS renewals_ends_on ON renewals (ends_on);
