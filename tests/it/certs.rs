//! Test PKI generated at run time with rcgen (no key is committed), a
//! gateway with `[mllp.tls]` started in-process, and a TLS MLLP client.
//!
//! The PKI: a CA (which also signs a CRL), a server certificate for
//! `localhost` / 127.0.0.1, and client certificates:
//! - `lab`: `lab.example.org`, trusted and on the allowlist of sender `lab`;
//! - `untrusted`: `lab.example.org`, issued by another CA;
//! - `expired`: `lab.example.org`, trusted CA but `not_after` in 2021;
//! - `revoked`: `lab.example.org`, trusted CA but listed in the CA's CRL;
//! - `nurse_call`: `nurse-call.example.org`, trusted but on no allowlist;
//! - `lab_mixed_case`: `Lab.Example.ORG`, trusted; identities match
//!   case-insensitively.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CertifiedIssuer,
    DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair,
    KeyUsagePurpose, RevocationReason, RevokedCertParams, SerialNumber, date_time_ymd,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use switchboard::app::Gateway;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::support::{CR, EB, SB, frame};

/// Identity on the allowlist of sender `lab`.
pub const LAB_ID: &str = "lab.example.org";
/// A trusted identity that no sender lists.
pub const NURSE_CALL_ID: &str = "nurse-call.example.org";

/// A client certificate and key as PEM files.
#[derive(Clone, Debug)]
pub struct ClientFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Every file of the test PKI, in one temporary folder.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub crl: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub lab: ClientFiles,
    pub untrusted: ClientFiles,
    pub expired: ClientFiles,
    pub revoked: ClientFiles,
    pub nurse_call: ClientFiles,
    /// `Lab.Example.ORG`: the allowed identity in other letter case.
    pub lab_mixed_case: ClientFiles,
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn.push(DnType::OrganizationName, "Switchboard test PKI");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.not_before = date_time_ymd(2020, 1, 1);
    p.not_after = date_time_ymd(2099, 1, 1);
    p
}

fn leaf_params(cn: &str, sans: &[&str], serial: u64, client: bool) -> CertificateParams {
    let mut p = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .expect("valid subject alternative names");
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    p.distinguished_name = dn;
    p.serial_number = Some(SerialNumber::from(serial));
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.extended_key_usages = vec![if client {
        ExtendedKeyUsagePurpose::ClientAuth
    } else {
        ExtendedKeyUsagePurpose::ServerAuth
    }];
    p.use_authority_key_identifier_extension = true;
    p.not_before = date_time_ymd(2020, 1, 1);
    p.not_after = date_time_ymd(2099, 1, 1);
    p
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}

fn issue(
    dir: &Path,
    name: &str,
    params: CertificateParams,
    issuer: &CertifiedIssuer<'_, KeyPair>,
) -> ClientFiles {
    let key = KeyPair::generate().expect("generate key");
    let cert = params.signed_by(&key, issuer).expect("sign certificate");
    ClientFiles {
        cert: write(dir, &format!("{name}.pem"), &cert.pem()),
        key: write(dir, &format!("{name}.key"), &key.serialize_pem()),
    }
}

const REVOKED_SERIAL: u64 = 0x5b_0004;

