//! The WCTP backend through the real binary, against a WCTP carrier written
//! here: real HTTP on loopback, every request parsed with quick-xml and
//! checked against the content models and attributes of the v1r3 DTD,
//! messages recorded by `messageID` (a repeated `messageID` is answered but
//! never paged again, as a carrier does), `wctp-Failure` codes on demand,
//! and status and replies queued for `wctp-PollForMessages`, kept until the
//! poller acknowledges them.
//!
//! MLLP critical result in → `wctp-SubmitRequest` out (limited profile, no
//! PHI canary) → DELIVERED, READ and the reply "Accept" polled back → the
//! alert is accepted and nobody else is paged; "Decline" pages the next tier
//! at once; a 5xx-class failure and a lost answer are retried with the same
//! `messageID` (one page); a 4xx-class failure is dead-lettered and
//! escalated; a device the carrier cannot reach escalates.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quick_xml::escape::escape;
use quick_xml::events::Event;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::delivery::{free_port, oru, rows, wait_until};
use crate::support::{Mllp, ack_code};

const SENDER_ID: &str = "switchboard-test";
const SECURITY_CODE: &str = "c0de&\"<sb>";
const RN_A: &str = "5551001";
const RN_B: &str = "5551002";

// ---------------------------------------------------------------- XML ----

/// An element of a parsed request.
#[derive(Clone, Debug, Default)]
struct El {
    name: String,
    attrs: Vec<(String, String)>,
    children: Vec<El>,
    text: String,
}

impl El {
    fn attr(&self, n: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
    }

    fn find(&self, path: &[&str]) -> Option<&El> {
        let Some((first, rest)) = path.split_first() else {
            return Some(self);
        };
        self.children
            .iter()
            .find(|c| c.name == *first)
            .and_then(|c| c.find(rest))
    }
}

/// Parses a request body with quick-xml (DOCTYPE and declaration skipped).
fn parse(body: &[u8]) -> Result<El, String> {
    let text = std::str::from_utf8(body).map_err(|_| "not UTF-8".to_string())?;
    let mut r = quick_xml::Reader::from_str(text);
    let mut stack: Vec<El> = Vec::new();
    let mut root = None;
    let element = |e: &quick_xml::events::BytesStart<'_>| -> Result<El, String> {
        let mut attrs = Vec::new();
        for a in e.attributes() {
            let a = a.map_err(|e| e.to_string())?;
            let v = a
                .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .map_err(|e| e.to_string())?;
            attrs.push((a.key.as_ref().to_string(), v.into_owned()));
        }
        Ok(El {
            name: e.name().as_ref().to_string(),
            attrs,
            ..El::default()
        })
    };
    loop {
        let done = match r.read_event().map_err(|e| e.to_string())? {
            Event::Start(e) => {
                stack.push(element(&e)?);
                None
            }
            Event::Empty(e) => Some(element(&e)?),
            Event::End(_) => Some(stack.pop().ok_or("unbalanced")?),
            Event::Text(t) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&t.xml10_content());
                }
                None
            }
            Event::GeneralRef(g) => {
                let top = stack.last_mut().ok_or("reference outside an element")?;
                match g.resolve_char_ref().map_err(|e| e.to_string())? {
                    Some(c) => top.text.push(c),
                    None => top.text.push_str(
                        quick_xml::escape::resolve_predefined_entity(&g).ok_or("unknown entity")?,
                    ),
                }
                None
            }
            Event::Eof => break,
            _ => None,
        };
        if let Some(el) = done {
            match stack.last_mut() {
                Some(p) => p.children.push(el),
                None => root = Some(el),
            }
        }
    }
    root.ok_or_else(|| "no root element".to_string())
}

