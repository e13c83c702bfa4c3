//! Test support: a real nats-server per test, the real gateway and projectors on free
//! ports, the read store in SQLite (a temporary directory) or PostgreSQL (fresh schemas of
//! a real server), and a small HTTP client.
//!
//! PostgreSQL is at `CRM_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/crm_test`, created if missing); `scripts/test.sh`
//! makes sure a server is there. Tests on PostgreSQL fail, rather than pass unseen, when
//! it is not.
#![allow(clippy::unwrap_used)] // test support: a panic is the failure report

use std::path::PathBuf;
use std::time::Duration;

use crm_cli::config::Config;
use crm_cli::services::{self, Parts};
use crm_gateway::{ApiKeyConfig, Role};
use crm_log::server::NatsServer;
use crm_log::{EventLog, StoredEvent, StreamSettings};
use crm_projections::store::Location;
use reqwest::StatusCode;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The key every test app accepts, with every role.
pub const KEY: &str = "test-key-all-roles";
/// A key with only the reader role.
pub const READER_KEY: &str = "test-key-reader";
/// One key per single role: (role, key).
pub const ROLE_KEYS: [(Role, &str); 4] = [
    (Role::Publisher, "test-key-publisher"),
    (Role::Reader, READER_KEY),
    (Role::Ops, "test-key-ops"),
    (Role::Auditor, "test-key-auditor"),
];
/// The audit signing key of test apps.
pub const AUDIT_KEY: &str = "test-audit-signing-key";

/// The database a test keeps its read stores in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// Runs each named `async fn(Db)` test twice: `<name>::sqlite` and `<name>::postgres`.
#[macro_export]
macro_rules! on_both_stores {
    ($($test:ident),* $(,)?) => {
        $(
            mod $test {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$test($crate::Db::Sqlite).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$test($crate::Db::Postgres).await
                }
            }
        )*
    };
}

/// The PostgreSQL database tests use.
pub fn postgres_url() -> String {
    std::env::var("CRM_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/crm_test".into())
}

/// Makes sure the test database exists (creating it through the server's `postgres`
/// database if not).
async fn ensure_postgres_database(url: &str) {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    match sqlx::AnyConnection::connect(url).await {
        Ok(conn) => {
            let _ = conn.close().await;
        }
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("3D000") => {
            let (server, name) = url.rsplit_once('/').expect("a database in the URL");
            let name = name.split('?').next().unwrap_or(name);
            let mut admin = sqlx::AnyConnection::connect(&format!("{server}/postgres"))
                .await
                .unwrap_or_else(|e| panic!("PostgreSQL at {server}: {e}"));
            let create = format!("CREATE DATABASE {name}");
            match sqlx::raw_sql(sqlx::AssertSqlSafe(create))
                .execute(&mut admin)
                .await
            {
                Ok(_) => {}
                // Another test created it meanwhile.
                Err(sqlx::Error::Database(e))
                    if matches!(e.code().as_deref(), Some("42P04" | "23505")) => {}
                Err(e) => panic!("creating test database {name}: {e}"),
            }
        }
        Err(e) => panic!(
            "PostgreSQL tests need a server at {url} (set CRM_TEST_POSTGRES_URL, or run \
             scripts/test.sh, which starts one): {e}"
        ),
    }
}

/// A nats-server and a temporary directory (and, on PostgreSQL, a schema prefix) for one
/// test.
pub struct Env {
    pub nats: NatsServer,
    pub dir: tempfile::TempDir,
    pub stream: StreamSettings,
    pub db: Db,
    /// Unique per test: the schemas of its stores start with it.
    prefix: String,
}

impl Env {
    /// Starts a fresh nats-server; read stores in SQLite.
    pub async fn new() -> Env {
        Self::with_stream(StreamSettings::default()).await
    }

    /// Starts a fresh nats-server; read stores in `db`.
    pub async fn on(db: Db) -> Env {
        Self::with(StreamSettings::default(), db).await
    }

    /// Starts a fresh nats-server; the stream will be created with `stream`.
    pub async fn with_stream(stream: StreamSettings) -> Env {
        Self::with(stream, Db::Sqlite).await
    }

    async fn with(stream: StreamSettings, db: Db) -> Env {
        if db == Db::Postgres {
            ensure_postgres_database(&postgres_url()).await;
        }
        let nats = NatsServer::start().await.expect("start nats-server");
        let id = Uuid::new_v4().simple().to_string();
        Env {
            nats,
            dir: tempfile::tempdir().expect("tempdir"),
            stream,
            db,
            prefix: format!("t{}", &id[id.len() - 12..]),
        }
    }

