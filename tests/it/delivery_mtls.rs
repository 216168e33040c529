//! The webhook's optional client certificate (mutual TLS): an HTTPS
//! receiver on loopback that *requires* a client certificate from the test
//! CA (rustls, certificates generated at run time by `certs::Pki`). A
//! gateway whose webhook backend has `client_cert`/`client_key` is delivered
//! and the receiver saw that certificate's subject; a gateway with the same
//! backend without them is refused at the handshake and keeps retrying —
//! never marked delivered, never seen by the receiver.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::certs::{LAB_ID, Pki};
use crate::delivery::{oru, wait_until};
use crate::support::{Mllp, ack_code};

/// What the receiver saw over TLS: (path, client certificate subject).
#[derive(Clone, Default)]
struct Seen {
    requests: Arc<Mutex<Vec<(String, String)>>>,
    refused: Arc<Mutex<Vec<String>>>,
}

fn server_config(pki: &Pki) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&pki.ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&pki.server_cert)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(&pki.server_key).unwrap();
    Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .unwrap(),
    )
}

/// An HTTPS receiver requiring a client certificate; answers 200.
async fn receiver(pki: &Pki, seen: Seen) -> u16 {
    let acceptor = tokio_rustls::TlsAcceptor::from(server_config(pki));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            let (acceptor, seen) = (acceptor.clone(), seen.clone());
            tokio::spawn(async move {
                let mut tls = match acceptor.accept(tcp).await {
                    Ok(s) => s,
                    Err(e) => {
                        seen.refused.lock().unwrap().push(e.to_string());
                        return;
                    }
                };
                let subject = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .map(|der| {
                        x509_parser::parse_x509_certificate(der.as_ref())
                            .unwrap()
                            .1
                            .subject()
                            .to_string()
                    })
                    .unwrap_or_default();
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let (head_end, len) = loop {
                    let n = match tls.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..p]).to_lowercase();
                        let len = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        break (p + 4, len);
                    }
                };
                while buf.len() < head_end + len {
                    match tls.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let path = String::from_utf8_lossy(&buf[..head_end])
                    .split(' ')
                    .nth(1)
                    .unwrap_or("")
                    .to_string();
                seen.requests.lock().unwrap().push((path, subject));
                let _ = tls
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    port
}

fn setup(dir: &Path, pki: &Pki, port: u16, label: &str, with_cert: bool) -> std::path::PathBuf {
    for d in ["rosters", "mappings"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::write(
        dir.join("rosters/ward.toml"),
        format!(
            r#"
name = "ward"
timezone = "America/New_York"

[[members]]
id = "rn-a"
display = "RN A (fictional)"
contacts = {{ webhook = "https://localhost:{port}/hook/{label}" }}

[[members]]
id = "rn-b"
display = "RN B (fictional)"
contacts = {{ webhook = "https://localhost:{port}/hook/{label}-failsafe" }}

[[roles]]
name = "charge-nurse"

[[rotations]]
role = "charge-nurse"
members = ["rn-a"]
start = "2026-01-05T07:00"
length_days = 1

[failsafe]
member = "rn-b"
"#
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("mappings/m.toml"),
        r#"
[[rules]]
name = "icu-critical"
match = { kind = "result", flags = ["HH"], units = ["ICU"] }
route = { person = "rn-a", priority = "stat", escalation = "slow" }

[escalations.slow]
tiers = [{ route = true, timeout_secs = 600 }, { failsafe = true, timeout_secs = 600 }]
"#,
    )
    .unwrap();
    let identity = if with_cert {
        format!(
            "client_cert = '{}'\nclient_key = '{}'\n",
            pki.lab.cert.display(),
            pki.lab.key.display()
        )
    } else {
        String::new()
    };
    let text = format!(
        "rosters_dir = \"rosters\"\nmappings_dir = \"mappings\"\n\
[storage]\ndata_dir = \"data\"\n[mllp]\nlisten = \"127.0.0.1:0\"\n[http]\nlisten = \"127.0.0.1:0\"\n\
[reload]\nwatch_files = false\n\
[[senders]]\nname = \"lab\"\nmsh3 = [\"*\"]\nmsh4 = [\"*\"]\nnetworks = [\"127.0.0.0/8\"]\n\
[[backends]]\nname = \"hook\"\nkind = \"webhook\"\ncontact = \"webhook\"\nprofile = \"limited\"\n\
ca = '{ca}'\n{identity}\
retry_initial_ms = 200\nretry_max_secs = 1\nmax_attempts = 50\ncircuit_failures = 100\n",
        ca = pki.ca.display()
    );
    let path = dir.join("switchboard.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Starts a gateway in-process and sends it one critical result.
async fn gateway(
    pki: &Pki,
    port: u16,
    label: &str,
    with_cert: bool,
) -> (switchboard::app::Gateway, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = setup(dir.path(), pki, port, label, with_cert);
    let cfg = switchboard::config::load(&path).unwrap_or_else(|e| panic!("config: {e}"));
    let gateway = switchboard::app::Gateway::start(cfg).await.unwrap();
    let mut c = Mllp::connect(gateway.mllp_addr()).await;
    assert_eq!(ack_code(&c.roundtrip(&oru(label, "ICU")).await), "AA");
    (gateway, dir)
}

/// (backend, state, attempts) of every notification.
fn notifications(db: &Path) -> Vec<(String, String, i64)> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    conn.prepare("SELECT backend, state, attempts FROM notifications ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[tokio::test]
async fn the_webhook_client_certificate_is_presented_and_a_backend_without_one_is_refused() {
    let pki = Pki::generate();
    let seen = Seen::default();
    let port = receiver(&pki, seen.clone()).await;

    // With the certificate: delivered, and the receiver saw who it was.
    let (with, dir) = gateway(&pki, port, "MTLS1", true).await;
    let db = dir.path().join("data/journal.sqlite3");
    wait_until(
        "the backend with a client certificate never delivered",
        30,
        || {
            notifications(&db)
                .first()
                .is_some_and(|n| n.1 == "delivered")
        },
    )
    .await;
    let requests = seen.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0].0, "/hook/MTLS1");
    assert!(
        requests[0].1.contains(&format!("CN={LAB_ID}")),
        "client certificate subject: {:?}",
        requests[0].1
    );
    assert!(seen.refused.lock().unwrap().is_empty());
    with.shutdown().await;

    // Without: every handshake refused, retried, never delivered.
    let (without, dir) = gateway(&pki, port, "MTLS2", false).await;
    let db = dir.path().join("data/journal.sqlite3");
    let refused = seen.refused.clone();
    wait_until(
        "the backend without a certificate was not retried",
        30,
        || {
            refused.lock().unwrap().len() >= 3
                && notifications(&db).first().is_some_and(|n| n.2 >= 3)
        },
    )
    .await;
    let rows = notifications(&db);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].1, "retrying", "{rows:?}");
    let requests = seen.requests.lock().unwrap().clone();
    assert_eq!(
        requests.len(),
        1,
        "a request got through without a client certificate: {requests:?}"
    );
    let error: String =
        rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap()
            .query_row(
                "SELECT COALESCE(last_error, '') FROM notifications",
                [],
                |r| r.get(0),
            )
            .unwrap();
    assert!(
        ["tls", "no answer", "http"]
            .iter()
            .any(|k| error.contains(k)),
        "the refusal is a transport error: {error}"
    );
    without.shutdown().await;
}
