//! The PostgreSQL schema, as versioned migrations recorded in `sonde_schema`. A migration is
//! never edited once released: a change is a new entry at the end. Migrations run in one
//! transaction under an advisory lock, so probers starting together apply each once.
//!
//! The tables mirror SQLite's (`store/sqlite/schema.rs`) column for column, with PostgreSQL's
//! types: booleans as `boolean`, histograms as `bytea` (HdrHistogram V2 blobs, as in
//! SQLite), ITL gaps as `bigint[]`. Keys and ordered text columns use the "C" collation, so
//! rows sort byte by byte as in SQLite and both backends return them in the same order.

use tokio_postgres::Transaction;

/// Serializes migrations across processes (`pg_advisory_xact_lock`).
const MIGRATION_LOCK: i64 = 0x736f_6e64_655f_6d69; // "sonde_mi"

const V1: &str = r#"
CREATE TABLE results (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id TEXT COLLATE "C" NOT NULL UNIQUE,
    ts_ms BIGINT NOT NULL,
    ts TEXT NOT NULL,
    target TEXT COLLATE "C" NOT NULL,
    provider TEXT COLLATE "C" NOT NULL,
    model TEXT NOT NULL,
    "group" TEXT NOT NULL,
    probe TEXT COLLATE "C" NOT NULL,
    outcome TEXT NOT NULL,
    http_status INTEGER,
    queue_lag_ms DOUBLE PRECISION NOT NULL,
    ttfb_ms DOUBLE PRECISION,
    ttft_ms DOUBLE PRECISION,
    ttfat_ms DOUBLE PRECISION,
    e2e_ms DOUBLE PRECISION,
    itl_p50_ms DOUBLE PRECISION,
    itl_max_ms DOUBLE PRECISION,
    input_tokens BIGINT,
    output_tokens BIGINT,
    reasoning_tokens BIGINT,
    tokens_estimated BOOLEAN NOT NULL,
    tokens_per_s DOUBLE PRECISION,
    chunks BIGINT NOT NULL,
    streamed BOOLEAN NOT NULL,
    served_model TEXT,
    cost_usd DOUBLE PRECISION,
    retry_after_s DOUBLE PRECISION,
    error TEXT,
    connect_ms DOUBLE PRECISION,
    close_ms DOUBLE PRECISION,
    finish_reason TEXT,
    ratelimit_remaining_requests NUMERIC(20),
    ratelimit_remaining_tokens NUMERIC(20),
    model_substituted BOOLEAN NOT NULL,
    upstream TEXT,
    cap_streaming BOOLEAN,
    cap_usage_in_stream BOOLEAN,
    cap_tools BOOLEAN,
    cap_json BOOLEAN,
    gateway_alias BOOLEAN NOT NULL DEFAULT FALSE,
    itl_gaps_us BIGINT[]
);
-- Pruning past retention and every window read are range scans on time.
CREATE INDEX results_by_time ON results (ts_ms);
CREATE INDEX results_by_target ON results (target, ts_ms);

-- span: 'hour' or 'day'; bucket: unix ms of its start (UTC).
CREATE TABLE rollups (
    span TEXT COLLATE "C" NOT NULL,
    bucket BIGINT NOT NULL,
    target TEXT COLLATE "C" NOT NULL,
    probe TEXT COLLATE "C" NOT NULL,
    scalars TEXT NOT NULL,
    ttft BYTEA NOT NULL,
    e2e BYTEA NOT NULL,
    itl BYTEA NOT NULL,
    tps BYTEA NOT NULL,
    PRIMARY KEY (span, bucket, target, probe)
);

-- month: 'YYYY-MM' (UTC).
CREATE TABLE spend (
    provider TEXT COLLATE "C" NOT NULL,
    month TEXT COLLATE "C" NOT NULL,
    usd DOUBLE PRECISION NOT NULL,
    tokens BIGINT NOT NULL,
    PRIMARY KEY (provider, month)
);

CREATE TABLE target_state (
    target TEXT COLLATE "C" PRIMARY KEY,
    health TEXT NOT NULL
);

CREATE TABLE incidents (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    target TEXT COLLATE "C" NOT NULL,
    state TEXT NOT NULL,
    cause TEXT NOT NULL,
    start_ms BIGINT NOT NULL,
    end_ms BIGINT
);
CREATE INDEX incidents_by_target ON incidents (target, start_ms);
"#;

/// Locations and the fleet: every result, rollup, state, spend and incident belongs to the
/// location of the prober that wrote it (`''` for rows written before, given to the writer
/// that upgrades the store); `locations` holds heartbeats; `rate_leases` the probers'
/// shares of each provider's rate limit; `budget_reservations` the worst cases of runs in
/// flight against each provider's monthly budget.
const V2: &str = r#"
ALTER TABLE results ADD COLUMN location TEXT COLLATE "C" NOT NULL DEFAULT '';