/// The content models and attributes (required, optional) of the v1r3 DTD
/// for every element the gateway may send.
fn dtd(
    name: &str,
) -> Option<(
    &'static str,
    &'static [&'static str],
    &'static [&'static str],
)> {
    Some(match name {
        "wctp-Operation" => (
            // The operations a client may send to a carrier.
            "^(wctp-SubmitRequest|wctp-PollForMessages|wctp-SubmitClientMessage|wctp-ClientQuery)$",
            &["wctpVersion"],
            &["wctpToken"],
        ),
        "wctp-SubmitRequest" => ("^wctp-SubmitHeader wctp-Payload$", &[], &[]),
        "wctp-SubmitHeader" => (
            "^wctp-Originator wctp-MessageControl wctp-Recipient$",
            &[],
            &["submitTimestamp"],
        ),
        "wctp-Originator" => ("^$", &["senderID"], &["securityCode", "miscInfo"]),
        "wctp-MessageControl" => (
            "^$",
            &["messageID"],
            &[
                "transactionID",
                "sendResponsesToID",
                "allowResponse",
                "notifyWhenQueued",
                "notifyWhenDelivered",
                "notifyWhenRead",
                "deliveryPriority",
                "deliveryAfter",
                "deliveryBefore",
                "preformatted",
                "allowTruncation",
            ],
        ),
        "wctp-Recipient" => ("^$", &["recipientID"], &["authorizationCode"]),
        "wctp-Payload" => (
            "^(wctp-MCR|wctp-Alphanumeric|wctp-TransparentData)$",
            &[],
            &[],
        ),
        "wctp-MCR" => (
            "^wctp-MessageText( wctp-Choice| wctp-ChoicePair)+$",
            &[],
            &[],
        ),
        "wctp-MessageText" | "wctp-Choice" | "wctp-Alphanumeric" => ("^$", &[], &[]),
        "wctp-PollForMessages" => (
            "^(wctp-MessageReceived( wctp-MessageReceived)*)?$",
            &["pollerID"],
            &["securityCode", "maxMessagesInBatch"],
        ),
        "wctp-MessageReceived" => ("^(wctp-Success|wctp-Failure)$", &["sequenceNo"], &[]),
        "wctp-Success" => ("^$", &["successCode"], &["successText"]),
        "wctp-Failure" => ("^$", &["errorCode"], &["errorText"]),
        _ => return None,
    })
}

/// Every way `el` departs from the DTD.
fn violations(el: &El, out: &mut Vec<String>) {
    let Some((model, required, optional)) = dtd(&el.name) else {
        out.push(format!(
            "{} is not a v1r3 element the gateway may send",
            el.name
        ));
        return;
    };
    let children: Vec<&str> = el.children.iter().map(|c| c.name.as_str()).collect();
    if !regex::Regex::new(model)
        .unwrap()
        .is_match(&children.join(" "))
    {
        out.push(format!("{}: children {children:?} break {model}", el.name));
    }
    for r in required {
        if el.attr(r).is_none() {
            out.push(format!("{} lacks {r}", el.name));
        }
    }
    for (k, v) in &el.attrs {
        if !required.contains(&k.as_str()) && !optional.contains(&k.as_str()) {
            out.push(format!("{} has undeclared attribute {k}", el.name));
        }
        let boolean = [
            "allowResponse",
            "notifyWhenQueued",
            "notifyWhenDelivered",
            "notifyWhenRead",
            "preformatted",
            "allowTruncation",
        ];
        if boolean.contains(&k.as_str()) && v != "true" && v != "false" {
            out.push(format!("{}@{k} = {v}: not (true|false)", el.name));
        }
        if k == "deliveryPriority" && !["HIGH", "NORMAL", "LOW"].contains(&v.as_str()) {
            out.push(format!("deliveryPriority = {v}"));
        }
    }
    if model == "^$"
        && !el.text.trim().is_empty()
        && !matches!(
            el.name.as_str(),
            "wctp-MessageText"
                | "wctp-Choice"
                | "wctp-Alphanumeric"
                | "wctp-Success"
                | "wctp-Failure"
        )
    {
        out.push(format!("{} is EMPTY but has text", el.name));
    }
    for c in &el.children {
        violations(c, out);
    }
}

// ------------------------------------------------------------ carrier ----

/// How the carrier answers one submission.
#[derive(Clone, Copy, Debug)]
pub enum Answer {
    /// `wctp-Confirmation` / `wctp-Success`.
    Success,
    /// `wctp-Confirmation` / `wctp-Failure errorCode`.
    Failure(u16),
    /// Takes the message (pages) and drops the connection: the answer is lost.
    AcceptThenDrop,
    /// Takes the message, queues READ for it at once and answers
    /// `wctp-Success` only 2.5 s later: the status reaches the poller before
    /// the gateway knows the message was taken.
    EarlyRead,
}

