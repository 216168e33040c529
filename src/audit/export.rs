//! Exports for a SIEM: JSON lines, RFC 5424 syslog lines, and RFC 5425
//! (octet-counted) syslog over TLS.
//!
//! Every line carries the record's seq and hash, so the receiver can check
//! that nothing was skipped and match records with a later `verify`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::Connection;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::AuditError;
use super::record::{StoredRecord, from_micros, hash32};

/// SD-ID of the structured data element. 32473 is the example Private
/// Enterprise Number of RFC 5612; a site with its own PEN can post-process.
pub const SD_ID: &str = "audit@32473";
/// Syslog facility: authpriv (10), for security/authorisation messages.
pub const FACILITY_AUTHPRIV: u8 = 10;
const SEVERITY_NOTICE: u8 = 5;
const SEVERITY_INFO: u8 = 6;

/// Reads up to `limit` records with seq > `after_seq`, in order. A row the
/// verifier would call malformed is an error here.
pub fn read_records(
    conn: &Connection,
    after_seq: u64,
    limit: usize,
) -> Result<Vec<StoredRecord>, AuditError> {
    let mut out = Vec::new();
    for_each_record(conn, after_seq, limit, |r| {
        out.push(r);
        Ok(())
    })?;
    Ok(out)
}

fn for_each_record(
    conn: &Connection,
    after_seq: u64,
    limit: usize,
    mut f: impl FnMut(StoredRecord) -> Result<(), AuditError>,
) -> Result<(), AuditError> {
    let after = i64::try_from(after_seq).unwrap_or(i64::MAX);
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut stmt = conn.prepare_cached(
        "SELECT seq, at, actor, action, object, source, outcome, prev, hash
         FROM audit WHERE seq > ?1 ORDER BY seq LIMIT ?2",
    )?;
    let mut rows = stmt.query([after, limit])?;
    while let Some(row) = rows.next()? {
        let seq: i64 = row.get(0)?;
        let corrupt = |what: &str| AuditError::Corrupt(format!("audit seq {seq}: {what}"));
        let at = from_micros(row.get(1)?).ok_or_else(|| corrupt("time out of range"))?;
        let prev: Vec<u8> = row.get(7)?;
        let hash: Vec<u8> = row.get(8)?;
        f(StoredRecord {
            seq: u64::try_from(seq).map_err(|_| corrupt("negative seq"))?,
            at,
            actor: row.get(2)?,
            action: row.get(3)?,
            object: row.get(4)?,
            source: row.get(5)?,
            outcome: row.get(6)?,
            prev: hash32(&prev).ok_or_else(|| corrupt("prev length"))?,
            hash: hash32(&hash).ok_or_else(|| corrupt("hash length"))?,
        })?;
    }
    Ok(())
}

/// Writes every record with seq > `after_seq` as one JSON object per line:
/// `{"seq":1,"at":"2026-11-23T12:00:00.000001Z","actor":…,"action":…,
/// "object":…,"source":…,"outcome":…,"prev":"<hex>","hash":"<hex>"}`.
/// Returns the last seq written (`after_seq` when none).
pub fn export_jsonl(
    conn: &Connection,
    after_seq: u64,
    out: &mut impl Write,
) -> Result<u64, AuditError> {
    let mut last = after_seq;
    let io = |e| AuditError::io("write", Path::new("<jsonl>"), e);
    for_each_record(conn, after_seq, usize::MAX, |r| {
        serde_json::to_writer(&mut *out, &r).map_err(|e| io(e.into()))?;
        out.write_all(b"\n").map_err(io)?;
        last = r.seq;
        Ok(())
    })?;
    out.flush().map_err(io)?;
    Ok(last)
}

/// The severity of a record: info for success outcomes (`ok`, `AA`, `CA`),
/// notice for everything else (refusals, errors, rejections).
fn severity(outcome: &str) -> u8 {
    match outcome {
        "ok" | "AA" | "CA" => SEVERITY_INFO,
        _ => SEVERITY_NOTICE,
    }
}

/// An RFC 5424 header field: printable US-ASCII without spaces, at most
/// `max` characters, `-` when empty.
fn header_field(s: &str, max: usize) -> String {
    let v: String = s
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(max)
        .collect();
    if v.is_empty() { "-".into() } else { v }
}

