//! Wires the stages: journal, MLLP listener, HTTP listener, outbox; owns
//! graceful shutdown (stop accepting, finish answering what was read, flush
//! the journal).

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::alert::desk::Desk;
use crate::audit::AuditRecord;
use crate::clock::Clock;
use crate::config::Config;
use crate::journal::{self, Journal, SqliteStorage, Storage, StorageError};
use crate::journal::{AfterCommit, Committed};
use crate::listener::ack::AckIds;
use crate::listener::connection::Shared;
use crate::listener::tls::TlsError;
use crate::listener::{app_ack, http, server, tls};
use crate::live::{self, LiveCensus, LiveRouting, ReloadOutcome};
use crate::telemetry::Metrics;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// TLS files are unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The journal could not be opened.
    #[error("journal: {0}")]
    Storage(#[from] StorageError),
    /// A delivery backend could not be prepared.
    #[error("{0}")]
    Backend(String),
}

/// A running gateway.
pub struct Gateway {
    mllp_addr: SocketAddr,
    http_addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl Gateway {
    /// Starts on the configured SQLite journal and the system clock.
    pub async fn start(config: Config) -> Result<Gateway, StartError> {
        let clock = Clock::system();
        let now = clock.now_utc();
        let protection = journal::protection(&config, now)?;
        let storage = SqliteStorage::open(&config.journal_path(), protection, now)?;
        Gateway::start_with(config, Box::new(storage), clock).await
    }

    /// Starts on the given storage and clock (tests inject faults and time).
    pub async fn start_with(
        config: Config,
        storage: Box<dyn Storage>,
        clock: Clock,
    ) -> Result<Gateway, StartError> {
        let acceptor = match &config.mllp.tls {
            Some(t) => Some(tokio_rustls::TlsAcceptor::from(tls::server_config(t)?)),
            None => None,
        };
        let mllp = TcpListener::bind(config.mllp.listen)
            .await
            .map_err(|source| StartError::Bind {
                addr: config.mllp.listen,
                source,
            })?;
        let http_listener = TcpListener::bind(config.http.listen)
            .await
            .map_err(|source| StartError::Bind {
                addr: config.http.listen,
                source,
            })?;
        let mllp_addr = mllp.local_addr().map_err(|source| StartError::Bind {
            addr: config.mllp.listen,
            source,
        })?;
        let http_addr = http_listener
            .local_addr()
            .map_err(|source| StartError::Bind {
                addr: config.http.listen,
                source,
            })?;
        let mut storage = storage;
        let census = load_census(&mut *storage, &config)?;
        let console = storage.rosters_current()?;
        let mut desk = Desk::load(&mut *storage, config.alerts.clone(), clock.now_utc())?;
        let metrics = Arc::new(Metrics::default());
        let alarms = Arc::new(crate::operator::Alarms::new(metrics.clone()));
        desk.alarms = Some(alarms.clone());
        desk.metrics = Some(metrics.clone());
        desk.status = crate::status::Hooks::new(&config.status);
        tracing::info!(live_alerts = desk.live(), "alerts loaded from the journal");
        let alert_wake = Arc::new(Notify::new());
        let mut census_hook = census.after_commit();
        let wake = alert_wake.clone();
        let hook: AfterCommit = Box::new(move |batch, answers| {
            census_hook(batch, answers);
            let routable = batch
                .iter()
                .zip(answers)
                .any(|(m, a)| matches!(a, Committed::Stored { .. }) && !m.events.is_empty());
            if routable {
                wake.notify_one();
            }
        });
        let journal = Journal::start_with_hook(storage, &config.storage, Some(hook));
        // The configuration was validated with these console rosters.
        let routing = Arc::new(LiveRouting::new(&config, clock.now_utc(), &console));
        let shared = Arc::new(Shared {
            ids: AckIds::new(clock.now_utc()),
            config: Arc::new(config),
            journal,
            clock,
            metrics,
            outbox_wake: Arc::new(Notify::new()),
            census,
            routing,
            desk: Arc::new(std::sync::Mutex::new(desk)),
            alert_wake,
            timer_wake: Arc::new(Notify::new()),
            delivery_wake: Arc::new(Notify::new()),
            alarms,
            alerts_changed: tokio::sync::watch::Sender::new(0),
            stopping: CancellationToken::new(),
        });
        let shutdown = shared.stopping.clone();
        let tasks = TaskTracker::new();
        tasks.spawn(server::run(
            mllp,
            shared.clone(),
            acceptor,
            shutdown.clone(),
            tasks.clone(),
        ));
        let http_acceptor = match &shared.config.http.tls {
            Some(t) => Some(tokio_rustls::TlsAcceptor::from(tls::server_config(t)?)),
            None => None,
        };
        tasks.spawn(http::run(
            http_listener,
            shared.clone(),
            http_acceptor,
            shutdown.clone(),
            tasks.clone(),
        ));
        tasks.spawn(app_ack::run(
            shared.clone(),
            shared.outbox_wake.clone(),
            shutdown.clone(),
        ));
        tasks.spawn(recover_journal(shared.clone(), shutdown.clone()));
        tasks.spawn(census_snapshots(shared.clone(), shutdown.clone()));
        tasks.spawn(alerts::route(shared.clone(), shutdown.clone()));
        tasks.spawn(alerts::timers(shared.clone(), shutdown.clone()));
        tasks.spawn(crate::operator::run(shared.clone(), shutdown.clone()));
        tasks.spawn(crate::operator::heartbeat(shared.clone(), shutdown.clone()));
        tasks.spawn(crate::operator::watch::run(
            shared.clone(),
            shutdown.clone(),
        ));
        if shared.config.backends.is_empty() {
            tracing::warn!(
                "no [[backends]] configured: alerts are raised, escalated and audited, but nobody is notified"
            );
        }
        for cfg in &shared.config.backends {
            let mut prepared =
                crate::delivery::Backend::prepare(cfg).map_err(StartError::Backend)?;
            if cfg.kind == crate::config::BackendKind::Matrix {
                // Reactions, replies and read receipts come back through /sync.
                let link = crate::delivery::matrix::Link::new(cfg, &shared.config.storage.data_dir)
                    .map_err(StartError::Backend)?;
                let link = Arc::new(link);
                prepared.matrix = Some(link.clone());
                tasks.spawn(crate::delivery::matrix::sync::run(
                    shared.clone(),
                    link,
                    shutdown.clone(),
                ));
            }
            let backend = Arc::new(prepared);
            if cfg.kind == crate::config::BackendKind::FhirCommunication {
                // Receipts and replies are read back from the FHIR server.
                tasks.spawn(crate::delivery::fhir::poll(
                    shared.clone(),
                    backend.clone(),
                    shutdown.clone(),
                ));
            }
            if cfg.kind == crate::config::BackendKind::Wctp {
                // Status and replies come back by polling the carrier.
                tasks.spawn(crate::delivery::wctp::poll::run(
                    shared.clone(),
                    backend.clone(),
                    shutdown.clone(),
                ));
            }
            tasks.spawn(crate::delivery::run(
                shared.clone(),
                backend,
                shutdown.clone(),
            ));
        }
        // Status owed to alarm sources (ORA^R41) and the EHR write-back.
        for target in crate::status::targets(&shared.config).map_err(StartError::Backend)? {
            tasks.spawn(crate::status::run(
                shared.clone(),
                Arc::new(target),
                shutdown.clone(),
            ));
        }
        tasks.spawn(watch_routing(shared.clone(), shutdown.clone()));
        tasks.spawn(retention_schedule(shared.clone(), shutdown.clone()));
        if let Some(syslog) = shared.config.audit.syslog.clone() {
            tasks.spawn(ship_audit(shared.clone(), syslog, shutdown.clone()));
        }
        Ok(Gateway {
            mllp_addr,
            http_addr,
            shared,
            shutdown,
            tasks,
        })
    }

    /// The bound MLLP address.
    pub fn mllp_addr(&self) -> SocketAddr {
        self.mllp_addr
    }

    /// The bound HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The live patient census.
    pub fn census(&self) -> &Arc<LiveCensus> {
        &self.shared.census
    }

    /// The routing set serving now, and its reloads.
    pub fn routing(&self) -> &Arc<LiveRouting> {
        &self.shared.routing
    }

    /// The journal.
    pub fn journal(&self) -> &Journal {
        &self.shared.journal
    }

    /// Counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.shared.metrics
    }