impl Pki {
    /// Generates the whole PKI into a new temporary folder.
    pub fn generate() -> Pki {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();

        let ca = CertifiedIssuer::self_signed(
            ca_params("Switchboard Test CA"),
            KeyPair::generate().unwrap(),
        )
        .expect("self-signed CA");
        let other_ca = CertifiedIssuer::self_signed(
            ca_params("Somebody Else's CA"),
            KeyPair::generate().unwrap(),
        )
        .expect("self-signed CA");
        let ca_path = write(d, "ca.pem", &ca.pem());
        write(d, "other-ca.pem", &other_ca.pem());

        let server = issue(
            d,
            "server",
            leaf_params("localhost", &["localhost", "127.0.0.1"], 0x5b_0001, false),
            &ca,
        );
        let lab = issue(
            d,
            "lab",
            leaf_params(LAB_ID, &[LAB_ID], 0x5b_0002, true),
            &ca,
        );
        let untrusted = issue(
            d,
            "untrusted",
            leaf_params(LAB_ID, &[LAB_ID], 0x5b_0003, true),
            &other_ca,
        );
        let revoked = issue(
            d,
            "revoked",
            leaf_params(LAB_ID, &[LAB_ID], REVOKED_SERIAL, true),
            &ca,
        );
        let mut expired_params = leaf_params(LAB_ID, &[LAB_ID], 0x5b_0005, true);
        expired_params.not_before = date_time_ymd(2020, 1, 1);
        expired_params.not_after = date_time_ymd(2021, 1, 1);
        let expired = issue(d, "expired", expired_params, &ca);
        let nurse_call = issue(
            d,
            "nurse-call",
            leaf_params(NURSE_CALL_ID, &[NURSE_CALL_ID], 0x5b_0006, true),
            &ca,
        );

        let lab_mixed_case = issue(
            d,
            "lab-mixed-case",
            leaf_params("Lab.Example.ORG", &["Lab.Example.ORG"], 0x5b_0007, true),
            &ca,
        );

        let crl = CertificateRevocationListParams {
            this_update: date_time_ymd(2025, 1, 1),
            next_update: date_time_ymd(2099, 1, 1),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: vec![RevokedCertParams {
                serial_number: SerialNumber::from(REVOKED_SERIAL),
                revocation_time: date_time_ymd(2025, 1, 1),
                reason_code: Some(RevocationReason::KeyCompromise),
                invalidity_date: None,
            }],
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&ca)
        .expect("sign CRL");
        let crl_path = write(d, "ca.crl.pem", &crl.pem().expect("CRL PEM"));

        Pki {
            ca: ca_path,
            crl: crl_path,
            server_cert: server.cert,
            server_key: server.key,
            lab,
            untrusted,
            expired,
            revoked,
            nurse_call,
            lab_mixed_case,
            dir,
        }
    }

    /// Gateway configuration text: TLS on the MLLP listener; with `mutual`,
    /// client certificates from the test CA, checked against its CRL.
    pub fn config_text(&self, data_dir: &Path, mutual: bool) -> String {
        let mut tls = format!(
            "[mllp.tls]\ncert = '{}'\nkey = '{}'\nhandshake_timeout_secs = 5\n",
            self.server_cert.display(),
            self.server_key.display()
        );
        if mutual {
            tls.push_str(&format!(
                "client_ca = '{}'\ncrls = ['{}']\n",
                self.ca.display(),
                self.crl.display()
            ));
        }
        format!(
            "[storage]\ndata_dir = '{data}'\n\n[mllp]\nlisten = \"127.0.0.1:0\"\n\n{tls}\n\
             [http]\nlisten = \"127.0.0.1:0\"\n\n\
             [[senders]]\nname = \"lab\"\nmsh3 = [\"LAB\"]\nmsh4 = [\"*\"]\n\
             networks = [\"127.0.0.0/8\"]\ncertificates = [\"{LAB_ID}\"]\n\
             processing_ids = [\"P\", \"T\"]\n",
            data = data_dir.display()
        )
    }
}

/// A gateway with TLS on its MLLP listener.
pub struct TlsGateway {
    pub gateway: Gateway,
    pub dir: tempfile::TempDir,
}

impl TlsGateway {
    pub fn addr(&self) -> SocketAddr {
        self.gateway.mllp_addr()
    }

    pub fn journal_path(&self) -> PathBuf {
        self.dir.path().join("data").join("journal.sqlite3")
    }

    /// Every journal row (any control id).
    pub fn journal_len(&self) -> usize {
        journal_len(&self.journal_path())
    }

