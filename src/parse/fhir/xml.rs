//! FHIR R4 XML in: converted to FHIR JSON bytes, which then go through
//! exactly the checks and mapping JSON does ([`super::parse_resource`],
//! [`super::parse_bundle`], [`super::parse_notification`]).
//!
//! Steps (the first failure is the answer, always 400 `structure`):
//! 1. UTF-8 (a leading BOM is tolerated; FHIR XML is UTF-8 only);
//! 2. a markup scan, without recursion: no DTD (`<!DOCTYPE`), and elements
//!    nested at most [`MAX_XML_DEPTH`] levels (fhirbolt's XML reader
//!    recurses per level, so a deep document must never reach it);
//! 3. fhirbolt's XML reader into its generic element model, **strict**: the
//!    FHIR namespace, known element names at every path (including
//!    contained and Bundle entry resources), primitive values of their type
//!    (a decimal that is not one, ...), no CDATA, no processing
//!    instructions, no text outside the narrative `div`, UTF-8 only;
//! 4. fhirbolt's JSON writer: the same resource as FHIR JSON.
//!
//! Required elements and required-binding codes are not checked here (the
//! element model does not know cardinality), so the JSON stage reports them
//! exactly as for JSON input (422 `required` / `code-invalid` at the same
//! expression). One difference in order: for JSON a `resourceType` that
//! does not match the URL is reported (400 `invalid`) before unknown
//! elements; for XML an unknown element of the root is found first (400
//! `structure`).
//!
//! fhirbolt's and quick-xml's messages quote the input, so they are never
//! surfaced: every failure here has a fixed diagnostics text.

use std::panic::AssertUnwindSafe;

use fhirbolt::FhirReleases;
use fhirbolt::element::Element;
use fhirbolt::serde::{DeserializationConfig, DeserializationMode};

use super::error::FhirError;
use super::resource::MAX_DEPTH;

/// Deepest element nesting accepted in XML. JSON nesting of the same
/// resource is never smaller than half of it (a `<resource>` wrapper and
/// the resource element are one JSON level), so this lets through exactly
/// what [`MAX_DEPTH`] would let through, and no more than fhirbolt's reader
/// handles on a worker thread's stack.
pub const MAX_XML_DEPTH: usize = MAX_DEPTH;

/// The FHIR releases an XML body may be read as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XmlRelease {
    /// R4 only (resources, Bundles, `$process-message`).
    R4,
    /// R4, else R4B, else R5: subscription notifications (R4B/R5
    /// `SubscriptionStatus` is not an R4 type). The JSON stage reads the
    /// result as it reads JSON notifications.
    Notification,
}

/// FHIR XML bytes to FHIR JSON bytes; see the module docs.
pub fn xml_to_json(body: &[u8], release: XmlRelease) -> Result<Vec<u8>, FhirError> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    if std::str::from_utf8(body).is_err() {
        return Err(FhirError::structure("body is not valid UTF-8"));
    }
    scan(body)?;
    let r4 = convert::<{ FhirReleases::R4 }>(body);
    match (r4, release) {
        (Ok(json), _) => Ok(json),
        (Err(e), XmlRelease::R4) => Err(e),
        (Err(e), XmlRelease::Notification) => convert::<{ FhirReleases::R4B }>(body)
            .or_else(|_| convert::<{ FhirReleases::R5 }>(body))
            .map_err(|_| e),
    }
}

/// fhirbolt XML (strict) -> element -> JSON, for one release.
fn convert<const R: fhirbolt::FhirRelease>(body: &[u8]) -> Result<Vec<u8>, FhirError> {
    let config = DeserializationConfig {
        mode: DeserializationMode::Strict,
    };
    // fhirbolt is not known to panic on XML; a panic would still only
    // refuse this body.
    let parsed = std::panic::catch_unwind(AssertUnwindSafe(|| {
        fhirbolt::xml::from_slice::<Element<R>>(body, Some(config))
    }));
    let element = match parsed {
        Ok(Ok(e)) => e,
        Ok(Err(_)) | Err(_) => {
            return Err(FhirError::structure(
                "body is not well-formed FHIR XML (syntax, namespace, unknown element or value of the wrong type)",
            ));
        }
    };
    let written =
        std::panic::catch_unwind(AssertUnwindSafe(|| fhirbolt::json::to_vec(&element, None)));
    match written {
        Ok(Ok(json)) => Ok(json),
        Ok(Err(_)) | Err(_) => Err(FhirError::structure("resource structure cannot be read")),
    }
}