    /// Stops accepting, lets open connections write the answers they owe,
    /// and waits for every task.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        save_census(&self.shared).await;
        // Every task is done: ours is the last handle on the journal. Let
        // the committer drain and close the store cleanly.
        let journal = self.shared.journal.clone();
        drop(self.shared);
        if !journal.close(std::time::Duration::from_secs(30)).await {
            tracing::warn!("journal did not close within 30 s");
        }
    }
}

pub mod alerts;

/// Rebuilds the census from the journal (snapshot + replay) before the
/// committer starts, so the first message sees the census as it was.
fn load_census(storage: &mut dyn Storage, config: &Config) -> Result<Arc<LiveCensus>, StartError> {
    let (census, report) = storage.census_load()?;
    tracing::info!(
        snapshot_event = report.snapshot.map(|s| s.1),
        events = report.events,
        ops = report.ops,
        erased = report.erased,
        warnings = report.warnings,
        patients = census.patients().count(),
        "census rebuilt from the journal"
    );
    if report.unusable_snapshots > 0 {
        tracing::warn!(
            count = report.unusable_snapshots,
            "census snapshots that could not be opened were skipped"
        );
    }
    Ok(LiveCensus::new(census.with_nurse_role_codes(
        config.census.nurse_role_codes.iter().cloned(),
    )))
}