    /// Where the store called `name` lives: the file `name` in the test dir, or a schema
    /// named after it.
    pub fn location(&self, name: &str) -> Location {
        match self.db {
            Db::Sqlite => Location::Sqlite(self.dir.path().join(name)),
            Db::Postgres => {
                let stem: String = name
                    .split('.')
                    .next()
                    .unwrap_or(name)
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() {
                            c.to_ascii_lowercase()
                        } else {
                            '_'
                        }
                    })
                    .take(20)
                    .collect();
                Location::Postgres {
                    url: postgres_url(),
                    schema: format!("{}_{stem}", self.prefix),
                }
            }
        }
    }

    /// Opens the store called `name` (see [`Env::location`]).
    pub async fn open_store(&self, name: &str) -> crm_projections::ReadStore {
        crm_projections::ReadStore::open_at(&self.location(name))
            .await
            .unwrap_or_else(|e| panic!("open store {name}: {e}"))
    }

    /// Whether a rebuild's shadow copy of `label` next to the store `name` exists.
    pub async fn shadow_exists(&self, name: &str, label: &str) -> bool {
        match self.location(name).shadow(label) {
            Location::Sqlite(file) => file.exists(),
            Location::Postgres { url, schema } => {
                use sqlx::Connection;
                let mut conn = sqlx::AnyConnection::connect(&url).await.expect("connect");
                let (n,): (i64,) = sqlx::query_as(
                    "SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = $1",
                )
                .bind(schema)
                .fetch_one(&mut conn)
                .await
                .expect("query schemata");
                n > 0
            }
        }
    }

    /// The `CRM_STORE__*` environment of a `crm` process whose read store is the store
    /// `name` (see [`Env::location`]).
    pub fn store_env(&self, name: &str) -> Vec<(&'static str, String)> {
        match self.location(name) {
            Location::Sqlite(file) => {
                vec![("CRM_STORE__SQLITE_PATH", file.display().to_string())]
            }
            Location::Postgres { url, schema } => vec![
                ("CRM_STORE__POSTGRES_URL", url),
                ("CRM_STORE__POSTGRES_SCHEMA", schema),
            ],
        }
    }

    /// Config for an app whose read store is the store `views` (see [`Env::location`]).
    pub fn config(&self, views: &str) -> Config {
        let mut cfg = Config::default();
        cfg.nats.url = self.nats.url();
        cfg.stream = self.stream.clone();
        match self.location(views) {
            Location::Sqlite(file) => cfg.store.sqlite_path = file,
            Location::Postgres { url, schema } => {
                cfg.store.sqlite_path = self.dir.path().join(views);
                cfg.store.postgres_url = Some(url);
                cfg.store.postgres_schema = schema;
            }
        }
        cfg.projector.batch_size = 500;
        cfg.gateway.api_keys = vec![ApiKeyConfig {
            name: "tester".into(),
            key_sha256: crm_gateway::auth::hash_key(KEY),
            roles: Role::ALL.to_vec(),
        }];
        for (role, key) in ROLE_KEYS {
            cfg.gateway.api_keys.push(ApiKeyConfig {
                name: role.as_str().into(),
                key_sha256: crm_gateway::auth::hash_key(key),
                roles: vec![role],
            });
        }
        cfg.audit.signing_key = Some(crm_log::connect::Secret::new(AUDIT_KEY));
        cfg
    }

    /// Opens the log with an independent connection.
    pub async fn log(&self) -> EventLog {
        EventLog::connect(&crm_log::NatsConfig::url(self.nats.url()), &self.stream)
            .await
            .expect("open log")
    }

    /// Opens the log with an independent connection that reads everything through
    /// async-nats (no lean connections for range reads).
    pub async fn client_only_log(&self) -> EventLog {
        let client = crm_log::connect(&crm_log::NatsConfig::url(self.nats.url()))
            .await
            .expect("connect");
        EventLog::open(client, &self.stream)
            .await
            .expect("open log")
    }

    /// Path of a file in the test dir.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The audit index alone, built up to stream sequence `head`, in a new store `name`.
    pub async fn audit_index(
        &self,
        name: &str,
        log: &EventLog,
        head: u64,
    ) -> crm_projections::ReadStore {
        let store = self.open_store(name).await;
        crm_projections::Projector::new(
            crm_projections::audit::AuditProjection,
            store.clone(),
            log.clone(),
            crm_projections::ProjectorOptions::default(),
        )
        .run_until(head)
        .await
        .expect("build the audit index");
        store
    }

    /// Every view built from scratch, up to stream sequence `head`, into a new file `name`
    /// of the test dir (the reference a live or rebuilt view must equal).
    pub async fn fresh_views(
        &self,
        name: &str,
        log: &EventLog,
        head: u64,
    ) -> crm_projections::ReadStore {
        let fresh = self.open_store(name).await;
        crm_projections::rebuild::as_of(
            "all",
            std::sync::Arc::new(crm_projections::policy::default_policy()),
            &fresh,
            log,
            head,
            1_000,
        )
        .await
        .expect("build fresh views");
        fresh
    }
}