/// One `wctp-SubmitRequest` the carrier received.
#[derive(Clone, Debug)]
pub struct Submitted {
    pub message_id: String,
    pub recipient: String,
    pub text: String,
    pub choices: Vec<String>,
    pub priority: Option<String>,
    pub content_type: String,
}

#[derive(Default)]
struct State {
    submits: Vec<Submitted>,
    /// messageIDs paged, in order (a repeat is not paged again).
    pages: Vec<String>,
    script: HashMap<String, VecDeque<Answer>>,
    /// Messages for the poller: (sequenceNo, wctp-Message content), kept
    /// until acknowledged.
    outbox: Vec<(u64, String)>,
    next_seq: u64,
    polls: usize,
    acks: usize,
    problems: Vec<String>,
}

/// A WCTP carrier gateway on loopback.
#[derive(Clone, Default)]
pub struct Carrier {
    state: Arc<Mutex<State>>,
}

fn doc(op: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!DOCTYPE wctp-Operation SYSTEM \"http://dtd.wctp.org/wctp-dtd-v1r3.dtd\">\n<wctp-Operation wctpVersion=\"wctp-dtd-v1r3\">{op}</wctp-Operation>"
    )
}

impl Carrier {
    pub async fn start(&self) -> u16 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let me = self.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let me = me.clone();
                tokio::spawn(async move {
                    let Some((head, body)) = read_request(&mut s).await else {
                        return;
                    };
                    match me.handle(&head, &body) {
                        Some(answer) => {
                            let answer = match answer.strip_prefix("SLOW:") {
                                Some(late) => {
                                    tokio::time::sleep(Duration::from_millis(2500)).await;
                                    late.to_string()
                                }
                                None => answer,
                            };
                            let resp = format!(
                                "HTTP/1.1 200 OK\r\nContent-Type: text/xml; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                                answer.len()
                            );
                            let _ = s.write_all(resp.as_bytes()).await;
                        }
                        // The answer is lost: close without a word.
                        None => drop(s),
                    }
                });
            }
        });
        port
    }

    fn handle(&self, head: &str, body: &[u8]) -> Option<String> {
        let mut st = self.state.lock().unwrap();
        let content_type = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-type")
                    .then(|| v.trim().to_string())
            })
            .unwrap_or_default();
        let text = String::from_utf8_lossy(body).to_string();
        if !text
            .contains("<!DOCTYPE wctp-Operation SYSTEM \"http://dtd.wctp.org/wctp-dtd-v1r3.dtd\">")
        {
            st.problems.push("no v1r3 DOCTYPE".into());
        }
        let root = match parse(body) {
            Ok(r) => r,
            Err(e) => {
                st.problems.push(format!("unparseable request: {e}"));
                return Some(doc(
                    "<wctp-Confirmation><wctp-Failure errorCode=\"301\" errorText=\"Input can not be parsed\"/></wctp-Confirmation>",
                ));
            }
        };
        let mut bad = Vec::new();
        violations(&root, &mut bad);
        if root.attr("wctpVersion") != Some("wctp-dtd-v1r3") {
            bad.push(format!("wctpVersion {:?}", root.attr("wctpVersion")));
        }
        let invalid = !bad.is_empty();
        st.problems.extend(bad);
        if invalid {
            return Some(doc(
                "<wctp-Confirmation><wctp-Failure errorCode=\"302\" errorText=\"XML validation error\"/></wctp-Confirmation>",
            ));
        }
        let op = &root.children[0];
        match op.name.as_str() {
            "wctp-SubmitRequest" => Some(st.submit(op, content_type)),
            "wctp-PollForMessages" => Some(st.poll(op)),
            other => {
                st.problems.push(format!("unexpected operation {other}"));
                Some(doc(
                    "<wctp-Confirmation><wctp-Failure errorCode=\"300\" errorText=\"Operation not supported\"/></wctp-Confirmation>",
                ))
            }
        }
        .and_then(|answer| (answer != "DROP").then_some(answer))
    }

    /// Scripts the answers to submissions for `recipient` (the last repeats).
    pub fn script(&self, recipient: &str, answers: &[Answer]) {
        self.state
            .lock()
            .unwrap()
            .script
            .insert(recipient.to_string(), answers.iter().copied().collect());
    }

    pub fn submits(&self) -> Vec<Submitted> {
        self.state.lock().unwrap().submits.clone()
    }

    pub fn submits_to(&self, recipient: &str) -> Vec<Submitted> {
        self.submits()
            .into_iter()
            .filter(|s| s.recipient == recipient)
            .collect()
    }

    pub fn pages(&self) -> Vec<String> {
        self.state.lock().unwrap().pages.clone()
    }

    pub fn problems(&self) -> Vec<String> {
        self.state.lock().unwrap().problems.clone()
    }

    /// Messages not yet acknowledged by the poller.
    pub fn waiting(&self) -> usize {
        self.state.lock().unwrap().outbox.len()
    }

    pub fn polls(&self) -> usize {
        self.state.lock().unwrap().polls
    }

    fn queue(&self, content: String) {
        self.state.lock().unwrap().queue(content);
    }

    fn header(message_id: &str, device: &str, own: &str) -> String {
        format!(
            "<wctp-ResponseHeader responseToMessageID=\"{}\" responseTimestamp=\"2026-03-01T08:00:00\"><wctp-Originator senderID=\"{}\"/><wctp-MessageControl messageID=\"{own}\"/><wctp-Recipient recipientID=\"{SENDER_ID}\"/></wctp-ResponseHeader>",
            escape(message_id),
            escape(device)
        )
    }

    /// Queues a `wctp-StatusInfo` notification (QUEUED, DELIVERED, READ).
    pub fn status(&self, message_id: &str, device: &str, kind: &str) {
        let h = Self::header(message_id, device, &format!("st-{kind}"));
        self.queue(format!(
            "<wctp-StatusInfo>{h}<wctp-Notification type=\"{kind}\"/></wctp-StatusInfo>"
        ));
    }

    /// Queues a `wctp-StatusInfo` failure: the device could not be reached.
    pub fn status_failure(&self, message_id: &str, device: &str, code: u16) {
        let h = Self::header(message_id, device, "st-fail");
        self.queue(format!(
            "<wctp-StatusInfo>{h}<wctp-Failure errorCode=\"{code}\" errorText=\"Unable to deliver\"/></wctp-StatusInfo>"
        ));
    }

    /// Queues a `wctp-MessageReply` typed (or chosen) on `device`.
    pub fn reply(&self, message_id: &str, device: &str, text: &str) {
        let h = Self::header(message_id, device, "rp-1");
        self.queue(format!(
            "<wctp-MessageReply MCRMessageReply=\"true\">{h}<wctp-Payload><wctp-Alphanumeric>{}</wctp-Alphanumeric></wctp-Payload></wctp-MessageReply>",
            escape(text)
        ));
    }
}