/// Refuses a DTD, nesting deeper than [`MAX_XML_DEPTH`], end tags that do
/// not close the open element, and anything but exactly one root element
/// (fhirbolt's reader accepts a truncated document). Names, namespaces and
/// values are left to fhirbolt. Iterative; memory bounded by the depth.
fn scan(body: &[u8]) -> Result<(), FhirError> {
    let bad = || FhirError::structure("body is not well-formed FHIR XML");
    let mut open: Vec<&[u8]> = Vec::new();
    let mut roots = 0usize;
    let mut i = 0;
    while let Some(off) = body[i..].iter().position(|&b| b == b'<') {
        let at = i + off;
        let rest = &body[at..];
        if open.is_empty() && !body[i..at].iter().all(u8::is_ascii_whitespace) {
            return Err(bad());
        }
        if rest.starts_with(b"<!--") {
            i = at + 4 + find(&rest[4..], b"-->").ok_or_else(bad)? + 3;
        } else if rest.starts_with(b"<![CDATA[") {
            i = at + 9 + find(&rest[9..], b"]]>").ok_or_else(bad)? + 3;
        } else if rest.starts_with(b"<!") {
            return Err(FhirError::structure(
                "a DTD or entity declaration is not allowed in FHIR XML",
            ));
        } else if rest.starts_with(b"<?") {
            i = at + 2 + find(&rest[2..], b"?>").ok_or_else(bad)? + 2;
        } else if let Some(tail) = rest.strip_prefix(b"</") {
            let end = tail.iter().position(|&b| b == b'>').ok_or_else(bad)?;
            let name = tag_name(tail);
            if open.pop() != Some(name)
                || !tail[name.len()..end].iter().all(u8::is_ascii_whitespace)
            {
                return Err(bad());
            }
            i = at + 2 + end + 1;
        } else {
            // A start or empty-element tag: `>` inside quoted attribute
            // values does not end it.
            let mut quote = None;
            let mut end = None;
            for (k, &b) in rest.iter().enumerate().skip(1) {
                match (quote, b) {
                    (Some(q), _) if b == q => quote = None,
                    (Some(_), _) => {}
                    (None, b'"' | b'\'') => quote = Some(b),
                    (None, b'>') => {
                        end = Some(k);
                        break;
                    }
                    _ => {}
                }
            }
            let end = end.ok_or_else(bad)?;
            let name = tag_name(&rest[1..]);
            if name.is_empty() {
                return Err(bad());
            }
            if open.is_empty() {
                roots += 1;
                if roots > 1 {
                    return Err(bad());
                }
            }
            if rest[end - 1] != b'/' {
                open.push(name);
                if open.len() > MAX_XML_DEPTH {
                    return Err(FhirError::structure("XML is nested too deeply"));
                }
            }
            i = at + end + 1;
        }
    }
    if !open.is_empty() || roots != 1 || !body[i..].iter().all(u8::is_ascii_whitespace) {
        return Err(bad());
    }
    Ok(())
}