/// A running gateway (+ projectors, unless disabled) on a free port.
pub struct App {
    pub base: String,
    /// `http://127.0.0.1:<port>` of the gRPC door.
    pub grpc: String,
    pub parts: Parts,
    pub http: reqwest::Client,
    shutdown: CancellationToken,
    tasks: JoinSet<anyhow::Result<()>>,
}

impl App {
    /// Gateway and projectors.
    pub async fn start(env: &Env) -> App {
        Self::start_with(env.config("views.sqlite"), true).await
    }

    /// Gateway, and projectors when `projectors`.
    pub async fn start_with(cfg: Config, projectors: bool) -> App {
        let parts = services::open(&cfg).await.expect("open parts");
        let state = services::app_state(&cfg, &parts).expect("state");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let shutdown = CancellationToken::new();
        let mut tasks = JoinSet::new();
        if projectors {
            services::spawn_projectors(&cfg, &parts, &["all"], &mut tasks, &shutdown)
                .expect("projectors");
        }
        let grpc = TcpListener::bind("127.0.0.1:0").await.expect("bind grpc");
        let grpc_base = format!("http://{}", grpc.local_addr().expect("addr"));
        services::spawn_gateway(
            state,
            parts.log.client().clone(),
            listener,
            grpc,
            &mut tasks,
            &shutdown,
        );
        App {
            base,
            grpc: grpc_base,
            parts,
            http: reqwest::Client::new(),
            shutdown,
            tasks,
        }
    }

