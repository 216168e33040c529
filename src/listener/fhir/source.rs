//! Reading from a sender's own FHIR server: the focus resource of an
//! id-only subscription notification, and missed events through the
//! subscription's `$events` operation. HTTP/1.1 (hyper) over TCP or TLS
//! (rustls, the configured CA); a bearer token from the environment;
//! bounded in time and size. Errors name the status or kind, never content.

use std::time::Duration;

use axum::http::{Request, Uri, header};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use crate::config::FhirSource;
use crate::listener::tls;

/// Largest response read from a source server.
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;
/// Limit for one fetch, connect to last byte.
const FETCH_TIMEOUT: Duration = Duration::from_secs(15);

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The URL or reference cannot be fetched from this source.
    #[error("not fetchable from the source: {0}")]
    Url(&'static str),
    /// Connecting, TLS or HTTP failed.
    #[error("source server unreachable: {0}")]
    Transport(String),
    /// The server answered with a non-success status.
    #[error("source server answered {0}")]
    Status(u16),
    /// No answer in time.
    #[error("source server timed out")]
    Timeout,
}

/// Fetches `path` (relative to the base: `Observation/123`,
/// `Subscription/abc/$events?...`) from `source`.
pub async fn get(source: &FhirSource, path: &str) -> Result<Bytes, SourceError> {
    tokio::time::timeout(FETCH_TIMEOUT, fetch(source, path))
        .await
        .map_err(|_| SourceError::Timeout)?
}

/// The path of `reference` relative to the source base, when it names a
/// resource on that server (`Type/id`, or an absolute URL under the base).
pub fn relative(source: &FhirSource, reference: &str) -> Option<String> {
    let rest = match reference.strip_prefix(source.base.as_str()) {
        Some(r) => r.trim_start_matches('/'),
        None if !reference.contains("://") && !reference.starts_with("urn:") => reference,
        None => return None,
    };
    let mut parts = rest.split('/');
    let (t, id) = (parts.next()?, parts.next()?);
    let ok = t.chars().next().is_some_and(|c| c.is_ascii_uppercase())
        && t.chars().all(|c| c.is_ascii_alphanumeric())
        && !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    ok.then(|| format!("{t}/{id}"))
}

async fn fetch(source: &FhirSource, path: &str) -> Result<Bytes, SourceError> {
    let url = format!("{}/{}", source.base, path.trim_start_matches('/'));
    let uri: Uri = url.parse().map_err(|_| SourceError::Url("invalid URL"))?;
    let host = uri.host().ok_or(SourceError::Url("no host"))?.to_string();
    let https = uri.scheme_str() == Some("https");
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| SourceError::Transport(e.kind().to_string()))?;
    let _ = tcp.set_nodelay(true);
    let mut req = Request::get(uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"))
        .header(
            header::HOST,
            uri.authority().map(|a| a.as_str()).unwrap_or(&host),
        )
        .header(header::ACCEPT, "application/fhir+json");
    if let Some(var) = &source.token_env
        && let Ok(token) = std::env::var(var)
    {
        req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let req = req
        .body(Empty::<Bytes>::new())
        .map_err(|_| SourceError::Url("invalid request"))?;
    if https {
        let ca = source
            .ca
            .as_ref()
            .ok_or(SourceError::Url("https without a CA"))?;
        let config = tls::client_config(ca).map_err(|e| SourceError::Transport(e.to_string()))?;
        let name = ServerName::try_from(host.clone())
            .map_err(|_| SourceError::Url("invalid server name"))?;
        let stream = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| SourceError::Transport(e.to_string()))?;
        send(stream, req).await
    } else {
        send(tcp, req).await
    }
}

async fn send<S>(stream: S, req: Request<Empty<Bytes>>) -> Result<Bytes, SourceError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| SourceError::Transport(e.to_string()))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| SourceError::Transport(e.to_string()))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(SourceError::Status(status.as_u16()));
    }
    let body = Limited::new(resp.into_body(), MAX_RESPONSE_BYTES)
        .collect()
        .await
        .map_err(|_| SourceError::Transport("response too large or cut".into()))?;
    Ok(body.to_bytes())
}