impl State {
    fn queue(&mut self, content: String) {
        self.next_seq += 1;
        self.outbox.push((self.next_seq, content));
    }

    fn submit(&mut self, op: &El, content_type: String) -> String {
        let header = op.find(&["wctp-SubmitHeader"]).unwrap();
        let orig = header.find(&["wctp-Originator"]).unwrap();
        let control = header.find(&["wctp-MessageControl"]).unwrap();
        let recipient = header
            .find(&["wctp-Recipient"])
            .unwrap()
            .attr("recipientID")
            .unwrap()
            .to_string();
        let payload = op.find(&["wctp-Payload"]).unwrap();
        let (text, choices) = match payload.find(&["wctp-MCR"]) {
            Some(mcr) => (
                mcr.find(&["wctp-MessageText"]).unwrap().text.clone(),
                mcr.children
                    .iter()
                    .filter(|c| c.name == "wctp-Choice")
                    .map(|c| c.text.clone())
                    .collect(),
            ),
            None => (
                payload.find(&["wctp-Alphanumeric"]).unwrap().text.clone(),
                Vec::new(),
            ),
        };
        let message_id = control.attr("messageID").unwrap().to_string();
        self.submits.push(Submitted {
            message_id: message_id.clone(),
            recipient: recipient.clone(),
            text,
            choices,
            priority: control.attr("deliveryPriority").map(str::to_string),
            content_type,
        });
        if orig.attr("senderID") != Some(SENDER_ID) {
            return doc(
                "<wctp-Confirmation><wctp-Failure errorCode=\"401\" errorText=\"Invalid ID\"/></wctp-Confirmation>",
            );
        }
        if orig.attr("securityCode") != Some(SECURITY_CODE) {
            return doc(
                "<wctp-Confirmation><wctp-Failure errorCode=\"402\" errorText=\"invalid security code\"/></wctp-Confirmation>",
            );
        }
        let success = || {
            doc(
                "<wctp-Confirmation><wctp-Success successCode=\"200\" successText=\"Accepted\">Message accepted</wctp-Success></wctp-Confirmation>",
            )
        };
        // A repeat of a message already taken: answered, never paged twice.
        if self.pages.contains(&message_id) {
            return success();
        }
        let answer = match self.script.get_mut(&recipient) {
            Some(q) if q.len() > 1 => q.pop_front().unwrap(),
            Some(q) => q.front().copied().unwrap_or(Answer::Success),
            None => Answer::Success,
        };
        match answer {
            Answer::Success => {
                self.pages.push(message_id);
                success()
            }
            Answer::AcceptThenDrop => {
                self.pages.push(message_id);
                "DROP".into()
            }
            Answer::EarlyRead => {
                let h = Carrier::header(&message_id, &recipient, "st-early");
                self.queue(format!(
                    "<wctp-StatusInfo>{h}<wctp-Notification type=\"READ\"/></wctp-StatusInfo>"
                ));
                self.pages.push(message_id);
                format!("SLOW:{}", success())
            }
            Answer::Failure(code) => doc(&format!(
                "<wctp-Confirmation><wctp-Failure errorCode=\"{code}\" errorText=\"scripted\"/></wctp-Confirmation>"
            )),
        }
    }