/// Journals a census snapshot when it changed since the last one.
async fn save_census(shared: &Arc<Shared>) {
    if !shared.census.dirty() {
        return;
    }
    let live = shared.census.clone();
    let now = shared.clock.now_utc();
    let saved = shared
        .journal
        .with_storage(move |s| {
            // On the committer thread: the census holds exactly what is committed.
            let changes = live.changes();
            let result = s.census_snapshot(&live.read(), now);
            if result.is_ok() {
                live.mark_saved(changes);
            }
            result
        })
        .await;
    match saved {
        Ok(Ok(upto)) => tracing::debug!(upto_event = upto, "census snapshot saved"),
        Ok(Err(e)) => tracing::warn!(error = %e, "census snapshot failed; will retry"),
        Err(_) => {}
    }
}

async fn census_snapshots(shared: Arc<Shared>, shutdown: CancellationToken) {
    let every = shared.config.census.snapshot_interval;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => save_census(&shared).await,
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Reloads rosters and mappings on SIGHUP and on file change.
async fn watch_routing(shared: Arc<Shared>, shutdown: CancellationToken) {
    let reload = &shared.config.reload;
    let dirs = if reload.watch_files {
        shared
            .routing
            .dirs()
            .iter()
            .map(|d| d.to_path_buf())
            .collect()
    } else {
        Vec::new()
    };
    let s = shared.clone();
    live::watch(dirs, reload.settle, shutdown, move |why| {
        let s = s.clone();
        tokio::spawn(async move {
            reload_routing(&s, why, "system").await;
        });
    })
    .await;
}

/// Reloads the routing set, logs and audits the outcome.
pub async fn reload_routing(shared: &Arc<Shared>, why: &str, actor: &str) -> ReloadOutcome {
    let now = shared.clock.now_utc();
    let routing = shared.routing.clone();
    let console = match shared.journal.with_storage(|s| s.rosters_current()).await {
        Ok(Ok(c)) => c,
        _ => {
            let errors = vec![crate::config::ConfigError {
                file: shared.config.journal_path(),
                line: None,
                column: None,
                field: String::new(),
                problem: "cannot read the console-managed rosters from the journal".into(),
            }];
            return ReloadOutcome::Refused {
                revision: routing.current().revision,
                errors,
            };
        }
    };
    let outcome = tokio::task::spawn_blocking(move || routing.reload(now, &console))
        .await
        .unwrap_or_else(|_| ReloadOutcome::Refused {
            revision: shared.routing.current().revision,
            errors: Vec::new(),
        });
    let (result, object) = match &outcome {
        ReloadOutcome::Unchanged { revision } => {
            tracing::debug!(trigger = why, revision, "routing files unchanged");
            return outcome;
        }
        ReloadOutcome::Reloaded { revision, changes } => {
            tracing::info!(trigger = why, revision, "rosters and mappings reloaded");
            for c in changes {
                tracing::info!(
                    role = %c.role,
                    scope = c.scope.as_deref().unwrap_or("-"),
                    before = %c.before.join(","),
                    after = %c.after.join(","),
                    "on call now changes with the reload"
                );
            }
            ("ok".to_string(), format!("routing:{revision}"))
        }
        ReloadOutcome::Refused { revision, errors } => {
            tracing::error!(
                trigger = why,
                serving = revision,
                errors = errors.len(),
                "rosters/mappings refused; the previous version serves on"
            );
            for e in errors {
                tracing::error!("{e}");
            }
            (
                format!("refused: {} errors", errors.len()),
                format!("routing:{revision}"),
            )
        }
    };
    let rec = AuditRecord::new(now, actor, "routing.reload", object, why, &result);
    let _ = shared.journal.with_storage(move |s| s.audit(&rec)).await;
    outcome
}

/// While the journal is unhealthy, probe it every second so readiness and
/// answers recover without waiting for traffic.
async fn recover_journal(shared: Arc<Shared>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
            _ = shutdown.cancelled() => return,
        }
        if !shared.journal.health().is_healthy() && shared.journal.probe().await {
            tracing::warn!("journal recovered; accepting messages again");
        }
    }
}

