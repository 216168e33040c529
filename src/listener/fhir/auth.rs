//! Who is calling the FHIR endpoints: a bearer token (only its SHA-256 is
//! configured) or a client certificate identity, then the sender's network
//! and certificate constraints. Unauthenticated: 401; authenticated but not
//! allowed from here: 403. Nothing is journaled for either.

use axum::http::HeaderMap;
use sha2::{Digest, Sha256};

use crate::config::SenderConfig;
use crate::listener::intake::PeerInfo;
use crate::parse::fhir::FhirError;

/// Finds the sender a request speaks for.
pub fn authenticate<'a>(
    senders: &'a [SenderConfig],
    headers: &HeaderMap,
    peer: &PeerInfo,
) -> Result<&'a SenderConfig, FhirError> {
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        })
        .filter(|t| !t.is_empty());
    let sender = match token {
        Some(t) => {
            let digest: [u8; 32] = Sha256::digest(t.as_bytes()).into();
            senders
                .iter()
                .find(|s| s.tokens_sha256.iter().any(|h| constant_time_eq(h, &digest)))
                .ok_or_else(FhirError::login)?
        }
        None => senders
            .iter()
            .filter(|s| !s.certificates.is_empty())
            .find(|s| {
                s.certificates
                    .iter()
                    .any(|c| peer.identities.iter().any(|i| i.eq_ignore_ascii_case(c)))
            })
            .ok_or_else(FhirError::login)?,
    };
    let network_ok =
        sender.networks.is_empty() || sender.networks.iter().any(|n| n.contains(&peer.addr.ip()));
    let cert_ok = sender.certificates.is_empty()
        || sender
            .certificates
            .iter()
            .any(|c| peer.identities.iter().any(|i| i.eq_ignore_ascii_case(c)));
    if network_ok && cert_ok {
        Ok(sender)
    } else {
        Err(FhirError::forbidden())
    }
}

/// Compares two digests without an early exit.
pub(crate) fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}