    fn poll(&mut self, op: &El) -> String {
        self.polls += 1;
        if op.attr("pollerID") != Some(SENDER_ID) || op.attr("securityCode") != Some(SECURITY_CODE)
        {
            return doc(
                "<wctp-PollResponse><wctp-Failure errorCode=\"402\" errorText=\"invalid security code\"/></wctp-PollResponse>",
            );
        }
        for m in op
            .children
            .iter()
            .filter(|c| c.name == "wctp-MessageReceived")
        {
            let seq: u64 = m.attr("sequenceNo").unwrap().parse().unwrap();
            if m.find(&["wctp-Success"]).is_some() {
                self.outbox.retain(|(s, _)| *s != seq);
                self.acks += 1;
            }
        }
        let max: usize = op
            .attr("maxMessagesInBatch")
            .and_then(|v| v.parse().ok())
            .unwrap_or(10);
        if self.outbox.is_empty() {
            return doc("<wctp-PollResponse><wctp-NoMessages/></wctp-PollResponse>");
        }
        let messages: String = self
            .outbox
            .iter()
            .take(max)
            .map(|(seq, m)| format!("<wctp-Message sequenceNo=\"{seq}\">{m}</wctp-Message>"))
            .collect();
        doc(&format!(
            "<wctp-PollResponse>{messages}</wctp-PollResponse>"
        ))
    }
}

async fn read_request(s: &mut tokio::net::TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let (head_end, len) = loop {
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..p]).to_string();
            let len = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            break (p + 4, len);
        }
    };
    while buf.len() < head_end + len {
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    Some((head, buf[head_end..].to_vec()))
}

// ------------------------------------------------------------ gateway ----

