//! WCTP 1.3 documents (`wctp-dtd-v1r3`): the two operations this gateway
//! sends — `wctp-SubmitRequest` and `wctp-PollForMessages` — and the two
//! answers it reads — `wctp-Confirmation` and `wctp-PollResponse` (whose
//! messages are `wctp-StatusInfo` and `wctp-MessageReply`).
//!
//! Guarantees:
//! - Element and attribute names, and the order of elements, are those of
//!   the v1r3 DTD; every attribute value and text is escaped by quick-xml,
//!   and characters XML 1.0 forbids (control characters) become spaces.
//! - Parsing resolves only the five predefined entities and character
//!   references (no external or declared entity is ever read), refuses
//!   documents deeper than [`MAX_DEPTH`] or with more than [`MAX_ELEMENTS`]
//!   elements, and its errors name the kind of problem and the WCTP element,
//!   never content.
//! - A reply's text is reduced to [`ReplyWord`] here: the free text a
//!   clinician typed is not kept.

use std::borrow::Cow;
use std::time::Duration;

use chrono::{DateTime, Utc};
use quick_xml::Writer;
use quick_xml::events::{BytesDecl, BytesStart, BytesText, Event};

/// `wctpVersion` of every operation sent.
pub const VERSION: &str = "wctp-dtd-v1r3";
/// The document type declaration of every operation sent.
pub const DOCTYPE: &str = r#"wctp-Operation SYSTEM "http://dtd.wctp.org/wctp-dtd-v1r3.dtd""#;
/// Longest `messageID` (WCTP: 1 to 32 characters).
pub const MESSAGE_ID_MAX: usize = 32;
/// Longest `senderID` / `recipientID` (WCTP: 1 to 128 characters).
pub const ID_MAX: usize = 128;
/// Deepest nesting accepted in an answer.
pub const MAX_DEPTH: usize = 32;
/// Most elements accepted in an answer.
pub const MAX_ELEMENTS: usize = 20_000;
/// The multiple-choice response that accepts.
pub const ACCEPT: &str = "Accept";
/// The multiple-choice response that declines.
pub const DECLINE: &str = "Decline";

/// One `wctp-SubmitRequest`.
#[derive(Clone, Debug)]
pub struct Submit<'a> {
    /// `wctp-Originator senderID`.
    pub sender_id: &'a str,
    /// `wctp-Originator securityCode`.
    pub security_code: Option<&'a str>,
    /// `wctp-MessageControl messageID` (the same on every attempt).
    pub message_id: &'a str,
    /// `wctp-Recipient recipientID` (pager id, extension).
    pub recipient_id: &'a str,
    /// `wctp-SubmitHeader submitTimestamp`.
    pub submitted: DateTime<Utc>,
    /// `deliveryPriority="HIGH"` (else the DTD default, NORMAL).
    pub high_priority: bool,
    /// The message text (already cut to the device's length).
    pub text: &'a str,
    /// Offer Accept / Decline as `wctp-MCR` choices (else `wctp-Alphanumeric`).
    pub choices: bool,
}

/// The characters XML 1.0 allows; others (control characters, U+FFFE,
/// U+FFFF) become spaces so the document stays well-formed.
pub fn xml_chars(s: &str) -> Cow<'_, str> {
    let ok = |c: char| {
        matches!(c, '\t' | '\n' | '\r') || (c >= ' ' && !matches!(c, '\u{FFFE}' | '\u{FFFF}'))
    };
    if s.chars().all(ok) {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(s.chars().map(|c| if ok(c) { c } else { ' ' }).collect())
    }
}

