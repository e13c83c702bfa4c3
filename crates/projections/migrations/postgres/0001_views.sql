-- The read models on PostgreSQL: the same tables, columns and keys as the SQLite
-- migrations arrive at, in one step. Integers are BIGINT and rates DOUBLE PRECISION (what
-- sqlx's Any driver decodes as i64 and f64); text compares byte-wise (COLLATE "C"), so
-- ordering and keyset paging match SQLite's.

CREATE TABLE projection_checkpoints (
    name          TEXT COLLATE "C" PRIMARY KEY,
    last_sequence BIGINT NOT NULL,
    updated_at    TEXT NOT NULL,
    apply_rate    DOUBLE PRECISION NOT NULL DEFAULT 0
);

CREATE TABLE projection_rebuilds (
    name       TEXT COLLATE "C" PRIMARY KEY,
    state      TEXT NOT NULL,
    done       BIGINT NOT NULL,
    total      BIGINT NOT NULL,
    started_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    error      TEXT
);

CREATE TABLE projection_fences (
    grp       TEXT COLLATE "C" NOT NULL,
    partition BIGINT NOT NULL,
    fence     BIGINT NOT NULL,
    PRIMARY KEY (grp, partition)
);

CREATE TABLE lifecycle_customers (
    customer_id   TEXT COLLATE "C" PRIMARY KEY,
    stage         TEXT COLLATE "C" NOT NULL,
    since         TEXT NOT NULL,
    version       BIGINT NOT NULL,
    last_sequence BIGINT NOT NULL,
    won_back      BIGINT NOT NULL,
    state         TEXT NOT NULL
);
CREATE INDEX lifecycle_customers_stage ON lifecycle_customers (stage);

CREATE TABLE lifecycle_transitions (
    customer_id TEXT COLLATE "C" NOT NULL,
    version     BIGINT NOT NULL,
    from_stage  TEXT,
    to_stage    TEXT NOT NULL,
    at          TEXT NOT NULL,
    event_type  TEXT NOT NULL,
    sequence    BIGINT NOT NULL,
    PRIMARY KEY (customer_id, version)
);

CREATE TABLE trust_accounts (
    customer_id    TEXT COLLATE "C" PRIMARY KEY,
    basic          BIGINT NOT NULL,
    value_added    BIGINT NOT NULL,
    emotional      BIGINT NOT NULL,
    balance        BIGINT NOT NULL,
    version        BIGINT NOT NULL,
    last_sequence  BIGINT NOT NULL,
    policy_version TEXT NOT NULL,
    state          TEXT NOT NULL
);
CREATE TABLE trust_ledger (
    customer_id    TEXT COLLATE "C" NOT NULL,
    sequence       BIGINT NOT NULL,
    entry_no       BIGINT NOT NULL,
    event_id       TEXT NOT NULL,
    event_type     TEXT NOT NULL,
    version        BIGINT NOT NULL,
    occurred_at    TEXT NOT NULL,
    tier           TEXT COLLATE "C" NOT NULL,
    points         BIGINT NOT NULL,
    rule           TEXT NOT NULL,
    policy_version TEXT NOT NULL,
    PRIMARY KEY (customer_id, sequence, entry_no)
);

CREATE TABLE customer_health (
    customer_id            TEXT COLLATE "C" PRIMARY KEY,
    score                  BIGINT NOT NULL,
    color                  TEXT COLLATE "C" NOT NULL,
    reasons                TEXT NOT NULL,
    tier                   TEXT NOT NULL,
    version                BIGINT NOT NULL,
    last_sequence          BIGINT NOT NULL,
    policy_version         TEXT NOT NULL,
    has_active_contract    BIGINT NOT NULL,
    activity_reference     TEXT COLLATE "C",
    inactivity_flagged_for TEXT COLLATE "C",
    state                  TEXT NOT NULL
);
CREATE INDEX customer_health_color ON customer_health (color);

CREATE TABLE alerts (
    customer_id        TEXT COLLATE "C" NOT NULL,
    alert_id           TEXT COLLATE "C" NOT NULL,
    status             TEXT COLLATE "C" NOT NULL,
    color              TEXT COLLATE "C" NOT NULL,
    score              BIGINT NOT NULL,
    reasons            TEXT NOT NULL,
    recommended_action TEXT NOT NULL,
    raised_at          TEXT COLLATE "C" NOT NULL,
    escalated_at       TEXT,
    resolved_at        TEXT,
    interventions      TEXT NOT NULL,
    PRIMARY KEY (customer_id, alert_id)
);
CREATE INDEX alerts_status_color ON alerts (status, color);

CREATE TABLE renewal_customers (
    customer_id   TEXT COLLATE "C" PRIMARY KEY,
    version       BIGINT NOT NULL,
    last_sequence BIGINT NOT NULL,
    state         TEXT NOT NULL
);
CREATE TABLE renewals (
    customer_id  TEXT COLLATE "C" NOT NULL,
    contract_id  TEXT COLLATE "C" NOT NULL,
    starts_on    TEXT COLLATE "C" NOT NULL,
    ends_on      TEXT COLLATE "C" NOT NULL,
    notice_days  BIGINT NOT NULL,
    status       TEXT COLLATE "C" NOT NULL,
    value_minor  BIGINT NOT NULL,
    currency     TEXT NOT NULL,
    PRIMARY KEY (customer_id, contract_id)
);
CREATE INDEX renewals_ends_on ON renewals (ends_on);

-- The audit index: where each event is in the log, by the fields auditors filter on, with
-- business and recording time as integer microseconds since the Unix epoch (UTC).
CREATE TABLE audit_index (
    sequence    BIGINT PRIMARY KEY,
    customer_id TEXT COLLATE "C" NOT NULL,
    event_type  TEXT COLLATE "C" NOT NULL,
    actor       TEXT COLLATE "C" NOT NULL,
    occurred_us BIGINT NOT NULL,
    recorded_us BIGINT NOT NULL
);
CREATE INDEX audit_customer ON audit_index (customer_id, sequence);
CREATE INDEX audit_type ON audit_index (event_type, sequence, occurred_us);
CREATE INDEX audit_actor ON audit_index (actor, sequence);
CREATE INDEX audit_occurred ON audit_index (occurred_us);
CREATE INDEX audit_recorded ON audit_index (recorded_us);

CREATE TABLE audit_checkpoints (
    head_sequence BIGINT PRIMARY KEY,
    created_at    TEXT NOT NULL,
    customers     BIGINT NOT NULL,
    heads_digest  TEXT NOT NULL,
    signature     TEXT NOT NULL
);

CREATE TABLE chain_heads (
    customer_id TEXT COLLATE "C" PRIMARY KEY,
    version     BIGINT NOT NULL,
    hash        TEXT NOT NULL,
    sequence    BIGINT NOT NULL
);