fn setup(dir: &Path, carrier: u16, tier0_secs: u64) -> PathBuf {
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
contacts = {{ pager = "{RN_A}" }}

[[members]]
id = "rn-b"
display = "RN B (fictional)"
contacts = {{ pager = "{RN_B}" }}

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
        format!(
            r#"
[[rules]]
name = "icu-critical"
match = {{ kind = "result", flags = ["HH"], units = ["ICU"] }}
route = {{ person = "rn-a", priority = "stat", escalation = "pager" }}

[escalations.pager]
tiers = [{{ route = true, timeout_secs = {tier0_secs} }}, {{ failsafe = true, timeout_secs = 600 }}]
"#
        ),
    )
    .unwrap();
    let text = format!(
        "rosters_dir = \"rosters\"\nmappings_dir = \"mappings\"\n\
[storage]\ndata_dir = \"data\"\n[mllp]\nlisten = \"127.0.0.1:0\"\n[http]\nlisten = \"127.0.0.1:0\"\n\
[reload]\nwatch_files = false\n\
[[senders]]\nname = \"lab\"\nmsh3 = [\"*\"]\nmsh4 = [\"*\"]\nnetworks = [\"127.0.0.0/8\"]\n\
[[backends]]\nname = \"pager\"\nkind = \"wctp\"\ncontact = \"pager\"\nprofile = \"limited\"\n\
url = \"http://127.0.0.1:{carrier}/wctp\"\nsender_id = \"{SENDER_ID}\"\nsecurity_code_env = \"SB_TEST_WCTP_CODE\"\n\
poll_secs = 1\nmax_chars = 80\nretry_initial_ms = 200\nretry_max_secs = 2\nmax_attempts = 5\n"
    );
    let path = dir.join("switchboard.toml");
    std::fs::write(&path, text).unwrap();
    path
}

async fn serve(config: &Path, log: &Path) -> (tokio::process::Child, std::net::SocketAddr) {
    let (mllp, http) = (free_port(), free_port());
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["serve", "--config"])
        .arg(config)
        .args([
            "--mllp",
            &format!("127.0.0.1:{mllp}"),
            "--http",
            &format!("127.0.0.1:{http}"),
        ])
        .env("SB_TEST_WCTP_CODE", SECURITY_CODE)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    for _ in 0..400 {
        if tokio::net::TcpStream::connect(("127.0.0.1", mllp))
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    (child, format!("127.0.0.1:{mllp}").parse().unwrap())
}