/// `s` cut to at most `max` characters, on a character boundary.
pub fn truncate(s: &str, max: Option<usize>) -> &str {
    match max.and_then(|m| s.char_indices().nth(m)) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// The `messageID` of a notification: its idempotency key, cut to the
/// 32 characters WCTP allows (the key is hex; 32 digits are 128 bits).
pub fn message_id(idempotency_key: &str) -> String {
    truncate(idempotency_key, Some(MESSAGE_ID_MAX)).to_string()
}

fn document(body: impl FnOnce(&mut Writer<Vec<u8>>) -> std::io::Result<()>) -> Vec<u8> {
    let mut w = Writer::new(Vec::with_capacity(1024));
    let written = (|| {
        w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
        w.write_event(Event::DocType(BytesText::from_escaped(DOCTYPE)))?;
        w.create_element("wctp-Operation")
            .with_attribute(("wctpVersion", VERSION))
            .write_inner_content(body)?;
        Ok::<_, std::io::Error>(())
    })();
    // Writing into a Vec cannot fail.
    debug_assert!(written.is_ok());
    w.into_inner()
}

/// A `wctp-SubmitRequest` document.
pub fn submit_request(s: &Submit<'_>) -> Vec<u8> {
    let sender = xml_chars(s.sender_id);
    let code = s.security_code.map(xml_chars);
    let message_id = xml_chars(s.message_id);
    let recipient = xml_chars(s.recipient_id);
    let text = xml_chars(s.text);
    let stamp = s.submitted.format("%Y-%m-%dT%H:%M:%S").to_string();
    document(|w| {
        w.create_element("wctp-SubmitRequest")
            .write_inner_content(|w| {
                w.create_element("wctp-SubmitHeader")
                    .with_attribute(("submitTimestamp", stamp.as_str()))
                    .write_inner_content(|w| {
                        let mut originator = BytesStart::new("wctp-Originator");
                        originator.push_attribute(("senderID", sender.as_ref()));
                        if let Some(code) = &code {
                            originator.push_attribute(("securityCode", code.as_ref()));
                        }
                        w.write_event(Event::Empty(originator))?;
                        let mut control = BytesStart::new("wctp-MessageControl");
                        control.push_attribute(("messageID", message_id.as_ref()));
                        control.push_attribute(("allowResponse", "true"));
                        control.push_attribute(("notifyWhenDelivered", "true"));
                        control.push_attribute(("notifyWhenRead", "true"));
                        if s.high_priority {
                            control.push_attribute(("deliveryPriority", "HIGH"));
                        }
                        w.write_event(Event::Empty(control))?;
                        w.create_element("wctp-Recipient")
                            .with_attribute(("recipientID", recipient.as_ref()))
                            .write_empty()?;
                        Ok(())
                    })?;
                w.create_element("wctp-Payload").write_inner_content(|w| {
                    if s.choices {
                        w.create_element("wctp-MCR").write_inner_content(|w| {
                            w.create_element("wctp-MessageText")
                                .write_text_content(BytesText::new(&text))?;
                            for choice in [ACCEPT, DECLINE] {
                                w.create_element("wctp-Choice")
                                    .write_text_content(BytesText::new(choice))?;
                            }
                            Ok(())
                        })?;
                    } else {
                        w.create_element("wctp-Alphanumeric")
                            .write_text_content(BytesText::new(&text))?;
                    }
                    Ok(())
                })?;
                Ok(())
            })?;
        Ok(())
    })
}

/// A `wctp-PollForMessages` document acknowledging the messages of the
/// previous batch (`wctp-MessageReceived sequenceNo` with `wctp-Success`).
pub fn poll_for_messages(
    poller_id: &str,
    security_code: Option<&str>,
    max_batch: usize,
    received: &[String],
) -> Vec<u8> {
    let poller = xml_chars(poller_id);
    let code = security_code.map(xml_chars);
    let batch = max_batch.to_string();
    document(|w| {
        let mut poll = BytesStart::new("wctp-PollForMessages");
        poll.push_attribute(("pollerID", poller.as_ref()));
        if let Some(code) = &code {
            poll.push_attribute(("securityCode", code.as_ref()));
        }
        poll.push_attribute(("maxMessagesInBatch", batch.as_str()));
        if received.is_empty() {
            return w.write_event(Event::Empty(poll));
        }
        w.write_event(Event::Start(poll.borrow()))?;
        for seq in received {
            w.create_element("wctp-MessageReceived")
                .with_attribute(("sequenceNo", xml_chars(seq).as_ref()))
                .write_inner_content(|w| {
                    w.create_element("wctp-Success")
                        .with_attribute(("successCode", "200"))
                        .with_attribute(("successText", "Received"))
                        .write_empty()?;
                    Ok(())
                })?;
        }
        w.write_event(Event::End(poll.to_end()))
    })
}

/// Why an answer could not be read (kinds and WCTP element names only).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    /// Not UTF-8 text.
    #[error("answer is not UTF-8")]
    NotUtf8,
    /// Not well-formed XML.
    #[error("answer is not well-formed XML")]
    Malformed,
    /// Nested or sized beyond the limits.
    #[error("answer is nested too deeply or too large")]
    TooLarge,
    /// An entity other than the predefined ones.
    #[error("answer uses an undeclared entity")]
    Entity,
    /// The root is not `wctp-Operation`.
    #[error("answer is not a WCTP operation")]
    NotWctp,
    /// A WCTP operation other than the one expected.
    #[error("unexpected WCTP answer {0}")]
    Unexpected(String),
    /// A required element or attribute is missing or unreadable.
    #[error("{0} without a valid {1}")]
    Missing(&'static str, &'static str),
}