/// Applies the retention schedule: shortly after start, then hourly. Each
/// due day is crypto-erased (held days are skipped); every step is audited.
async fn retention_schedule(shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut wait = std::time::Duration::from_secs(60);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.cancelled() => return,
        }
        wait = std::time::Duration::from_secs(3600);
        let cfg = shared.config.retention.clone();
        let now = shared.clock.now_utc();
        let result = shared
            .journal
            .with_storage(move |s| s.purge(&cfg, now, "system:retention"))
            .await;
        match result {
            Ok(Ok(r)) if !r.erased.is_empty() => {
                tracing::info!(
                    erased = r.erased.len(),
                    held = r.held.len(),
                    "retention purge erased expired days"
                );
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "retention purge failed; will retry"),
            Err(_) => return,
        }
    }
}

/// Ships audit records to the SIEM (RFC 5424 over TLS, RFC 5425 framing)
/// every `interval`, resuming after the last record the collector took; the
/// position is kept in `<data_dir>/audit-syslog.cursor`.
async fn ship_audit(
    shared: Arc<Shared>,
    cfg: crate::config::SyslogConfig,
    shutdown: CancellationToken,
) {
    let cursor_file = shared.config.storage.data_dir.join("audit-syslog.cursor");
    let target = crate::audit::SyslogTlsTarget {
        addr: cfg.address.clone(),
        server_name: cfg.server_name.clone(),
        ca_file: cfg.ca.clone(),
        hostname: std::env::var("HOSTNAME").unwrap_or_else(|_| "switchboard".to_string()),
        app: "switchboard".to_string(),
        timeout: std::time::Duration::from_secs(10),
    };
    let mut after: u64 = std::fs::read_to_string(&cursor_file)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(cfg.interval) => {}
            _ = shutdown.cancelled() => return,
        }
        let records = match shared
            .journal
            .with_storage(move |s| s.audit_records(after, 1000))
            .await
        {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "audit export: cannot read records");
                continue;
            }
            Err(_) => return,
        };
        if records.is_empty() {
            continue;
        }
        let shipped = async {
            let mut sender = target.connect().await?;
            let last = sender.send(&records).await?;
            sender.close().await?;
            Ok::<_, crate::audit::AuditError>(last)
        }
        .await;
        match shipped {
            Ok(Some(last)) => {
                after = last;
                let tmp = cursor_file.with_extension("cursor.tmp");
                if std::fs::write(&tmp, after.to_string()).is_ok() {
                    let _ = std::fs::rename(&tmp, &cursor_file);
                }
                if failing {
                    tracing::warn!("audit export to the SIEM works again");
                    failing = false;
                }
            }
            Ok(None) => {}
            Err(e) => {
                if !failing {
                    tracing::error!(error = %e, collector = %cfg.address, "audit export to the SIEM failed; will retry");
                }
                failing = true;
            }
        }
    }
}

/// Runs the gateway until SIGINT/SIGTERM.
pub async fn serve(config: Config) -> Result<(), StartError> {
    let demo = config.demo;
    let source = config.source.clone();
    let journal_path = config.journal_path();
    let gateway = Gateway::start(config).await?;
    if demo {
        tracing::warn!(
            "DEMO configuration ({}): loopback only, example senders, rosters and mappings — not for patient care",
            source.display()
        );
        eprintln!(
            "switchboard: DEMO mode ({}): loopback only, example rosters; never use it for patient care",
            source.display()
        );
    }
    tracing::info!(
        mllp = %gateway.mllp_addr(),
        http = %gateway.http_addr(),
        journal = %journal_path.display(),
        "switchboard listening"
    );
    wait_for_signal().await;
    tracing::info!("shutting down: finishing open answers");
    gateway.shutdown().await;
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