ALTER TABLE rollups ADD COLUMN location TEXT COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE rollups DROP CONSTRAINT rollups_pkey;
ALTER TABLE rollups ADD PRIMARY KEY (span, bucket, target, probe, location);

ALTER TABLE spend ADD COLUMN location TEXT COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE spend DROP CONSTRAINT spend_pkey;
ALTER TABLE spend ADD PRIMARY KEY (provider, month, location);

ALTER TABLE target_state ADD COLUMN location TEXT COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE target_state DROP CONSTRAINT target_state_pkey;
ALTER TABLE target_state ADD PRIMARY KEY (target, location);

ALTER TABLE incidents ADD COLUMN location TEXT COLLATE "C" NOT NULL DEFAULT '';
DROP INDEX incidents_by_target;
CREATE INDEX incidents_by_target ON incidents (target, location, start_ms);

CREATE TABLE locations (
    location TEXT COLLATE "C" PRIMARY KEY,
    seen_ms BIGINT NOT NULL,
    shortest_ms BIGINT NOT NULL
);

CREATE TABLE rate_leases (
    provider TEXT COLLATE "C" NOT NULL,
    location TEXT COLLATE "C" NOT NULL,
    since_ms BIGINT NOT NULL,
    renewed_ms BIGINT NOT NULL,
    PRIMARY KEY (provider, location)
);

CREATE TABLE budget_reservations (
    run_id TEXT COLLATE "C" PRIMARY KEY,
    provider TEXT COLLATE "C" NOT NULL,
    month TEXT COLLATE "C" NOT NULL,
    location TEXT COLLATE "C" NOT NULL,
    usd DOUBLE PRECISION NOT NULL,
    tokens BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL
);
CREATE INDEX budget_reservations_by_provider ON budget_reservations (provider, month);
"#;

/// The quality canary: each result's item kind, judgement and its detail; incidents get a
/// kind, so a quality incident and an availability incident of one target are apart.
const V3: &str = r#"
ALTER TABLE results ADD COLUMN quality_item TEXT;
ALTER TABLE results ADD COLUMN quality TEXT;
ALTER TABLE results ADD COLUMN quality_detail TEXT;
ALTER TABLE incidents ADD COLUMN kind TEXT NOT NULL DEFAULT 'health';
"#;

/// Alerts: the outbox of notifications, written in the transaction of the change behind
/// them, marked sent once a receiver took them.
const V4: &str = r#"
CREATE TABLE outbox (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    location TEXT COLLATE "C" NOT NULL,
    alert TEXT COLLATE "C" NOT NULL,
    body TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    sent_ms BIGINT
);
CREATE INDEX outbox_pending ON outbox (location, id) WHERE sent_ms IS NULL;
"#;

/// Rollup versions: every write of a rollup row gives it the next value of a sequence (no
/// lock between the locations' writers), and the primary key's index carries each row's
/// version, so a publisher learns which rows changed by an index-only scan instead of
/// reading a month of scalars and histograms.
const V5: &str = r#"
ALTER TABLE rollups ADD COLUMN version BIGINT NOT NULL DEFAULT 0;
CREATE SEQUENCE rollup_version;
ALTER TABLE rollups DROP CONSTRAINT rollups_pkey;
ALTER TABLE rollups ADD PRIMARY KEY (span, bucket, target, probe, location) INCLUDE (version);
"#;

/// What a reader saw: results and rollups carry the id of the transaction that last wrote
/// them (a constant for the rows from before, which every reader has seen), so a reader
/// asks for the rows whose transaction its last snapshot did not see; pruning records the
/// bounds it deleted before. The default is set apart from the column so that adding it
/// does not rewrite the tables.
const V6: &str = r#"
ALTER TABLE results ADD COLUMN xact xid8 NOT NULL DEFAULT '0';
ALTER TABLE results ALTER COLUMN xact SET DEFAULT pg_current_xact_id();
CREATE INDEX results_by_xact ON results (xact);
ALTER TABLE rollups ADD COLUMN xact xid8 NOT NULL DEFAULT '0';
ALTER TABLE rollups ALTER COLUMN xact SET DEFAULT pg_current_xact_id();
CREATE INDEX rollups_by_xact ON rollups (xact);
CREATE TABLE pruned (results_before BIGINT NOT NULL, rollups_before BIGINT NOT NULL);
INSERT INTO pruned VALUES (-9223372036854775808, -9223372036854775808);
"#;