/// A parsed element: name, attributes, child elements and its own text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Element {
    /// Element name.
    pub name: String,
    /// Attributes, unescaped.
    pub attrs: Vec<(String, String)>,
    /// Child elements, in order.
    pub children: Vec<Element>,
    /// Text directly inside it, unescaped.
    pub text: String,
}

impl Element {
    /// An attribute's value.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first child element called `name`.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// The first child element, whatever its name.
    pub fn first(&self) -> Option<&Element> {
        self.children.first()
    }
}

/// A WCTP element name fit for an error message: only names from the
/// `wctp-` vocabulary, bounded; anything else is just "element".
fn shown(name: &str) -> String {
    if name.starts_with("wctp-")
        && name.len() <= 40
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        name.to_string()
    } else {
        "element".to_string()
    }
}

/// Parses an answer into its root element.
pub fn parse(body: &[u8]) -> Result<Element, XmlError> {
    use quick_xml::escape::resolve_predefined_entity;
    use quick_xml::events::attributes::Attribute;

    let text = std::str::from_utf8(body).map_err(|_| XmlError::NotUtf8)?;
    let mut reader = quick_xml::Reader::from_str(text);
    let attrs = |e: &BytesStart<'_>| -> Result<Vec<(String, String)>, XmlError> {
        e.attributes()
            .map(|a| {
                let a: Attribute<'_> = a.map_err(|_| XmlError::Malformed)?;
                let value = a
                    .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                    .map_err(|_| XmlError::Entity)?;
                Ok((a.key.as_ref().to_string(), value.into_owned()))
            })
            .collect()
    };
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut count = 0usize;
    loop {
        let event = reader.read_event().map_err(|_| XmlError::Malformed)?;
        if root.is_some() && matches!(event, Event::Start(_) | Event::Empty(_)) {
            // A second root element.
            return Err(XmlError::Malformed);
        }
        let done = match event {
            Event::Start(e) => {
                count += 1;
                if stack.len() >= MAX_DEPTH || count > MAX_ELEMENTS {
                    return Err(XmlError::TooLarge);
                }
                stack.push(Element {
                    name: e.name().as_ref().to_string(),
                    attrs: attrs(&e)?,
                    ..Element::default()
                });
                None
            }
            Event::Empty(e) => {
                count += 1;
                if stack.len() >= MAX_DEPTH || count > MAX_ELEMENTS {
                    return Err(XmlError::TooLarge);
                }
                Some(Element {
                    name: e.name().as_ref().to_string(),
                    attrs: attrs(&e)?,
                    ..Element::default()
                })
            }
            Event::End(_) => Some(stack.pop().ok_or(XmlError::Malformed)?),
            Event::Text(t) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&t.xml10_content());
                } else if !t.xml10_content().trim().is_empty() {
                    return Err(XmlError::Malformed);
                }
                None
            }
            Event::CData(c) => {
                let top = stack.last_mut().ok_or(XmlError::Malformed)?;
                top.text.push_str(&c.xml10_content());
                None
            }
            Event::GeneralRef(r) => {
                let top = stack.last_mut().ok_or(XmlError::Malformed)?;
                match r.resolve_char_ref() {
                    Ok(Some(c)) => top.text.push(c),
                    Ok(None) => match resolve_predefined_entity(&r) {
                        Some(v) => top.text.push_str(v),
                        None => return Err(XmlError::Entity),
                    },
                    Err(_) => return Err(XmlError::Entity),
                }
                None
            }
            Event::Eof => break,
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) | Event::DocType(_) => None,
        };
        if let Some(el) = done {
            match stack.last_mut() {
                Some(parent) => parent.children.push(el),
                None => root = Some(el),
            }
        }
    }
    if !stack.is_empty() {
        return Err(XmlError::Malformed);
    }
    let root = root.ok_or(XmlError::Malformed)?;
    if root.name != "wctp-Operation" {
        return Err(XmlError::NotWctp);
    }
    Ok(root)
}

/// The operation inside `wctp-Operation`, which must be called `name`.
fn operation<'a>(root: &'a Element, name: &str) -> Result<&'a Element, XmlError> {
    let op = root.first().ok_or(XmlError::NotWctp)?;
    if op.name != name {
        return Err(XmlError::Unexpected(shown(&op.name)));
    }
    Ok(op)
}