    /// Stops everything and waits for it.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        while let Some(r) = self.tasks.join_next().await {
            r.expect("task panicked").expect("task failed");
        }
    }

    /// POSTs a command with extra headers; returns status and JSON body.
    pub async fn command_with(
        &self,
        customer: Uuid,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .post(format!("{}/v1/customers/{customer}/commands", self.base))
            .bearer_auth(KEY)
            .json(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.expect("send");
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// POSTs a command.
    pub async fn command(&self, customer: Uuid, body: Value) -> (StatusCode, Value) {
        self.command_with(customer, &body, &[]).await
    }

    /// POSTs a command that must be accepted; returns the receipt.
    pub async fn accept(&self, customer: Uuid, body: Value) -> Value {
        self.accept_with(customer, body, &[]).await
    }

    /// POSTs a command with `headers` that must be accepted; returns the receipt.
    pub async fn accept_with(
        &self,
        customer: Uuid,
        body: Value,
        headers: &[(&str, &str)],
    ) -> Value {
        let (status, json) = self.command_with(customer, &body, headers).await;
        assert_eq!(status, StatusCode::CREATED, "{body} -> {json}");
        json
    }

    /// GETs a path with the all-roles key.
    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    /// POSTs to a path with the all-roles key and no body.
    pub async fn post(&self, path: &str) -> (StatusCode, Value) {
        self.send(self.http.post(format!("{}{path}", self.base)))
            .await
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let resp = request.bearer_auth(KEY).send().await.expect("send");
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Waits until every view has applied everything in the log.
    pub async fn settle(&self) {
        self.settle_within(Duration::from_secs(10)).await;
    }

    /// Like [`App::settle`], with a longer patience (fail-over tests).
    pub async fn settle_within(&self, patience: Duration) {
        let head = self.parts.log.head().await.expect("head");
        for name in crm_cli::services::PROJECTIONS {
            wait_for_checkpoint_within(&self.parts.store, name, head, patience).await;
        }
    }
}

/// Polls a projection's checkpoint until it reaches `target` (10 s at most).
pub async fn wait_for_checkpoint(store: &crm_projections::ReadStore, name: &str, target: u64) {
    wait_for_checkpoint_within(store, name, target, Duration::from_secs(10)).await;
}

/// Polls a projection's checkpoint until it reaches `target`.
pub async fn wait_for_checkpoint_within(
    store: &crm_projections::ReadStore,
    name: &str,
    target: u64,
    patience: Duration,
) {
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        let cp = store.checkpoint(name).await.expect("checkpoint");
        if cp >= target {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "projection {name} stuck at {cp}, target {target}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Every event of every customer in the log, read with an independent consumer.
///
/// A range read (`EventLog::read`), not a live subscription: it restarts a pull that went
/// quiet and ends with an error instead of waiting for ever, which matters after a cluster
/// node died (a subscription may then stop delivering). A read that fails is retried from
/// the start, for up to a minute.
pub async fn read_all(log: &EventLog) -> Vec<StoredEvent> {
    use futures::TryStreamExt;
    let head = log.head().await.expect("head");
    if head == 0 {
        return Vec::new();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match log.read(0, head).try_collect::<Vec<_>>().await {
            Ok(events) => {
                assert_eq!(
                    events.last().map(|e| e.sequence),
                    Some(head),
                    "the read ended before the head"
                );
                return events;
            }
            Err(e @ crm_log::LogError::Decode { .. }) => panic!("event: {e}"),
            Err(e) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the log could not be read within a minute: {e}"
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// Checks one customer's chain: versions 1..n, prev_hash links, valid hashes.
pub fn assert_chain(events: &[StoredEvent]) {
    let mut prev = crm_log::envelope::GENESIS_HASH.to_owned();
    for (i, e) in events.iter().enumerate() {
        assert_eq!(
            e.envelope.version,
            i as u64 + 1,
            "version gap at {}",
            e.sequence
        );
        assert_eq!(
            e.envelope.prev_hash,
            prev,
            "broken link at version {}",
            i + 1
        );
        assert!(e.envelope.hash_is_valid(), "bad hash at version {}", i + 1);
        prev = e.envelope.hash.clone();
    }
}

/// A register_customer body.
pub fn register(name: &str) -> Value {
    serde_json::json!({ "type": "register_customer", "name": name })
}

/// A sign_contract body.
pub fn sign(contract: &str) -> Value {
    serde_json::json!({
        "type": "sign_contract", "contract_id": contract, "value_minor": 1_200_000,
        "currency": "EUR", "starts_on": "2025-01-01", "ends_on": "2025-12-31"
    })
}

/// Registers `n` new customers (named `C0`, `C1`, …) on `log` and signs contract `c1`
/// for each: `2 * n` events, appended in order through the command path.
pub async fn register_and_sign(log: &EventLog, n: usize) {
    let customers = crm_log::Customers::new(log.clone(), 1_000, 8);
    for i in 0..n {
        let customer = crm_domain::CustomerId::new(Uuid::now_v7());
        for body in [register(&format!("C{i}")), sign("c1")] {
            let cmd: crm_domain::Command = serde_json::from_value(body).unwrap();
            customers
                .submit(customer, &cmd, &crm_log::SubmitOptions::now("tester"))
                .await
                .unwrap();
        }
    }
}

/// Every view table of a store, as text, for comparing two copies.
pub async fn dump_views(store: &crm_projections::ReadStore) -> Vec<String> {
    use crm_projections::{health, lifecycle, renewals, trust};
    let mut out = Vec::new();
    out.extend(
        lifecycle::dump(store)
            .await
            .expect("dump")
            .iter()
            .map(|r| format!("{r:?}")),
    );
    out.extend(
        lifecycle::dump_transitions(store)
            .await
            .expect("dump")
            .iter()
            .map(|r| format!("{r:?}")),
    );
    out.extend(
        trust::dump(store)
            .await
            .expect("dump")
            .iter()
            .map(|r| format!("{r:?}")),
    );
    out.extend(
        trust::ledger_sums(store)
            .await
            .expect("dump")
            .iter()
            .map(|r| format!("{r:?}")),
    );
    out.extend(
        health::dump(store)
            .await
            .expect("dump")
            .iter()
            .map(|r| format!("{r:?}")),
    );
    out.extend(
        renewals::dump(store)
            .await
            .expect("dump")
            .iter()
            .map(|r| format!("{r:?}")),
    );
    let alerts = health::open_alerts(store, None, None, 100_000)
        .await
        .expect("alerts");
    out.extend(alerts.iter().map(|a| format!("{a:?}")));
    out
}

/// `(contract_id, status)` of each contract on a `GET /v1/renewals` page, in page order.
pub fn renewal_statuses(page: &Value) -> Vec<(Value, Value)> {
    page["renewals"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|r| (r["contract_id"].clone(), r["status"].clone()))
                .collect()
        })
        .unwrap_or_default()
}