/// The publisher's checkpoint (`publish::checkpoint`): one row, replaced as a whole. Its
/// body is already compact, so PostgreSQL stores it out of line without compressing it.
const V7: &str = r#"
CREATE TABLE checkpoint (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    saved_ms BIGINT NOT NULL,
    body BYTEA NOT NULL
);
ALTER TABLE checkpoint ALTER COLUMN body SET STORAGE EXTERNAL;
"#;

/// Packed points (`postgres/points.rs`): per span, bucket and location the charts' scalars
/// of its rollups in one row, below each location's bound in `packed`. The locations
/// already written are registered with nothing packed; their writers pack as they write.
const V8: &str = r#"
CREATE TABLE points (
    span TEXT COLLATE "C" NOT NULL,
    bucket BIGINT NOT NULL,
    location TEXT COLLATE "C" NOT NULL,
    body BYTEA NOT NULL,
    PRIMARY KEY (span, bucket, location)
);
CREATE TABLE packed (
    span TEXT COLLATE "C" NOT NULL,
    location TEXT COLLATE "C" NOT NULL,
    before BIGINT NOT NULL,
    PRIMARY KEY (span, location)
);
INSERT INTO packed (span, location, before)
    SELECT DISTINCT span, location, -9223372036854775808 FROM rollups;
"#;

/// The checkpoint is a cache of what a publisher kept: kept out of the WAL, since
/// replacing it (about 20 MiB at 10 locations × 1,000 targets, every 5 minutes) wrote as
/// much WAL each time, for every replica and WAL archive to carry. A crash of the server
/// empties it, as replicas never have it: a publisher starting before the next save reads
/// the store whole, which is what it holds.
const V9: &str = "ALTER TABLE checkpoint SET UNLOGGED;";

/// Incidents carry the id of the transaction that opened or last changed them, so a
/// publisher reads only those its last snapshot did not see. A trigger sets it on every
/// update, whoever makes it: a prober of the version before, still running while a fleet
/// is upgraded, closes incidents without knowing the column. The first read, of the open
/// ones and those that ended since a time, goes through an index instead of every incident
/// ever written.
const V10: &str = r#"
ALTER TABLE incidents ADD COLUMN xact xid8 NOT NULL DEFAULT '0';
ALTER TABLE incidents ALTER COLUMN xact SET DEFAULT pg_current_xact_id();
CREATE INDEX incidents_by_xact ON incidents (xact);
CREATE INDEX incidents_by_end ON incidents (end_ms);
CREATE FUNCTION incident_written() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.xact := pg_current_xact_id();
    RETURN NEW;
END
$$;
CREATE TRIGGER incident_written BEFORE UPDATE ON incidents
    FOR EACH ROW EXECUTE FUNCTION incident_written();
"#;

/// A location may be retired (`sonde store retire`): when, or `NULL` if never; it is back
/// in service once a heartbeat is later.
const V11: &str = "ALTER TABLE locations ADD COLUMN retired_ms BIGINT;";

/// `sonde_schema` records the oldest schema version whose sonde may still write the store
/// ([`OLDEST_WRITER`]), so that a fleet upgraded prober by prober keeps the probers of the
/// version before writing when no migration since needs their code to change.
const V12: &str = "ALTER TABLE sonde_schema ADD COLUMN oldest_writer INTEGER;";

/// A location's heartbeat is stamped with the database's clock when its prober writes it
/// (`heard_ms`), so that a fleet judges every prober's silence on one clock: a prober whose
/// clock is behind no longer looks stale, nor one whose clock is ahead fresh after it
/// died. A heartbeat that moves `seen_ms` without stamping (a prober of a version before,
/// an import) clears the stamp, and its location is judged on `seen_ms` again. So does a
/// retirement, by any version: a stamp then says its prober wrote after it.
const V13: &str = r#"
ALTER TABLE locations ADD COLUMN heard_ms BIGINT;
CREATE FUNCTION location_heard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.retired_ms IS DISTINCT FROM OLD.retired_ms THEN
        NEW.heard_ms := NULL;
    ELSIF NEW.heard_ms IS NOT DISTINCT FROM OLD.heard_ms AND NEW.seen_ms > OLD.seen_ms THEN
        NEW.heard_ms := NULL;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER location_heard BEFORE UPDATE ON locations
    FOR EACH ROW EXECUTE FUNCTION location_heard();
"#;

/// The oldest schema version whose sonde may read and write a store at [`LATEST`]: raised
/// to a migration's own version when code of the version before cannot work with it (a
/// column it must fill, a table or column it uses renamed or dropped); left when a migration
/// only adds what older statements do not notice (a table, a column that is nullable or has
/// a default, an index, a trigger). Migrations 11 and 12 each only add a nullable column,
/// 13 one and a trigger that keeps it right whoever writes.
pub const OLDEST_WRITER: i32 = 10;