/// Escapes an SD-PARAM value: `"`, `\` and `]` get a backslash (RFC 5424
/// §6.3.3).
pub fn escape_param(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// One RFC 5424 line (without a trailing newline):
///
/// `<PRI>1 TIMESTAMP HOSTNAME APP-NAME - MSGID [audit@32473 seq="…" hash="…"
/// prev="…" actor="…" action="…" object="…" source="…" outcome="…"] MSG`
///
/// PRI = authpriv (10) × 8 + severity (info 6 for `ok`/`AA`/`CA`, notice 5
/// otherwise); TIMESTAMP is UTC with µs; MSGID is the action (≤ 32 chars);
/// MSG repeats actor, action, object and outcome for humans.
pub fn format_syslog(rec: &StoredRecord, hostname: &str, app: &str) -> String {
    let pri = u16::from(FACILITY_AUTHPRIV) * 8 + u16::from(severity(&rec.outcome));
    let ts = rec.at.format("%Y-%m-%dT%H:%M:%S%.6fZ");
    format!(
        "<{pri}>1 {ts} {} {} - {} [{SD_ID} seq=\"{}\" hash=\"{}\" prev=\"{}\" actor=\"{}\" action=\"{}\" object=\"{}\" source=\"{}\" outcome=\"{}\"] {} {} {} {}",
        header_field(hostname, 255),
        header_field(app, 48),
        header_field(&rec.action, 32),
        rec.seq,
        hex::encode(rec.hash),
        hex::encode(rec.prev),
        escape_param(&rec.actor),
        escape_param(&rec.action),
        escape_param(&rec.object),
        escape_param(&rec.source),
        escape_param(&rec.outcome),
        rec.actor,
        rec.action,
        rec.object,
        rec.outcome,
    )
}

/// An RFC 5425 frame: `MSG-LEN SP SYSLOG-MSG`.
pub fn octet_frame(msg: &str) -> Vec<u8> {
    let mut v = format!("{} ", msg.len()).into_bytes();
    v.extend_from_slice(msg.as_bytes());
    v
}

/// Where and how to ship syslog over TLS.
#[derive(Debug, Clone)]
pub struct SyslogTlsTarget {
    /// `host:port` of the collector (RFC 5425 port is 6514).
    pub addr: String,
    /// The name the collector's certificate must carry.
    pub server_name: String,
    /// PEM bundle of the CA(s) that issue the collector's certificate.
    pub ca_file: PathBuf,
    /// HOSTNAME field of each line.
    pub hostname: String,
    /// APP-NAME field of each line.
    pub app: String,
    /// Limit for connecting + handshake, and for each write.
    pub timeout: Duration,
}

/// An open TLS connection to a syslog collector.
pub struct SyslogTlsSender {
    stream: TlsStream<TcpStream>,
    target: SyslogTlsTarget,
}

impl SyslogTlsTarget {
    /// Connects and completes the TLS handshake (TLS 1.2/1.3, server
    /// certificate checked against `ca_file` and `server_name`).
    pub async fn connect(&self) -> Result<SyslogTlsSender, AuditError> {
        let err =
            |what: &str, e: &dyn std::fmt::Display| AuditError::Syslog(format!("{what}: {e}"));
        let mut roots = rustls::RootCertStore::empty();
        let certs = CertificateDer::pem_file_iter(&self.ca_file)
            .map_err(|e| err("CA file", &e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| err("CA file", &e))?;
        for c in certs {
            roots.add(c).map_err(|e| err("CA certificate", &e))?;
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| err("TLS", &e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let name =
            ServerName::try_from(self.server_name.clone()).map_err(|e| err("server name", &e))?;
        let connect = async {
            let tcp = TcpStream::connect(&self.addr)
                .await
                .map_err(|e| err("connect", &e))?;
            TlsConnector::from(Arc::new(config))
                .connect(name, tcp)
                .await
                .map_err(|e| err("TLS handshake", &e))
        };
        let stream = tokio::time::timeout(self.timeout, connect)
            .await
            .map_err(|_| AuditError::Syslog("connect: timed out".into()))??;
        Ok(SyslogTlsSender {
            stream,
            target: self.clone(),
        })
    }
}

impl SyslogTlsSender {
    /// Sends `records` as octet-counted frames and flushes. Returns the seq
    /// of the last record sent (`None` for an empty slice). On error some
    /// records may have been sent: resume from the last seq this returned.
    pub async fn send(&mut self, records: &[StoredRecord]) -> Result<Option<u64>, AuditError> {
        let mut buf = Vec::new();
        for r in records {
            buf.extend_from_slice(&octet_frame(&format_syslog(
                r,
                &self.target.hostname,
                &self.target.app,
            )));
        }
        let write = async {
            self.stream.write_all(&buf).await?;
            self.stream.flush().await
        };
        tokio::time::timeout(self.target.timeout, write)
            .await
            .map_err(|_| AuditError::Syslog("write: timed out".into()))?
            .map_err(|e| AuditError::Syslog(format!("write: {e}")))?;
        Ok(records.last().map(|r| r.seq))
    }

    /// Closes the TLS session cleanly (close_notify).
    pub async fn close(mut self) -> Result<(), AuditError> {
        self.stream
            .shutdown()
            .await
            .map_err(|e| AuditError::Syslog(format!("close: {e}")))
    }
}

/// Ships every record of the journal at `db` with seq > `after_seq` to the
/// collector, `batch` records per write, and returns the last seq shipped
/// (`after_seq` when there was nothing new). The database is read on the
/// blocking pool with a read-only connection. Store the returned seq and
/// pass it next time; on error nothing is lost, the next call resends from
/// the last stored seq (the collector may see a record twice: dedupe on seq).
pub async fn ship_syslog_tls(
    target: &SyslogTlsTarget,
    db: &Path,
    after_seq: u64,
    batch: usize,
) -> Result<u64, AuditError> {
    let batch = batch.max(1);
    let mut sender = target.connect().await?;
    let mut last = after_seq;
    loop {
        let path = db.to_path_buf();
        let from = last;
        let records = tokio::task::spawn_blocking(move || {
            let conn = Connection::open_with_flags(
                &path,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                    | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            read_records(&conn, from, batch)
        })
        .await
        .map_err(|e| AuditError::Syslog(format!("reader task: {e}")))??;
        if let Some(seq) = sender.send(&records).await? {
            last = seq;
        }
        if records.len() < batch {
            break;
        }
    }
    sender.close().await?;
    Ok(last)
}