    pub fn handshake_failures(&self) -> u64 {
        self.gateway
            .metrics()
            .tls_handshake_failures
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn frames(&self) -> u64 {
        self.gateway
            .metrics()
            .frames
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Number of rows in the journal at `path`.
pub fn journal_len(path: &Path) -> usize {
    use switchboard::journal::{MessageQuery, SqliteStorage, Storage};
    let mut s = SqliteStorage::open_read_only(path, None)
        .unwrap_or_else(|e| panic!("open journal {}: {e}", path.display()));
    s.messages(&MessageQuery {
        limit: 1_000_000,
        ..Default::default()
    })
    .expect("list journal rows")
    .len()
}

/// Starts a gateway in-process with TLS (`mutual`: client certificates required).
pub async fn start_tls_gateway(pki: &Pki, mutual: bool) -> TlsGateway {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = pki.config_text(&dir.path().join("data"), mutual);
    let path = dir.path().join("switchboard.toml");
    std::fs::write(&path, &text).unwrap();
    let cfg = switchboard::config::load(&path)
        .unwrap_or_else(|e| panic!("TLS test config invalid: {e}\n{text}"));
    let gateway = Gateway::start(cfg)
        .await
        .unwrap_or_else(|e| panic!("gateway with TLS did not start: {e}"));
    TlsGateway { gateway, dir }
}

/// A rustls client configuration trusting the test CA, presenting `client`
/// when given, limited to `versions`.
pub fn client_config(
    pki: &Pki,
    client: Option<&ClientFiles>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&pki.ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .expect("protocol versions")
    .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some(c) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&c.cert)
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_file(&c.key).unwrap();
            builder
                .with_client_auth_cert(chain, key)
                .expect("client certificate")
        }
    };
    Arc::new(config)
}

/// TLS 1.3 and 1.2 (what rustls offers by default).
pub const MODERN: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// Connects and completes the client side of the handshake.
pub async fn connect_tls(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").unwrap();
    let connect = TlsConnector::from(config).connect(name, tcp);
    match tokio::time::timeout(Duration::from_secs(15), connect).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "TLS handshake did not finish in 15 s",
        )),
    }
}

/// What came back on a connection the server is expected to refuse.
#[derive(Debug)]
pub enum Refusal {
    /// The read failed (e.g. a TLS alert such as `UnknownCA`).
    Error(String),
    /// Clean end of stream.
    Closed,
}

/// An MLLP client over any stream (TLS here).
pub struct MllpStream<S> {
    pub stream: S,
    buf: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> MllpStream<S> {
    pub fn new(stream: S) -> Self {
        MllpStream {
            stream,
            buf: Vec::new(),
        }
    }

    pub async fn send(&mut self, message: &str) -> std::io::Result<()> {
        self.stream.write_all(&frame(message.as_bytes())).await?;
        self.stream.flush().await
    }

    /// One frame's payload; `Err` on EOF, error or 15 s without a frame.
    pub async fn recv(&mut self) -> Result<String, Refusal> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(start) = self.buf.iter().position(|b| *b == SB)
                && let Some(end) = self.buf[start..].iter().position(|b| *b == EB)
                && self.buf.len() > start + end + 1
            {
                let payload = self.buf[start + 1..start + end].to_vec();
                assert_eq!(
                    self.buf[start + end + 1],
                    CR,
                    "end block must be followed by CR"
                );
                self.buf.drain(..start + end + 2);
                return Ok(String::from_utf8(payload).expect("ACK is UTF-8"));
            }
            let mut chunk = [0u8; 8192];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Ok(Ok(0)) => return Err(Refusal::Closed),
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
                Ok(Err(e)) => return Err(Refusal::Error(e.to_string())),
                Err(_) => {
                    return Err(Refusal::Error(
                        "no frame and no close within 15 s".to_string(),
                    ));
                }
            }
        }
    }

    pub async fn roundtrip(&mut self, message: &str) -> String {
        self.send(message).await.expect("send over TLS");
        self.recv()
            .await
            .unwrap_or_else(|r| panic!("expected an acknowledgement, got {r:?}"))
    }

    /// Bytes received so far that were not a frame.
    pub fn leftover(&self) -> &[u8] {
        &self.buf
    }
}

/// Waits (up to 10 s) until `f()` is true; the server updates counters in
/// its own task, possibly after the client saw the outcome.
pub async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after 10 s waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