/// The (qualified) name at the start of a tag, after `<` or `</`.
fn tag_name(tag: &[u8]) -> &[u8] {
    let n = tag
        .iter()
        .position(|&b| b.is_ascii_whitespace() || b == b'/' || b == b'>')
        .unwrap_or(tag.len());
    &tag[..n]
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use fhirbolt::model::r4::Resource as R4Resource;

    use super::*;
    use crate::parse::fhir::{IssueType, parse_bundle, parse_notification, parse_resource};

    const OBS: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<Observation xmlns="http://hl7.org/fhir">
  <!-- a comment -->
  <text><status value="generated"/><div xmlns="http://www.w3.org/1999/xhtml"><p>K <b>6.9</b> &gt; 6</p></div></text>
  <identifier><system value="urn:lab"/><value value="X1"/></identifier>
  <status value="final"/>
  <code><coding><system value="http://loinc.org"/><code value="2823-3"/><display value="Potassium"/></coding></code>
  <subject><identifier><system value="urn:mrn"/><value value="ZZCANARY-1"/></identifier></subject>
  <valueQuantity><value value="6.90"/><unit value="mmol/L"/></valueQuantity>
  <interpretation><coding><system value="http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"/><code value="HH"/></coding></interpretation>
</Observation>"#;

    fn strip_narrative(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(o) => {
                if o.get("text").is_some_and(|t| t.get("div").is_some()) {
                    o.remove("text");
                }
                o.values_mut().for_each(strip_narrative);
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(strip_narrative),
            _ => {}
        }
    }

    fn to_xml(json: &[u8]) -> Vec<u8> {
        let r: R4Resource = fhirbolt::json::from_slice(json, None).unwrap();
        fhirbolt::xml::to_vec(&r, None).unwrap()
    }

    #[test]
    fn hand_written_observation_becomes_the_same_json() {
        let json = xml_to_json(OBS.as_bytes(), XmlRelease::R4).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["resourceType"], "Observation");
        assert_eq!(v["identifier"][0]["value"], "X1");
        assert_eq!(v["code"]["coding"][0]["code"], "2823-3");
        assert_eq!(v["valueQuantity"]["value"].to_string(), "6.90");
        assert!(v["text"]["div"].as_str().unwrap().contains("<b>6.9</b>"));
        let r = parse_resource(&json, Some("Observation")).unwrap();
        assert_eq!(r.identifiers[0].value, "X1");
    }

    #[test]
    fn corpus_resources_and_bundles_read_as_xml_equal_their_json() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/fhir-r4");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            eprintln!("corpus not found at {}: skipping", dir.display());
            return;
        };
        let mut n = 0;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            // fhirbolt's XML reader trims whitespace inside the narrative
            // (XHTML) and nothing else: compare without narratives.
            let Ok(mut v) =
                serde_json::from_slice::<serde_json::Value>(&std::fs::read(e.path()).unwrap())
            else {
                continue;
            };
            strip_narrative(&mut v);
            let json = serde_json::to_vec(&v).unwrap();
            let Ok(r) = fhirbolt::json::from_slice::<R4Resource>(&json, None) else {
                continue;
            };
            let xml = fhirbolt::xml::to_vec(&r, None).unwrap();
            let back =
                xml_to_json(&xml, XmlRelease::R4).unwrap_or_else(|e| panic!("{name}: {e:?}"));
            if name.starts_with("Bundle-") {
                assert_eq!(parse_bundle(&back), parse_bundle(&json), "{name}");
            } else {
                let t = name.split('-').next().unwrap();
                assert_eq!(
                    parse_resource(&back, Some(t)),
                    parse_resource(&json, Some(t)),
                    "{name}"
                );
            }
            n += 1;
        }
        assert!(n > 20, "{n} corpus files compared");
    }

    #[test]
    fn missing_required_element_is_reported_as_for_json() {
        let xml = OBS.replace(r#"<status value="final"/>"#, "");
        let json = xml_to_json(xml.as_bytes(), XmlRelease::R4).unwrap();
        let e = parse_resource(&json, Some("Observation")).unwrap_err();
        assert_eq!((e.status, e.issue), (422, IssueType::Required));
        assert_eq!(e.expression.as_deref(), Some("Observation.status"));
    }

    #[test]
    fn malformed_xml_is_400_structure() {
        let cases: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"not xml".to_vec(),
            b"<Observation xmlns=\"http://hl7.org/fhir\"><status value=\"final\"/>".to_vec(),
            b"<Observation xmlns=\"http://hl7.org/fhir\"><status value=\"final\"></Observation>"
                .to_vec(),
            b"<Observation><status value=\"final\"/></Observation>".to_vec(),
            b"<Observation xmlns=\"http://hl7.org/fhir\"><bogus value=\"1\"/></Observation>"
                .to_vec(),
            b"<Observation xmlns=\"http://hl7.org/fhir\"><valueQuantity><value value=\"abc\"/></valueQuantity></Observation>".to_vec(),
            b"<Observation xmlns=\"http://hl7.org/fhir\">text</Observation>".to_vec(),
            b"<Observation xmlns=\"http://hl7.org/fhir\"><![CDATA[x]]></Observation>".to_vec(),
            b"<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><Observation xmlns=\"http://hl7.org/fhir\"/>".to_vec(),
            b"<!DOCTYPE x [<!ENTITY a \"aaaa\">]><Observation xmlns=\"http://hl7.org/fhir\"/>"
                .to_vec(),
            b"<Observation xmlns=\"http://hl7.org/fhir\"><status value=\"\xff\"/></Observation>"
                .to_vec(),
            b"<Observation xmlns=\"http://hl7.org/fhir\"><status value=\"&xxe;\"/></Observation>"
                .to_vec(),
            b"<Observation xmlns=\"http://hl7.org/fhir\"/><Observation xmlns=\"http://hl7.org/fhir\"/>"
                .to_vec(),
            b"<Observation xmlns=\"http://hl7.org/fhir\"/>trailing".to_vec(),
            b"<Observation xmlns=\"http://hl7.org/fhir\"><status value=\"final\"/></Observationx>"
                .to_vec(),
            b"<Observation xmlns=\"http://hl7.org/fhir\"><status value=\"final\"/></Observation"
                .to_vec(),
        ];
        for c in cases {
            let e = xml_to_json(&c, XmlRelease::R4).unwrap_err();
            assert_eq!(
                (e.status, e.issue),
                (400, IssueType::Structure),
                "{}",
                String::from_utf8_lossy(&c)
            );
        }
    }

    #[test]
    fn deep_nesting_is_refused_before_fhirbolt_and_moderate_nesting_is_read() {
        let deep = format!(
            "<Observation xmlns=\"http://hl7.org/fhir\">{}{}</Observation>",
            "<extension url=\"u\">".repeat(100_000),
            "</extension>".repeat(100_000)
        );
        let e = xml_to_json(deep.as_bytes(), XmlRelease::R4).unwrap_err();
        assert_eq!((e.status, e.issue), (400, IssueType::Structure));
        // 60 levels: read by fhirbolt (the JSON stage then decides).
        let n = MAX_XML_DEPTH - 4;
        let ok = format!(
            "<Observation xmlns=\"http://hl7.org/fhir\"><status value=\"final\"/><code><text value=\"t\"/></code>{}<valueString value=\"v\"/>{}</Observation>",
            "<extension url=\"u\">".repeat(n),
            "</extension>".repeat(n)
        );
        // Must not overflow the stack of a worker-sized thread.
        let handle = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || xml_to_json(ok.as_bytes(), XmlRelease::R4).map(|_| ()))
            .unwrap();
        handle.join().expect("no stack overflow").unwrap();
    }

    #[test]
    fn quoted_angle_brackets_and_comments_do_not_confuse_the_depth_scan() {
        let xml = OBS.replace(
            r#"<display value="Potassium"/>"#,
            r#"<display value="K &lt;&gt; a>b/>"/><!-- <a><b><c> -->"#,
        );
        let json = xml_to_json(xml.as_bytes(), XmlRelease::R4).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["code"]["coding"][0]["display"], "K <> a>b/>");
    }

    #[test]
    fn transaction_bundle_and_r4_notification_round_trip() {
        let obs = String::from_utf8(xml_to_json(OBS.as_bytes(), XmlRelease::R4).unwrap()).unwrap();
        let bundle = format!(
            r#"{{"resourceType":"Bundle","type":"transaction","entry":[{{"fullUrl":"urn:uuid:1","resource":{obs},"request":{{"method":"POST","url":"Observation"}}}}]}}"#
        );
        let xml = to_xml(bundle.as_bytes());
        let back = xml_to_json(&xml, XmlRelease::R4).unwrap();
        assert_eq!(parse_bundle(&back), parse_bundle(bundle.as_bytes()));

        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/fhir-r4b");
        if let Ok(entries) = std::fs::read_dir(&dir) {
            let mut n = 0;
            for e in entries.flatten() {
                let json = std::fs::read(e.path()).unwrap();
                let Ok(want) = parse_notification(&json) else {
                    continue;
                };
                // R4B content: written with the R4B element model.
                let el: Element<{ FhirReleases::R4B }> =
                    fhirbolt::json::from_slice(&json, None).unwrap();
                let xml = fhirbolt::xml::to_vec(&el, None).unwrap();
                let back = xml_to_json(&xml, XmlRelease::Notification).unwrap();
                assert_eq!(parse_notification(&back).unwrap(), want);
                n += 1;
            }
            assert!(n > 0, "no R4B notification in {}", dir.display());
        }
    }
}
