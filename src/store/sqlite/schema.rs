//! The store's schema, as versioned migrations (SQLite `user_version`). A migration is never
//! edited once released: a change is a new entry at the end.

use rusqlite_migration::{M, Migrations};

/// The record fields stored as columns, in `ResultRecord` order (`run_id` is the key).
/// `store::tests` checks this list against the record's serialized fields.
pub const RESULT_COLUMNS: &[&str] = &[
    "ts",
    "target",
    "provider",
    "model",
    "group",
    "probe",
    "outcome",
    "http_status",
    "queue_lag_ms",
    "ttfb_ms",
    "ttft_ms",
    "ttfat_ms",
    "e2e_ms",
    "itl_p50_ms",
    "itl_max_ms",
    "input_tokens",
    "output_tokens",
    "reasoning_tokens",
    "tokens_estimated",
    "tokens_per_s",
    "chunks",
    "streamed",
    "served_model",
    "cost_usd",
    "retry_after_s",
    "error",
    "connect_ms",
    "close_ms",
    "finish_reason",
    "ratelimit_remaining_requests",
    "ratelimit_remaining_tokens",
    "model_substituted",
    "upstream",
    "cap_streaming",
    "cap_usage_in_stream",
    "cap_tools",
    "cap_json",
    "run_id",
    "gateway_alias",
    "location",
    "quality_item",
    "quality",
    "quality_detail",
];

const V1: &str = r#"
CREATE TABLE results (
    id INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL UNIQUE,
    ts_ms INTEGER NOT NULL,
    ts TEXT NOT NULL,
    target TEXT NOT NULL,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    "group" TEXT NOT NULL,
    probe TEXT NOT NULL,
    outcome TEXT NOT NULL,
    http_status INTEGER,
    queue_lag_ms REAL NOT NULL,
    ttfb_ms REAL,
    ttft_ms REAL,
    ttfat_ms REAL,
    e2e_ms REAL,
    itl_p50_ms REAL,
    itl_max_ms REAL,
    input_tokens INTEGER,
    output_tokens INTEGER,
    reasoning_tokens INTEGER,
    tokens_estimated INTEGER NOT NULL,
    tokens_per_s REAL,
    chunks INTEGER NOT NULL,
    streamed INTEGER NOT NULL,
    served_model TEXT,
    cost_usd REAL,
    retry_after_s REAL,
    error TEXT,
    connect_ms REAL,
    close_ms REAL,
    finish_reason TEXT,
    ratelimit_remaining_requests INTEGER,
    ratelimit_remaining_tokens INTEGER,
    model_substituted INTEGER NOT NULL,
    upstream TEXT,
    cap_streaming INTEGER,
    cap_usage_in_stream INTEGER,
    cap_tools INTEGER,
    cap_json INTEGER,
    itl_gaps BLOB
);
CREATE INDEX results_by_time ON results (ts_ms);
CREATE INDEX results_by_target ON results (target, ts_ms);

-- span: 'hour' or 'day'; bucket: unix ms of its start (UTC).
CREATE TABLE rollups (
    span TEXT NOT NULL,
    bucket INTEGER NOT NULL,
    target TEXT NOT NULL,
    probe TEXT NOT NULL,
    scalars TEXT NOT NULL,
    ttft BLOB NOT NULL,
    e2e BLOB NOT NULL,
    itl BLOB NOT NULL,
    tps BLOB NOT NULL,
    PRIMARY KEY (span, bucket, target, probe)
) WITHOUT ROWID;

-- month: 'YYYY-MM' (UTC).
CREATE TABLE spend (
    provider TEXT NOT NULL,
    month TEXT NOT NULL,
    usd REAL NOT NULL,
    tokens INTEGER NOT NULL,
    PRIMARY KEY (provider, month)
) WITHOUT ROWID;