fn code(el: &Element, attr: &'static str, what: &'static str) -> Result<u16, XmlError> {
    el.attr(attr)
        .and_then(|v| v.trim().parse::<u16>().ok())
        .ok_or(XmlError::Missing(what, attr))
}

/// The answer to a `wctp-SubmitRequest`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Confirmation {
    /// `wctp-Success successCode`: the carrier took the message.
    Success(u16),
    /// `wctp-Failure errorCode`.
    Failure(u16),
}

/// Reads a `wctp-Confirmation`.
pub fn confirmation(root: &Element) -> Result<Confirmation, XmlError> {
    let op = operation(root, "wctp-Confirmation")?;
    if let Some(s) = op.child("wctp-Success") {
        return Ok(Confirmation::Success(code(
            s,
            "successCode",
            "wctp-Success",
        )?));
    }
    if let Some(f) = op.child("wctp-Failure") {
        return Ok(Confirmation::Failure(code(f, "errorCode", "wctp-Failure")?));
    }
    Err(XmlError::Missing("wctp-Confirmation", "wctp-Success"))
}

/// What a device (or the carrier for it) reported about a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceStatus {
    /// Queued for the device.
    Queued,
    /// Delivered to the device.
    Delivered,
    /// Read on the device.
    Read,
    /// Could not be delivered (`wctp-Failure errorCode`).
    Failed(u16),
}

/// A reply reduced to what it means here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyWord {
    /// The recipient accepts.
    Accept,
    /// The recipient declines.
    Decline,
}

/// The meaning of a reply's text: exactly the Accept or Decline choice
/// (letter case and surrounding space aside; "accepted"/"declined" too).
/// Anything else means nothing: a free-text answer is never read as an
/// acceptance.
pub fn reply_word(text: &str) -> Option<ReplyWord> {
    let t = text.trim();
    if t.eq_ignore_ascii_case(ACCEPT) || t.eq_ignore_ascii_case("accepted") {
        Some(ReplyWord::Accept)
    } else if t.eq_ignore_ascii_case(DECLINE) || t.eq_ignore_ascii_case("declined") {
        Some(ReplyWord::Decline)
    } else {
        None
    }
}

/// One message of a `wctp-PollResponse`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inbound {
    /// `wctp-Message sequenceNo` (acknowledged on the next poll).
    pub sequence_no: String,
    /// What it says.
    pub event: InboundEvent,
}

/// What a polled message says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InboundEvent {
    /// `wctp-StatusInfo` about a message sent.
    Status {
        /// `responseToMessageID`.
        message_id: String,
        /// The device (`wctp-Originator senderID`), when given.
        from: Option<String>,
        /// The status.
        status: DeviceStatus,
    },
    /// `wctp-MessageReply` to a message sent.
    Reply {
        /// `responseToMessageID`.
        message_id: String,
        /// The device that answered (`wctp-Originator senderID`).
        from: String,
        /// What the answer means (`None`: nothing this gateway acts on).
        word: Option<ReplyWord>,
    },
    /// Anything else (a message from a device, a lookup answer): nothing
    /// to apply.
    Other,
}

/// The answer to a `wctp-PollForMessages`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PollAnswer {
    /// The messages (empty for `wctp-NoMessages`).
    pub messages: Vec<Inbound>,
    /// `wctp-Failure errorCode`, when the poll itself failed.
    pub failure: Option<u16>,
    /// `minNextPollInterval` (seconds; capped at an hour).
    pub min_next_poll: Option<Duration>,
}

/// Reads a `wctp-ResponseHeader`: (responseToMessageID, originator).
fn response_header(el: &Element, what: &'static str) -> Result<(String, Option<String>), XmlError> {
    let h = el
        .child("wctp-ResponseHeader")
        .ok_or(XmlError::Missing(what, "wctp-ResponseHeader"))?;
    let id = h
        .attr("responseToMessageID")
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or(XmlError::Missing(
            "wctp-ResponseHeader",
            "responseToMessageID",
        ))?;
    let from = h
        .child("wctp-Originator")
        .and_then(|o| o.attr("senderID"))
        .map(|s| s.trim().to_string());
    Ok((id.to_string(), from))
}

