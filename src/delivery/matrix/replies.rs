//! What a Matrix event says about an alert we sent: pure parsing of the
//! (decrypted) event JSON into an acknowledgement, no I/O.
//!
//! - an `m.reaction` annotation of our event: `✅ 👍 ✔️ ☑️ accept` (and
//!   `ack`, `ok`, `yes`) accept; `❌ 👎 ✖️ 🚫 decline` (and `no`, `reject`)
//!   decline; any other key says nothing;
//! - a reply (`m.in_reply_to` our event) whose text, reply fallback
//!   stripped, starts with `accept` or `decline` (any case) accepts or
//!   declines;
//! - an `m.read` receipt on our event marks it read.
//!
//! Nothing here keeps or returns message text: only event ids, the sender
//! and the acknowledgement.

use serde_json::Value;

use crate::delivery::Reply;

/// An acknowledgement found in a timeline event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// This event's id (a replay of the same event is recognised by it).
    pub event_id: String,
    /// The event it answers (one of ours, if anything).
    pub target: String,
    /// Who sent it (MXID).
    pub sender: String,
    /// What it says.
    pub reply: Reply,
}

/// What a reaction key means.
pub fn reaction_key(key: &str) -> Option<Reply> {
    // Emoji keys may carry a variation selector (U+FE0F) or skin tone.
    let k: String = key
        .trim()
        .chars()
        .filter(|c| !matches!(*c, '\u{FE0F}' | '\u{FE0E}' | '\u{1F3FB}'..='\u{1F3FF}'))
        .collect::<String>()
        .to_lowercase();
    match k.as_str() {
        "✅" | "👍" | "✔" | "☑" | "🆗" | "accept" | "accepted" | "ack" | "ok" | "yes" => {
            Some(Reply::Accept)
        }
        "❌" | "👎" | "✖" | "🚫" | "❎" | "decline" | "declined" | "no" | "reject" => {
            Some(Reply::Decline)
        }
        _ => None,
    }
}

/// What a reply's text means: its first word (after the reply fallback)
/// is `accept` or `decline`, in any case.
pub fn reply_text(body: &str) -> Option<Reply> {
    let text = strip_reply_fallback(body).trim_start();
    let word: String = text
        .chars()
        .take_while(|c| c.is_alphabetic())
        .collect::<String>()
        .to_lowercase();
    match word.as_str() {
        "accept" | "accepted" => Some(Reply::Accept),
        "decline" | "declined" => Some(Reply::Decline),
        _ => None,
    }
}

/// The body without the quoted fallback (`> ` lines, then a blank line)
/// that clients put in front of a reply.
pub fn strip_reply_fallback(body: &str) -> &str {
    if !body.starts_with("> ") {
        return body;
    }
    let mut rest = body;
    while rest.starts_with('>') {
        match rest.find('\n') {
            Some(i) => rest = &rest[i + 1..],
            None => return "",
        }
    }
    rest.strip_prefix('\n').unwrap_or(rest)
}

/// The acknowledgement a timeline event (as JSON: type, sender, event_id,
/// content) gives, if it relates to another event.
pub fn from_event(ev: &Value) -> Option<Found> {
    let kind = ev.get("type")?.as_str()?;
    let event_id = ev.get("event_id")?.as_str()?.to_string();
    let sender = ev.get("sender")?.as_str()?.to_string();
    let content = ev.get("content")?;
    let rel = content.get("m.relates_to")?;
    let (target, reply) = match kind {
        "m.reaction" => {
            if rel.get("rel_type")?.as_str()? != "m.annotation" {
                return None;
            }
            (
                rel.get("event_id")?.as_str()?,
                reaction_key(rel.get("key")?.as_str()?)?,
            )
        }
        "m.room.message" => {
            // An edit (`m.replace`) is not a new answer.
            if rel.get("rel_type").and_then(Value::as_str) == Some("m.replace") {
                return None;
            }
            let target = rel.get("m.in_reply_to")?.get("event_id")?.as_str()?;
            (target, reply_text(content.get("body")?.as_str()?)?)
        }
        _ => return None,
    };
    Some(Found {
        event_id,
        target: target.to_string(),
        sender,
        reply,
    })
}