CREATE TABLE target_state (
    target TEXT PRIMARY KEY,
    health TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE incidents (
    id INTEGER PRIMARY KEY,
    target TEXT NOT NULL,
    state TEXT NOT NULL,
    cause TEXT NOT NULL,
    start_ms INTEGER NOT NULL,
    end_ms INTEGER
);
CREATE INDEX incidents_by_target ON incidents (target, start_ms);
"#;

/// `gateway_alias`: the answer was named by a gateway's route alias (LiteLLM).
const V2: &str = "ALTER TABLE results ADD COLUMN gateway_alias INTEGER NOT NULL DEFAULT 0;";

/// Locations: every result, rollup, state, spend and incident belongs to the location of the
/// prober that wrote it (`''` for rows written before, given to the writer that upgrades the
/// store); `locations` holds each one's heartbeat.
const V3: &str = r#"
ALTER TABLE results ADD COLUMN location TEXT NOT NULL DEFAULT '';

CREATE TABLE rollups_v3 (
    span TEXT NOT NULL,
    bucket INTEGER NOT NULL,
    target TEXT NOT NULL,
    probe TEXT NOT NULL,
    location TEXT NOT NULL,
    scalars TEXT NOT NULL,
    ttft BLOB NOT NULL,
    e2e BLOB NOT NULL,
    itl BLOB NOT NULL,
    tps BLOB NOT NULL,
    PRIMARY KEY (span, bucket, target, probe, location)
) WITHOUT ROWID;
INSERT INTO rollups_v3 SELECT span, bucket, target, probe, '', scalars, ttft, e2e, itl, tps
    FROM rollups;
DROP TABLE rollups;
ALTER TABLE rollups_v3 RENAME TO rollups;

CREATE TABLE spend_v3 (
    provider TEXT NOT NULL,
    month TEXT NOT NULL,
    location TEXT NOT NULL,
    usd REAL NOT NULL,
    tokens INTEGER NOT NULL,
    PRIMARY KEY (provider, month, location)
) WITHOUT ROWID;
INSERT INTO spend_v3 SELECT provider, month, '', usd, tokens FROM spend;
DROP TABLE spend;
ALTER TABLE spend_v3 RENAME TO spend;

CREATE TABLE target_state_v3 (
    target TEXT NOT NULL,
    location TEXT NOT NULL,
    health TEXT NOT NULL,
    PRIMARY KEY (target, location)
) WITHOUT ROWID;
INSERT INTO target_state_v3 SELECT target, '', health FROM target_state;
DROP TABLE target_state;
ALTER TABLE target_state_v3 RENAME TO target_state;

ALTER TABLE incidents ADD COLUMN location TEXT NOT NULL DEFAULT '';
DROP INDEX incidents_by_target;
CREATE INDEX incidents_by_target ON incidents (target, location, start_ms);

CREATE TABLE locations (
    location TEXT PRIMARY KEY,
    seen_ms INTEGER NOT NULL,
    shortest_ms INTEGER NOT NULL
) WITHOUT ROWID;
"#;

/// The quality canary: each result's item kind, judgement and its detail; incidents get a
/// kind, so a quality incident and an availability incident of one target are apart.
const V4: &str = r#"
ALTER TABLE results ADD COLUMN quality_item TEXT;
ALTER TABLE results ADD COLUMN quality TEXT;
ALTER TABLE results ADD COLUMN quality_detail TEXT;
ALTER TABLE incidents ADD COLUMN kind TEXT NOT NULL DEFAULT 'health';
"#;

/// Alerts: the outbox of notifications, written in the transaction of the change behind
/// them, marked sent once a receiver took them.
const V5: &str = r#"
CREATE TABLE outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    location TEXT NOT NULL,
    alert TEXT NOT NULL,
    body TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    sent_ms INTEGER
);
CREATE INDEX outbox_pending ON outbox (location, id) WHERE sent_ms IS NULL;
"#;

/// Rollup versions: every write of a rollup row gives it the next value of a store-wide
/// counter, and an index holds each row's key and version, so a publisher learns which rows
/// changed without reading a month of scalars and histograms.
const V6: &str = r#"
ALTER TABLE rollups ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
CREATE INDEX rollups_versions ON rollups (span, bucket, target, probe, location, version);
CREATE TABLE rollup_version (n INTEGER NOT NULL);
INSERT INTO rollup_version VALUES (0);
"#;

/// What a reader saw: every write transaction takes the next value of the write counter
/// (`rollup_version`, from V6) for its results as for its rollups, so a reader asks for the
/// rows with a greater one; pruning records the bounds it deleted before.
const V7: &str = r#"
ALTER TABLE results ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
CREATE INDEX results_by_version ON results (version);
CREATE INDEX rollups_by_version ON rollups (span, version);
CREATE TABLE pruned (results_before INTEGER NOT NULL, rollups_before INTEGER NOT NULL);
INSERT INTO pruned VALUES (-9223372036854775808, -9223372036854775808);
"#;

/// The publisher's checkpoint (`publish::checkpoint`): one row, replaced as a whole.
const V8: &str = r#"
CREATE TABLE checkpoint (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    saved_ms INTEGER NOT NULL,
    body BLOB NOT NULL
);
"#;

/// Incidents carry the write counter's value of the transaction that opened or last
/// changed them, so a publisher reads only those written since its last read.
const V9: &str = r#"
ALTER TABLE incidents ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
CREATE INDEX incidents_by_version ON incidents (version);
"#;

/// A location may be retired (`sonde store retire`): when, or `NULL` if never; it is back
/// in service once a heartbeat is later.
const V10: &str = "ALTER TABLE locations ADD COLUMN retired_ms INTEGER;";

/// The schema version that gave rows a location.
pub const LOCATIONS_VERSION: i64 = 3;

/// The tables whose rows belong to a location, for giving the rows written before locations
/// existed to the first writer.
pub const LOCATED_TABLES: &[&str] = &["results", "rollups", "spend", "target_state", "incidents"];

/// Every migration, oldest first; migration `n` (from 1) brings the schema to version `n`.
const ALL: &[&str] = &[V1, V2, V3, V4, V5, V6, V7, V8, V9, V10];

/// The version this build writes and reads.
pub const LATEST: i64 = ALL.len() as i64;

/// Every migration, oldest first.
pub fn migrations() -> Migrations<'static> {
    Migrations::new(ALL.iter().map(|sql| M::up(sql)).collect())
}

#[cfg(test)]
mod tests {
    #[test]
    fn migrations_are_valid() {
        assert!(super::migrations().validate().is_ok());
    }
}