fn inbound(message: &Element) -> Result<Inbound, XmlError> {
    let sequence_no = message
        .attr("sequenceNo")
        .map(str::trim)
        .filter(|s| !s.is_empty() && s.len() <= 64)
        .ok_or(XmlError::Missing("wctp-Message", "sequenceNo"))?
        .to_string();
    let Some(body) = message.first() else {
        return Err(XmlError::Missing("wctp-Message", "operation"));
    };
    let event = match body.name.as_str() {
        "wctp-StatusInfo" => {
            let (message_id, from) = response_header(body, "wctp-StatusInfo")?;
            let status = if let Some(n) = body.child("wctp-Notification") {
                match n.attr("type").map(str::trim) {
                    Some("QUEUED") => DeviceStatus::Queued,
                    Some("DELIVERED") => DeviceStatus::Delivered,
                    Some("READ") => DeviceStatus::Read,
                    _ => return Err(XmlError::Missing("wctp-Notification", "type")),
                }
            } else if let Some(f) = body.child("wctp-Failure") {
                DeviceStatus::Failed(code(f, "errorCode", "wctp-Failure")?)
            } else {
                return Err(XmlError::Missing("wctp-StatusInfo", "wctp-Notification"));
            };
            InboundEvent::Status {
                message_id,
                from,
                status,
            }
        }
        "wctp-MessageReply" => {
            let (message_id, from) = response_header(body, "wctp-MessageReply")?;
            let from = from.ok_or(XmlError::Missing("wctp-ResponseHeader", "wctp-Originator"))?;
            let word = body
                .child("wctp-Payload")
                .and_then(|p| p.child("wctp-Alphanumeric"))
                .and_then(|a| reply_word(&a.text));
            InboundEvent::Reply {
                message_id,
                from,
                word,
            }
        }
        _ => InboundEvent::Other,
    };
    Ok(Inbound { sequence_no, event })
}