/// The schema version that gave rows a location.
pub const LOCATIONS_VERSION: i32 = 2;

/// The tables whose rows belong to a location, for giving the rows written before locations
/// existed to the first writer.
pub const LOCATED_TABLES: &[&str] = &["results", "rollups", "spend", "target_state", "incidents"];

/// Every migration, oldest first; migration `n` (from 1) brings the schema to version `n`.
const MIGRATIONS: &[&str] = &[V1, V2, V3, V4, V5, V6, V7, V8, V9, V10, V11, V12, V13];

/// The version this build writes and reads.
pub const LATEST: i32 = MIGRATIONS.len() as i32;

/// A sonde store's schema, as `sonde_schema` records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    /// Its version.
    pub version: i32,
    /// The oldest schema version whose sonde may write it; its own version where the store
    /// records none (before migration 12).
    pub oldest_writer: i32,
}

impl Found {
    /// Whether this build reads and writes it as it is: it is at [`LATEST`], or newer but
    /// only by migrations that code of this build's version may still write with.
    pub fn writable(self) -> bool {
        self.version == LATEST || (self.version > LATEST && self.oldest_writer <= LATEST)
    }
}

/// Brings the schema to [`LATEST`] inside `tx`; returns the version it found (0 for a new
/// store). A schema a newer sonde migrated is left as it is when this build may write it
/// ([`Found::writable`]), else an error.
pub async fn migrate(tx: &Transaction<'_>) -> Result<i32, String> {
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(|err| err.to_string())?;
    // Without it the server's notice that the table exists was logged at every connection.
    tx.batch_execute(
        "SET LOCAL client_min_messages = warning;
         CREATE TABLE IF NOT EXISTS sonde_schema (version INTEGER NOT NULL)",
    )
    .await
    .map_err(|err| err.to_string())?;
    let found = found(tx).await?;
    let current = found.map_or(0, |found| found.version);
    if current > LATEST {
        return match found {
            Some(found) if found.writable() => Ok(current),
            _ => Err(super::super::schema_mismatch(current.into(), LATEST.into())),
        };
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        tx.batch_execute(sql)
            .await
            .map_err(|err| format!("migration {}: {err}", index + 1))?;
    }
    tx.execute("DELETE FROM sonde_schema", &[])
        .await
        .map_err(|err| err.to_string())?;
    tx.execute(
        "INSERT INTO sonde_schema (version, oldest_writer) VALUES ($1, $2)",
        &[&LATEST, &OLDEST_WRITER],
    )
    .await
    .map_err(|err| err.to_string())?;
    Ok(current)
}

/// The stored schema; `None` when no sonde store is in this database.
pub async fn found(client: &impl tokio_postgres::GenericClient) -> Result<Option<Found>, String> {
    let exists: bool = client
        .query_one("SELECT to_regclass('sonde_schema') IS NOT NULL", &[])
        .await
        .and_then(|row| row.try_get(0))
        .map_err(|err| err.to_string())?;
    if !exists {
        return Ok(None);
    }
    recorded(client).await
}

/// What `sonde_schema` records, in a database that has the table.
async fn recorded(client: &impl tokio_postgres::GenericClient) -> Result<Option<Found>, String> {
    // Every column, by name: a store from before migration 12 has no `oldest_writer`.
    let row = client
        .query_opt(
            "SELECT * FROM sonde_schema ORDER BY version DESC LIMIT 1",
            &[],
        )
        .await
        .map_err(|err| err.to_string())?;
    let Some(row) = row else {
        return Ok(None);
    };
    let version: i32 = row.try_get("version").map_err(|err| err.to_string())?;
    let oldest_writer = row
        .try_get::<_, Option<i32>>("oldest_writer")
        .ok()
        .flatten()
        .unwrap_or(version);
    Ok(Some(Found {
        version,
        oldest_writer,
    }))
}

/// Waits in `tx` for a migration under way (it holds the migrations' lock, which each
/// write transaction shares until it ends, so none runs half on either side of one), then
/// checks that this build may still write the schema: a writer's session checks it when
/// it connects, and a newer daemon may migrate the store while the session lasts. An error
/// (the session's writes wait, held, until this build is upgraded) when it may not.
pub async fn still_writable(tx: &Transaction<'_>) -> Result<(), String> {
    tx.execute(
        "SELECT pg_advisory_xact_lock_shared($1)",
        &[&MIGRATION_LOCK],
    )
    .await
    .map_err(|err| err.to_string())?;
    match recorded(tx).await? {
        Some(found) if found.writable() => Ok(()),
        found => Err(super::super::schema_mismatch(
            found.map_or(0, |found| found.version).into(),
            LATEST.into(),
        )),
    }
}