fn query<T: rusqlite::types::FromSql>(db: &Path, sql: &str) -> T {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

fn alert_state(db: &Path) -> String {
    query(db, "SELECT state FROM alerts ORDER BY id LIMIT 1")
}

fn timeline_count(db: &Path, what: &str) -> i64 {
    query(
        db,
        &format!("SELECT COUNT(*) FROM audit WHERE action LIKE 'alert.%' AND outcome = '{what}'"),
    )
}

struct Run {
    carrier: Carrier,
    dir: tempfile::TempDir,
    child: tokio::process::Child,
}

impl Run {
    async fn start(carrier: Carrier, tier0_secs: u64) -> Run {
        let port = carrier.start().await;
        let dir = tempfile::tempdir().unwrap();
        let config = setup(dir.path(), port, tier0_secs);
        let (child, mllp) = serve(&config, &dir.path().join("gateway.log")).await;
        let mut c = Mllp::connect(mllp).await;
        assert_eq!(ack_code(&c.roundtrip(&oru("WC1", "ICU")).await), "AA");
        Run {
            carrier,
            dir,
            child,
        }
    }

    fn db(&self) -> PathBuf {
        self.dir.path().join("data/journal.sqlite3")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("gateway.log")).unwrap_or_default()
    }

    async fn first_page_to(&self, recipient: &str, secs: u64) -> Submitted {
        let until = std::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let pages = self.carrier.pages();
            if let Some(s) = self
                .carrier
                .submits_to(recipient)
                .into_iter()
                .find(|s| pages.contains(&s.message_id))
            {
                return s;
            }
            assert!(
                std::time::Instant::now() < until,
                "no page to {recipient}; carrier problems: {:?}\ngateway log:\n{}",
                self.carrier.problems(),
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn assert_clean(&self) {
        let problems = self.carrier.problems();
        assert!(
            problems.is_empty(),
            "DTD or protocol problems: {problems:?}"
        );
    }
}

#[tokio::test]
async fn a_critical_result_is_paged_over_wctp_and_an_accept_reply_stops_escalation() {
    let run = Run::start(Carrier::default(), 8).await;
    let page = run.first_page_to(RN_A, 30).await;
    let paged_at = std::time::Instant::now();
    // Limited profile: no identifier, scrubbed free text; cut for the pager.
    let upper = page.text.to_uppercase();
    for canary in [
        "ZZCANARY",
        "PHIPERSON",
        "ZZMRN",
        "19700101",
        "555",
        "CANARY ROAD",
    ] {
        assert!(
            !upper.contains(canary),
            "{canary} left under `limited`: {}",
            page.text
        );
    }
    assert!(
        !page.text.is_empty() && page.text.chars().count() <= 80,
        "{}",
        page.text
    );
    assert_eq!(page.choices, ["Accept", "Decline"]);
    assert_eq!(page.priority.as_deref(), Some("HIGH"));
    assert!(
        page.content_type.starts_with("text/xml"),
        "{}",
        page.content_type
    );
    assert_eq!(page.message_id.len(), 32, "the idempotency key, cut to 32");
    let db = run.db();
    wait_until("not marked delivered", 10, || {
        rows(&db).first().is_some_and(|r| r.1 == "delivered")
    })
    .await;
    let remote: String = query(
        &db,
        "SELECT remote_ref FROM notifications ORDER BY id LIMIT 1",
    );
    assert_eq!(remote, page.message_id);

    // The device reports delivery and reading; the clinician picks Accept.
    run.carrier.status(&page.message_id, RN_A, "QUEUED");
    run.carrier.status(&page.message_id, RN_A, "DELIVERED");
    run.carrier.status(&page.message_id, RN_A, "READ");
    run.carrier.reply(&page.message_id, RN_A, "Accept");
    wait_until("the Accept reply never accepted the alert", 20, || {
        alert_state(&db) == "accepted"
    })
    .await;
    let c = run.carrier.clone();
    wait_until("polled messages never acknowledged", 10, move || {
        c.waiting() == 0
    })
    .await;
    assert_eq!(timeline_count(&db, "read by rn-a"), 1);
    assert_eq!(timeline_count(&db, "accepted by rn-a"), 1);

    // The carrier repeats what it already said: nothing is added.
    run.carrier.status(&page.message_id, RN_A, "READ");
    run.carrier.status(&page.message_id, RN_A, "DELIVERED");
    run.carrier.reply(&page.message_id, RN_A, "Accept");
    let c = run.carrier.clone();
    wait_until("repeats never acknowledged", 10, move || c.waiting() == 0).await;
    assert_eq!(
        timeline_count(&db, "read by rn-a"),
        1,
        "a repeated READ added a step"
    );
    assert_eq!(timeline_count(&db, "delivered to rn-a"), 1);
    assert_eq!(timeline_count(&db, "accepted by rn-a"), 1);

    // Past tier 0's timeout nobody else is paged.
    let until = paged_at + Duration::from_secs(11);
    while std::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        run.carrier.submits_to(RN_B).is_empty(),
        "tier 1 paged after acceptance"
    );
    assert_eq!(alert_state(&db), "accepted");
    assert_eq!(run.carrier.pages().len(), 1);
    assert!(
        run.carrier.polls() >= 3,
        "status and replies came by polling"
    );
    run.assert_clean();
    drop(run.child);
}

#[tokio::test]
async fn a_decline_reply_pages_the_next_tier_at_once() {
    let run = Run::start(Carrier::default(), 600).await;
    let page = run.first_page_to(RN_A, 30).await;
    run.carrier.status(&page.message_id, RN_A, "DELIVERED");
    run.carrier.reply(&page.message_id, RN_A, "decline");
    // Tier 0 would wait ten minutes; the decline escalates now.
    let next = run.first_page_to(RN_B, 20).await;
    assert_ne!(next.message_id, page.message_id);
    let db = run.db();
    assert_eq!(timeline_count(&db, "declined by rn-a"), 1);
    // Only the paged device may answer for its page.
    run.carrier.reply(&next.message_id, RN_A, "Accept");
    let c = run.carrier.clone();
    wait_until(
        "the stranger's reply was never acknowledged",
        10,
        move || c.waiting() == 0,
    )
    .await;
    assert_ne!(
        alert_state(&db),
        "accepted",
        "a reply from another device accepted"
    );
    run.carrier.reply(&next.message_id, RN_B, "Accept");
    wait_until("rn-b's accept never applied", 20, || {
        alert_state(&db) == "accepted"
    })
    .await;
    assert_eq!(timeline_count(&db, "accepted by rn-b"), 1);
    run.assert_clean();
    drop(run.child);
}

#[tokio::test]
async fn a_carrier_failure_and_a_lost_answer_are_retried_with_the_same_message_id_and_page_once() {
    let carrier = Carrier::default();
    carrier.script(
        RN_A,
        &[
            Answer::Failure(503),
            Answer::AcceptThenDrop,
            Answer::Success,
        ],
    );
    let run = Run::start(carrier, 600).await;
    let db = run.db();
    wait_until("never delivered after the failures", 30, || {
        rows(&db).first().is_some_and(|r| r.1 == "delivered")
    })
    .await;
    let tries = run.carrier.submits_to(RN_A);
    assert_eq!(tries.len(), 3, "{tries:?}\n{}", run.log());
    assert!(
        tries.iter().all(|t| t.message_id == tries[0].message_id),
        "{tries:?}"
    );
    assert_eq!(
        run.carrier.pages(),
        [tries[0].message_id.clone()],
        "paged once"
    );
    assert_eq!(rows(&db)[0].2, 3, "three attempts recorded");
    assert!(run.carrier.submits_to(RN_B).is_empty());
    run.assert_clean();
    drop(run.child);
}

#[tokio::test]
async fn a_wctp_content_error_is_dead_lettered_and_escalated_never_silent() {
    let carrier = Carrier::default();
    carrier.script(RN_A, &[Answer::Failure(403)]);
    let run = Run::start(carrier, 600).await;
    // The failsafe is paged at once, not after tier 0's ten minutes.
    run.first_page_to(RN_B, 30).await;
    let db = run.db();
    let r = rows(&db);
    let a = r.iter().find(|x| x.0 == "rn-a").unwrap();
    assert_eq!((a.1.as_str(), a.2), ("dead", 1), "a 403 is not retried");
    assert_eq!(run.carrier.submits_to(RN_A).len(), 1);
    let dead: String = query(
        &db,
        "SELECT outcome FROM audit WHERE action = 'delivery.dead'",
    );
    assert_eq!(dead, "wctp error 403");
    run.assert_clean();
    drop(run.child);
}

#[tokio::test]
async fn a_device_the_carrier_cannot_reach_escalates_once() {
    let run = Run::start(Carrier::default(), 600).await;
    let page = run.first_page_to(RN_A, 30).await;
    run.carrier.status_failure(&page.message_id, RN_A, 503);
    run.carrier.status_failure(&page.message_id, RN_A, 503);
    run.first_page_to(RN_B, 20).await;
    let c = run.carrier.clone();
    wait_until("failures never acknowledged", 10, move || c.waiting() == 0).await;
    let db = run.db();
    assert_eq!(timeline_count(&db, "could not be delivered to rn-a"), 1);
    assert_eq!(run.carrier.submits_to(RN_B).len(), 1, "escalated twice");
    run.assert_clean();
    drop(run.child);
}

#[tokio::test]
async fn a_status_polled_before_the_submission_is_recorded_is_applied_not_lost() {
    let carrier = Carrier::default();
    carrier.script(RN_A, &[Answer::EarlyRead]);
    let run = Run::start(carrier, 600).await;
    let db = run.db();
    // The poller (every second) sees READ for a messageID the gateway has
    // not recorded yet; it keeps it with the carrier and applies it once
    // the submission's answer is in.
    wait_until("the early READ was never applied", 30, || {
        timeline_count(&db, "read by rn-a") == 1
    })
    .await;
    let c = run.carrier.clone();
    wait_until("the early READ was never acknowledged", 10, move || {
        c.waiting() == 0
    })
    .await;
    assert_eq!(timeline_count(&db, "read by rn-a"), 1);
    assert_eq!(rows(&db)[0].1, "delivered");
    run.assert_clean();
    drop(run.child);
}