/// Reads a `wctp-PollResponse`. A message that cannot be read fails the
/// whole answer (it is not acknowledged, so the carrier keeps it).
pub fn poll_response(root: &Element) -> Result<PollAnswer, XmlError> {
    let op = operation(root, "wctp-PollResponse")?;
    let min_next_poll = op
        .attr("minNextPollInterval")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| Duration::from_secs(s.min(3600)));
    if let Some(f) = op.child("wctp-Failure") {
        return Ok(PollAnswer {
            messages: Vec::new(),
            failure: Some(code(f, "errorCode", "wctp-Failure")?),
            min_next_poll,
        });
    }
    let messages = op
        .children
        .iter()
        .filter(|c| c.name == "wctp-Message")
        .map(inbound)
        .collect::<Result<Vec<_>, _>>()?;
    if messages.is_empty() && op.child("wctp-NoMessages").is_none() {
        return Err(XmlError::Missing("wctp-PollResponse", "wctp-Message"));
    }
    Ok(PollAnswer {
        messages,
        failure: None,
        min_next_poll,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> DateTime<Utc> {
        "2026-03-01T08:09:10Z".parse().unwrap()
    }

    fn submit(text: &str, choices: bool) -> Submit<'_> {
        Submit {
            sender_id: "switchboard",
            security_code: Some("s3cr\"t<&>"),
            message_id: "0123456789abcdef0123456789abcdef",
            recipient_id: "5551234",
            submitted: at(),
            high_priority: true,
            text,
            choices,
        }
    }

    fn names(el: &Element, out: &mut Vec<String>) {
        out.push(el.name.clone());
        for c in &el.children {
            names(c, out);
        }
    }

    #[test]
    fn a_submit_request_has_the_dtd_elements_in_order_and_escapes_everything() {
        let body = submit_request(&submit("K 6.9 <HH> & \"rising\" 'now'", true));
        let text = String::from_utf8(body.clone()).unwrap();
        assert!(text.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>"));
        assert!(text.contains(
            "<!DOCTYPE wctp-Operation SYSTEM \"http://dtd.wctp.org/wctp-dtd-v1r3.dtd\">"
        ));
        assert!(
            text.contains("&lt;HH&gt; &amp; &quot;rising&quot;"),
            "{text}"
        );
        assert!(!text.contains("<HH>"));
        let root = parse(&body).unwrap();
        assert_eq!(root.attr("wctpVersion"), Some("wctp-dtd-v1r3"));
        let mut all = Vec::new();
        names(&root, &mut all);
        assert_eq!(
            all,
            [
                "wctp-Operation",
                "wctp-SubmitRequest",
                "wctp-SubmitHeader",
                "wctp-Originator",
                "wctp-MessageControl",
                "wctp-Recipient",
                "wctp-Payload",
                "wctp-MCR",
                "wctp-MessageText",
                "wctp-Choice",
                "wctp-Choice",
            ]
        );
        let header = &root.children[0].children[0];
        assert_eq!(header.attr("submitTimestamp"), Some("2026-03-01T08:09:10"));
        let orig = &header.children[0];
        assert_eq!(orig.attr("senderID"), Some("switchboard"));
        assert_eq!(orig.attr("securityCode"), Some("s3cr\"t<&>"));
        let control = &header.children[1];
        assert_eq!(
            control.attr("messageID"),
            Some("0123456789abcdef0123456789abcdef")
        );
        for a in ["allowResponse", "notifyWhenDelivered", "notifyWhenRead"] {
            assert_eq!(control.attr(a), Some("true"), "{a}");
        }
        assert_eq!(control.attr("deliveryPriority"), Some("HIGH"));
        assert_eq!(header.children[2].attr("recipientID"), Some("5551234"));
        let mcr = &root.children[0].children[1].children[0];
        assert_eq!(mcr.children[0].text, "K 6.9 <HH> & \"rising\" 'now'");
        assert_eq!(mcr.children[1].text, "Accept");
        assert_eq!(mcr.children[2].text, "Decline");
    }

    #[test]
    fn without_choices_the_payload_is_alphanumeric_and_priority_is_the_default() {
        let mut s = submit("plain", false);
        s.high_priority = false;
        s.security_code = None;
        let root = parse(&submit_request(&s)).unwrap();
        let req = &root.children[0];
        let payload = &req.children[1];
        assert_eq!(payload.children[0].name, "wctp-Alphanumeric");
        assert_eq!(payload.children[0].text, "plain");
        let header = &req.children[0];
        assert_eq!(header.children[0].attr("securityCode"), None);
        assert_eq!(header.children[1].attr("deliveryPriority"), None);
    }

    #[test]
    fn control_characters_cannot_break_the_document() {
        let body = submit_request(&submit("a\u{0}b\u{1b}[31mc\u{FFFF}d\ttab", false));
        let root = parse(&body).unwrap();
        assert_eq!(
            root.children[0].children[1].children[0].text,
            "a b [31mc d\ttab"
        );
    }

    #[test]
    fn truncation_cuts_on_a_character_boundary() {
        assert_eq!(truncate("héllo wörld", Some(5)), "héllo");
        assert_eq!(truncate("ÄÖÜ€😀x", Some(5)), "ÄÖÜ€😀");
        assert_eq!(truncate("😀😀", Some(1)), "😀");
        assert_eq!(truncate("short", Some(80)), "short");
        assert_eq!(truncate("short", Some(5)), "short");
        assert_eq!(truncate("any", None), "any");
        assert_eq!(message_id(&"ab".repeat(32)), "ab".repeat(16));
        assert_eq!(message_id("short"), "short");
    }

    #[test]
    fn a_poll_acknowledges_the_previous_batch() {
        let body = poll_for_messages("switchboard", Some("c&de"), 25, &["7".into(), "8".into()]);
        let root = parse(&body).unwrap();
        let poll = &root.children[0];
        assert_eq!(poll.name, "wctp-PollForMessages");
        assert_eq!(poll.attr("pollerID"), Some("switchboard"));
        assert_eq!(poll.attr("securityCode"), Some("c&de"));
        assert_eq!(poll.attr("maxMessagesInBatch"), Some("25"));
        let seqs: Vec<_> = poll
            .children
            .iter()
            .map(|m| {
                assert_eq!(m.name, "wctp-MessageReceived");
                assert_eq!(m.children[0].name, "wctp-Success");
                assert_eq!(m.children[0].attr("successCode"), Some("200"));
                m.attr("sequenceNo").unwrap()
            })
            .collect();
        assert_eq!(seqs, ["7", "8"]);
        let empty = parse(&poll_for_messages("p", None, 10, &[])).unwrap();
        assert!(empty.children[0].children.is_empty());
        assert_eq!(empty.children[0].attr("securityCode"), None);
    }

    const HEAD: &str = r#"<?xml version="1.0"?><!DOCTYPE wctp-Operation SYSTEM "http://dtd.wctp.org/wctp-dtd-v1r3.dtd">"#;

    fn doc(op: &str) -> Vec<u8> {
        format!(r#"{HEAD}<wctp-Operation wctpVersion="wctp-dtd-v1r3">{op}</wctp-Operation>"#)
            .into_bytes()
    }

    #[test]
    fn confirmations_are_read() {
        let ok = doc(
            r#"<wctp-Confirmation><wctp-Success successCode="200" successText="Accepted">Message accepted</wctp-Success></wctp-Confirmation>"#,
        );
        assert_eq!(
            confirmation(&parse(&ok).unwrap()),
            Ok(Confirmation::Success(200))
        );
        let bad = doc(
            r#"<wctp-Confirmation><wctp-Failure errorCode=" 403 " errorText="invalid recipientID"/></wctp-Confirmation>"#,
        );
        assert_eq!(
            confirmation(&parse(&bad).unwrap()),
            Ok(Confirmation::Failure(403))
        );
        let no_code =
            doc(r#"<wctp-Confirmation><wctp-Failure errorText="x"/></wctp-Confirmation>"#);
        assert_eq!(
            confirmation(&parse(&no_code).unwrap()),
            Err(XmlError::Missing("wctp-Failure", "errorCode"))
        );
        let other = doc(
            r#"<wctp-SubmitClientResponse><wctp-ClientSuccess successCode="200" trackingNumber="1"/></wctp-SubmitClientResponse>"#,
        );
        assert_eq!(
            confirmation(&parse(&other).unwrap()),
            Err(XmlError::Unexpected("wctp-SubmitClientResponse".into()))
        );
    }

    #[test]
    fn unreadable_answers_are_refused_by_kind_without_content() {
        assert_eq!(parse(b"\xff\xfe<x/>"), Err(XmlError::NotUtf8));
        assert_eq!(
            parse(b"<html><body>502 Bad Gateway</body></html>"),
            Err(XmlError::NotWctp)
        );
        assert_eq!(
            parse(b"<wctp-Operation><a></b></wctp-Operation>"),
            Err(XmlError::Malformed)
        );
        assert_eq!(parse(b"<wctp-Operation>"), Err(XmlError::Malformed));
        assert_eq!(parse(b""), Err(XmlError::Malformed));
        assert_eq!(
            parse(b"<wctp-Operation/><wctp-Operation/>"),
            Err(XmlError::Malformed)
        );
        // A declared entity is never expanded (no billion laughs, no XXE).
        let xxe = br#"<?xml version="1.0"?><!DOCTYPE wctp-Operation [<!ENTITY x SYSTEM "file:///etc/passwd">]><wctp-Operation>&x;</wctp-Operation>"#;
        assert_eq!(parse(xxe), Err(XmlError::Entity));
        let deep = format!("{}{}", "<a>".repeat(100), "</a>".repeat(100));
        assert_eq!(parse(deep.as_bytes()), Err(XmlError::TooLarge));
        // Names outside the WCTP vocabulary are not echoed.
        let odd = doc("<patient-ZZCANARY/>");
        let e = confirmation(&parse(&odd).unwrap()).unwrap_err();
        assert_eq!(e, XmlError::Unexpected("element".into()));
        assert!(!e.to_string().contains("ZZCANARY"));
    }

    #[test]
    fn poll_responses_carry_statuses_and_replies() {
        let body = doc(concat!(
            r#"<wctp-PollResponse minNextPollInterval="30">"#,
            r#"<wctp-Message sequenceNo="1"><wctp-StatusInfo><wctp-ResponseHeader responseToMessageID="m1" responseTimestamp="2026-03-01T08:09:11"><wctp-Originator senderID="5551234"/><wctp-MessageControl messageID="s1"/><wctp-Recipient recipientID="switchboard"/></wctp-ResponseHeader><wctp-Notification type="DELIVERED"/></wctp-StatusInfo></wctp-Message>"#,
            r#"<wctp-Message sequenceNo="2"><wctp-StatusInfo><wctp-ResponseHeader responseToMessageID="m2"><wctp-Originator senderID="5551234"/><wctp-MessageControl messageID="s2"/><wctp-Recipient recipientID="switchboard"/></wctp-ResponseHeader><wctp-Failure errorCode="503" errorText="out of range"/></wctp-StatusInfo></wctp-Message>"#,
            r#"<wctp-Message sequenceNo="3"><wctp-MessageReply MCRMessageReply="true"><wctp-ResponseHeader responseToMessageID="m1"><wctp-Originator senderID="5551234"/><wctp-MessageControl messageID="r1"/><wctp-Recipient recipientID="switchboard"/></wctp-ResponseHeader><wctp-Payload><wctp-Alphanumeric> accept </wctp-Alphanumeric></wctp-Payload></wctp-MessageReply></wctp-Message>"#,
            r#"<wctp-Message sequenceNo="4"><wctp-MessageReply><wctp-ResponseHeader responseToMessageID="m1"><wctp-Originator senderID="5551234"/><wctp-MessageControl messageID="r2"/><wctp-Recipient recipientID="switchboard"/></wctp-ResponseHeader><wctp-Payload><wctp-Alphanumeric>I will not accept this</wctp-Alphanumeric></wctp-Payload></wctp-MessageReply></wctp-Message>"#,
            r#"<wctp-Message sequenceNo="5"><wctp-SubmitRequest><wctp-SubmitHeader><wctp-Originator senderID="x"/><wctp-MessageControl messageID="y"/><wctp-Recipient recipientID="z"/></wctp-SubmitHeader><wctp-Payload><wctp-Alphanumeric>hi</wctp-Alphanumeric></wctp-Payload></wctp-SubmitRequest></wctp-Message>"#,
            "</wctp-PollResponse>"
        ));
        let a = poll_response(&parse(&body).unwrap()).unwrap();
        assert_eq!(a.min_next_poll, Some(Duration::from_secs(30)));
        assert_eq!(a.failure, None);
        let from = Some("5551234".to_string());
        assert_eq!(
            a.messages,
            vec![
                Inbound {
                    sequence_no: "1".into(),
                    event: InboundEvent::Status {
                        message_id: "m1".into(),
                        from: from.clone(),
                        status: DeviceStatus::Delivered
                    }
                },
                Inbound {
                    sequence_no: "2".into(),
                    event: InboundEvent::Status {
                        message_id: "m2".into(),
                        from: from.clone(),
                        status: DeviceStatus::Failed(503)
                    }
                },
                Inbound {
                    sequence_no: "3".into(),
                    event: InboundEvent::Reply {
                        message_id: "m1".into(),
                        from: "5551234".into(),
                        word: Some(ReplyWord::Accept)
                    }
                },
                Inbound {
                    sequence_no: "4".into(),
                    event: InboundEvent::Reply {
                        message_id: "m1".into(),
                        from: "5551234".into(),
                        word: None
                    }
                },
                Inbound {
                    sequence_no: "5".into(),
                    event: InboundEvent::Other
                },
            ]
        );
        let none = doc(r#"<wctp-PollResponse><wctp-NoMessages/></wctp-PollResponse>"#);
        let a = poll_response(&parse(&none).unwrap()).unwrap();
        assert!(a.messages.is_empty() && a.failure.is_none() && a.min_next_poll.is_none());
        let failed = doc(
            r#"<wctp-PollResponse minNextPollInterval="99999"><wctp-Failure errorCode="402"/></wctp-PollResponse>"#,
        );
        let a = poll_response(&parse(&failed).unwrap()).unwrap();
        assert_eq!(a.failure, Some(402));
        assert_eq!(a.min_next_poll, Some(Duration::from_secs(3600)));
        let empty = doc("<wctp-PollResponse></wctp-PollResponse>");
        assert!(poll_response(&parse(&empty).unwrap()).is_err());
        let no_seq = doc(
            r#"<wctp-PollResponse><wctp-Message><wctp-StatusInfo/></wctp-Message></wctp-PollResponse>"#,
        );
        assert_eq!(
            poll_response(&parse(&no_seq).unwrap()),
            Err(XmlError::Missing("wctp-Message", "sequenceNo"))
        );
    }

    #[test]
    fn only_the_exact_choice_words_mean_anything() {
        assert_eq!(reply_word("Accept"), Some(ReplyWord::Accept));
        assert_eq!(reply_word("  ACCEPTED\n"), Some(ReplyWord::Accept));
        assert_eq!(reply_word("decline"), Some(ReplyWord::Decline));
        assert_eq!(reply_word("Declined"), Some(ReplyWord::Decline));
        for other in [
            "",
            "ok",
            "yes",
            "not accept",
            "accept?",
            "1",
            "acceptance",
            "don't decline",
        ] {
            assert_eq!(reply_word(other), None, "{other}");
        }
    }

    #[test]
    fn entities_and_character_references_are_resolved_in_text_and_attributes() {
        let body = doc(
            r#"<wctp-Confirmation><wctp-Success successCode="&#50;00">a &amp; b &#x263A; &lt;</wctp-Success></wctp-Confirmation>"#,
        );
        let root = parse(&body).unwrap();
        assert_eq!(root.children[0].children[0].text, "a & b ☺ <");
        assert_eq!(confirmation(&root), Ok(Confirmation::Success(200)));
    }
}
