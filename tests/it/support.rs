//! Shared helpers: start a gateway on 127.0.0.1:0, speak MLLP, read ACK fields.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use switchboard::app::Gateway;
use switchboard::config::{self, Config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const SB: u8 = 0x0B;
pub const EB: u8 = 0x1C;
pub const CR: u8 = 0x0D;

/// A sender table used by most tests: LAB on loopback, ADT on loopback.
pub const SENDERS: &str = r#"
[[senders]]
name = "lab"
msh3 = ["LAB"]
msh4 = ["*"]
networks = ["127.0.0.0/8"]
timezone = "America/New_York"
processing_ids = ["P", "T"]

[[senders]]
name = "adt-strict"
msh3 = ["STRICT"]
msh4 = ["*"]
networks = ["127.0.0.0/8"]
reject_unknown_types = true

[[senders]]
name = "far-away"
msh3 = ["REMOTE"]
msh4 = ["*"]
networks = ["10.99.0.0/16"]

[[senders]]
name = "any"
msh3 = ["*"]
msh4 = ["*"]
networks = ["127.0.0.0/8"]
processing_ids = ["P", "T", "D"]
"#;

pub fn config_text(data_dir: &Path, extra: &str) -> String {
    format!(
        "[storage]\ndata_dir = \"{}\"\n\n[mllp]\nlisten = \"127.0.0.1:0\"\n{extra}\n\n[http]\nlisten = \"127.0.0.1:0\"\n\n{SENDERS}",
        data_dir.display()
    )
}

pub fn config(dir: &Path, mllp_extra: &str) -> Config {
    let text = config_text(&dir.join("data"), mllp_extra);
    let path = dir.join("switchboard.toml");
    std::fs::write(&path, &text).unwrap();
    config::load(&path).unwrap_or_else(|e| panic!("test config invalid: {e}"))
}

pub struct TestGateway {
    pub gateway: Gateway,
    pub dir: tempfile::TempDir,
}

impl TestGateway {
    pub fn addr(&self) -> std::net::SocketAddr {
        self.gateway.mllp_addr()
    }

    pub fn journal_path(&self) -> PathBuf {
        self.dir.path().join("data").join("journal.sqlite3")
    }

    pub async fn connect(&self) -> Mllp {
        Mllp::connect(self.addr()).await
    }
}

pub async fn start_gateway() -> TestGateway {
    start_gateway_with("").await
}

pub async fn start_gateway_with(mllp_extra: &str) -> TestGateway {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), mllp_extra);
    let gateway = Gateway::start(cfg).await.unwrap();
    TestGateway { gateway, dir }
}

/// A raw MLLP client.
pub struct Mllp {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Mllp {
    pub async fn connect(addr: std::net::SocketAddr) -> Mllp {
        Mllp {
            stream: TcpStream::connect(addr).await.unwrap(),
            buf: Vec::new(),
        }
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    pub async fn send(&mut self, message: &str) {
        self.send_raw(&frame(message.as_bytes())).await;
    }

    /// Reads one frame's payload; panics after 10 s.
    pub async fn recv(&mut self) -> String {
        self.try_recv(Duration::from_secs(10))
            .await
            .expect("expected an acknowledgement")
    }

    pub async fn try_recv(&mut self, wait: Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + wait;
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
                return Some(String::from_utf8(payload).unwrap());
            }
            let mut chunk = [0u8; 8192];
            let n = match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Ok(Ok(n)) => n,
                Ok(Err(_)) | Err(_) => return None,
            };
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// True when the server closed the connection (EOF) within `wait`.
    pub async fn closed_within(&mut self, wait: Duration) -> bool {
        let mut chunk = [0u8; 1024];
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
                Err(_) => return false,
            }
        }
    }

    pub async fn roundtrip(&mut self, message: &str) -> String {
        self.send(message).await;
        self.recv().await
    }
}

pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut v = vec![SB];
    v.extend_from_slice(payload);
    v.extend_from_slice(&[EB, CR]);
    v
}

/// Field `n` (HL7 numbering; MSH-1 is the separator) of the first segment `seg`.
pub fn field(message: &str, seg: &str, n: usize) -> String {
    let segment = message
        .split('\r')
        .find(|s| s.starts_with(seg))
        .unwrap_or_else(|| panic!("no {seg} segment in {message:?}"));
    let sep = segment.chars().nth(3).unwrap_or('|');
    let parts: Vec<&str> = segment.split(sep).collect();
    if seg == "MSH" {
        if n == 1 {
            return sep.to_string();
        }
        parts.get(n - 1).copied().unwrap_or("").to_string()
    } else {
        parts.get(n).copied().unwrap_or("").to_string()
    }
}

pub fn segments(message: &str) -> Vec<&str> {
    message.split('\r').filter(|s| !s.is_empty()).collect()
}

/// MSA-1 of an acknowledgement.
pub fn ack_code(ack: &str) -> String {
    field(ack, "MSA", 1)
}

/// ERR-3.1 of an acknowledgement.
pub fn err_code(ack: &str) -> String {
    field(ack, "ERR", 3)
        .split('^')
        .next()
        .unwrap_or("")
        .to_string()
}

/// A synthetic ORU^R01 with a critical potassium. `id` becomes MSH-10.
pub fn oru(id: &str) -> String {
    format!(
        "MSH|^~\\&|LAB|HOSP|SWITCHBOARD|HOSP|20261123120000||ORU^R01^ORU_R01|{id}|P|2.5.1\r\
PID|1||MRN{id}^^^HOSP^MR||ZZCANARY^PHI||19700101|F\r\
PV1|1|I|ICU^101^A^HOSP\r\
OBR|1|PL{id}|FL{id}|2823-3^Potassium^LN|||20261123115500\r\
OBX|1|NM|2823-3^Potassium^LN||6.9|mmol/L|3.5-5.1|HH|||F\r"
    )
}

/// A synthetic ADT^A01.
pub fn adt_a01(id: &str) -> String {
    format!(
        "MSH|^~\\&|LAB|HOSP|SWITCHBOARD|HOSP|20261123120000||ADT^A01^ADT_A01|{id}|P|2.5.1\r\
EVN|A01|20261123120000\r\
PID|1||MRN{id}^^^HOSP^MR||ZZCANARY^PHI||19700101|F\r\
PV1|1|I|ICU^101^A^HOSP\r"
    )
}

/// Rows of the journal for a control id, read with the CLI's own storage code.
pub fn journal_rows(path: &Path, control_id: &str) -> Vec<switchboard::journal::MessageSummary> {
    use switchboard::journal::{MessageQuery, SqliteStorage, Storage};
    let mut s = SqliteStorage::open_read_only(path, None).unwrap();
    s.messages(&MessageQuery {
        control_id: Some(control_id.to_string()),
        limit: 1000,
        ..Default::default()
    })
    .unwrap()
}

pub fn corpus_dir() -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/hl7v2/fhir-converter");
    if p.is_dir() {
        Some(p)
    } else {
        // Written to stderr directly: libtest's capture would hide eprintln!.
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "corpus not found at {}: skipping corpus test",
            p.display()
        );
        None
    }
}

/// Prints a line that libtest's output capture does not hide (for skips).
pub fn note(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{line}");
}