/// The `m.read` receipts in an `m.receipt` ephemeral event: (event id,
/// reader) pairs.
pub fn read_receipts(ev: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if ev.get("type").and_then(Value::as_str) != Some("m.receipt") {
        return out;
    }
    let Some(content) = ev.get("content").and_then(Value::as_object) else {
        return out;
    };
    for (event_id, kinds) in content {
        if let Some(readers) = kinds.get("m.read").and_then(Value::as_object) {
            for user in readers.keys() {
                out.push((event_id.clone(), user.clone()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reaction_keys_accept_decline_or_say_nothing() {
        for k in [
            "✅", "👍", "👍🏽", "✔️", "☑️", "accept", "Accept", " ACK ", "ok", "yes",
        ] {
            assert_eq!(reaction_key(k), Some(Reply::Accept), "{k:?}");
        }
        for k in [
            "❌", "👎", "👎🏿", "✖️", "🚫", "decline", "DECLINE", "no", "reject",
        ] {
            assert_eq!(reaction_key(k), Some(Reply::Decline), "{k:?}");
        }
        for k in ["", "❤️", "😂", "acceptable", "👀", "not ok"] {
            assert_eq!(reaction_key(k), None, "{k:?}");
        }
    }

    #[test]
    fn reply_text_reads_the_first_word_after_the_fallback() {
        assert_eq!(reply_text("accept"), Some(Reply::Accept));
        assert_eq!(reply_text("  Accept, on my way"), Some(Reply::Accept));
        assert_eq!(reply_text("DECLINE - in theatre"), Some(Reply::Decline));
        assert_eq!(
            reply_text("> <@switchboard:localhost> STAT critical result ICU 12-A\n\ndecline"),
            Some(Reply::Decline)
        );
        assert_eq!(
            reply_text("> <@sb:hs> line one\n> line two\n\nAccepted"),
            Some(Reply::Accept)
        );
        // The quoted alert text never counts as the answer.
        assert_eq!(reply_text("> accept\n\nwho is this?"), None);
        assert_eq!(reply_text("acceptance pending"), None);
        assert_eq!(reply_text("I decline"), None);
        assert_eq!(reply_text(""), None);
        assert_eq!(strip_reply_fallback("> only a quote"), "");
    }

    #[test]
    fn reactions_and_replies_are_found_with_their_target() {
        let reaction = json!({
            "type": "m.reaction", "event_id": "$r1", "sender": "@alice:localhost",
            "content": {"m.relates_to": {"rel_type": "m.annotation", "event_id": "$alert", "key": "✅"}}
        });
        assert_eq!(
            from_event(&reaction),
            Some(Found {
                event_id: "$r1".into(),
                target: "$alert".into(),
                sender: "@alice:localhost".into(),
                reply: Reply::Accept
            })
        );
        let reply = json!({
            "type": "m.room.message", "event_id": "$m1", "sender": "@alice:localhost",
            "content": {"msgtype": "m.text", "body": "> <@sb:localhost> STAT\n\ndecline",
                "m.relates_to": {"m.in_reply_to": {"event_id": "$alert"}}}
        });
        let f = from_event(&reply).unwrap();
        assert_eq!((f.target.as_str(), f.reply), ("$alert", Reply::Decline));
        // Not a reply, an edit, a thread-only message, another reaction key.
        let plain = json!({"type": "m.room.message", "event_id": "$m2", "sender": "@a:l",
            "content": {"msgtype": "m.text", "body": "accept"}});
        assert_eq!(from_event(&plain), None);
        let edit = json!({"type": "m.room.message", "event_id": "$m3", "sender": "@a:l",
            "content": {"body": "accept", "m.relates_to": {"rel_type": "m.replace", "event_id": "$alert",
                "m.in_reply_to": {"event_id": "$alert"}}}});
        assert_eq!(from_event(&edit), None);
        let heart = json!({"type": "m.reaction", "event_id": "$r2", "sender": "@a:l",
            "content": {"m.relates_to": {"rel_type": "m.annotation", "event_id": "$alert", "key": "❤️"}}});
        assert_eq!(from_event(&heart), None);
        let undecrypted = json!({"type": "m.room.encrypted", "event_id": "$e", "sender": "@a:l",
            "content": {"algorithm": "m.megolm.v1.aes-sha2", "m.relates_to": {"m.in_reply_to": {"event_id": "$alert"}}}});
        assert_eq!(from_event(&undecrypted), None);
    }

    #[test]
    fn read_receipts_list_event_and_reader() {
        let ev = json!({"type": "m.receipt", "content": {
            "$alert": {"m.read": {"@alice:localhost": {"ts": 1}}, "m.read.private": {"@bob:localhost": {"ts": 2}}},
            "$other": {"m.read": {"@carol:localhost": {"ts": 3}}}
        }});
        let mut r = read_receipts(&ev);
        r.sort();
        assert_eq!(
            r,
            vec![
                ("$alert".to_string(), "@alice:localhost".to_string()),
                ("$other".to_string(), "@carol:localhost".to_string())
            ]
        );
        assert!(read_receipts(&json!({"type": "m.typing", "content": {}})).is_empty());
    }
}
