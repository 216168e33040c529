//! The one outbound HTTP/1.1 client of the delivery backends (webhook,
//! WCTP, FHIR): plain HTTP on loopback or HTTPS verified against the
//! backend's CA bundle, optionally presenting a client certificate (mutual
//! TLS). One request per connection, a deadline over the whole exchange, and
//! a bounded answer body.
//!
//! Failures are split the way the delivery worker needs them: [`HttpError::
//! Invalid`] can never succeed (bad URL, bad TLS material) and is not
//! retried; [`HttpError::Transport`] and [`HttpError::Timeout`] are. Error
//! texts carry kinds, never request or answer content.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, Method, Request, Uri, header};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use crate::listener::tls;

/// Where TLS trust and identity come from for one backend.
#[derive(Clone, Debug, Default)]
pub struct TlsSettings {
    /// CA bundle (PEM) the server must chain to; required for `https`.
    pub ca: Option<PathBuf>,
    /// Client certificate chain and key (PEM), for mutual TLS.
    pub identity: Option<(PathBuf, PathBuf)>,
}

/// A client for one backend: its TLS configuration built once.
#[derive(Clone)]
pub struct Client {
    tls: Option<Arc<rustls::ClientConfig>>,
    timeout: Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("tls", &self.tls.is_some())
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// An answer.
#[derive(Clone, Debug)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: HeaderMap,
    /// Body (at most the limit asked for; longer bodies are an error).
    pub body: Bytes,
}

/// Why a request got no answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// It can never work as configured (not retried).
    #[error("{0}")]
    Invalid(String),
    /// Connection, TLS or protocol failure (retried).
    #[error("{0}")]
    Transport(String),
    /// The deadline passed (retried).
    #[error("timeout")]
    Timeout,
}

impl Client {
    /// Builds the client; fails when the TLS material cannot be loaded.
    pub fn new(settings: &TlsSettings, timeout: Duration) -> Result<Client, HttpError> {
        let tls = match &settings.ca {
            Some(ca) => Some(
                tls::client_config_with_identity(
                    ca,
                    settings
                        .identity
                        .as_ref()
                        .map(|(c, k)| (c.as_path(), k.as_path())),
                )
                .map_err(|e| HttpError::Invalid(format!("tls: {e}")))?,
            ),
            None => None,
        };
        Ok(Client { tls, timeout })
    }

    /// Sends one request and reads the answer (body up to `max_body` bytes).
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
        max_body: usize,
    ) -> Result<Response, HttpError> {
        match tokio::time::timeout(
            self.timeout,
            self.exchange(method, url, headers, body, max_body),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err(HttpError::Timeout),
        }
    }

    async fn exchange(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
        max_body: usize,
    ) -> Result<Response, HttpError> {
        let uri: Uri = url
            .parse()
            .map_err(|_| HttpError::Invalid("invalid URL".into()))?;
        let host = uri
            .host()
            .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_string())
            .ok_or_else(|| HttpError::Invalid("URL without a host".into()))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => {
                return Err(HttpError::Invalid(
                    "URL scheme must be http or https".into(),
                ));
            }
        };
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let mut req = Request::builder()
            .method(method)
            .uri(uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"))
            .header(
                header::HOST,
                uri.authority().map(|a| a.as_str()).unwrap_or(&host),
            );
        for (k, v) in headers {
            req = req.header(*k, v.as_str());
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|_| HttpError::Invalid("invalid request".into()))?;
        let tcp = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| HttpError::Transport(format!("connect: {}", e.kind())))?;
        let _ = tcp.set_nodelay(true);
        if !https {
            return roundtrip(tcp, req, max_body).await;
        }
        let Some(config) = &self.tls else {
            return Err(HttpError::Invalid("https without a CA".into()));
        };
        let name = ServerName::try_from(host)
            .map_err(|_| HttpError::Invalid("invalid server name".into()))?;
        let stream = tokio_rustls::TlsConnector::from(config.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| HttpError::Transport(format!("tls: {}", e.kind())))?;
        roundtrip(stream, req, max_body).await
    }
}

async fn roundtrip<S>(
    stream: S,
    req: Request<Full<Bytes>>,
    max_body: usize,
) -> Result<Response, HttpError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|_| HttpError::Transport("http handshake".into()))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let resp = sender
        .send_request(req)
        .await
        .map_err(|_| HttpError::Transport("no answer".into()))?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = Limited::new(resp.into_body(), max_body)
        .collect()
        .await
        .map_err(|_| HttpError::Transport("answer body unreadable or too long".into()))?
        .to_bytes();
    Ok(Response {
        status,
        headers,
        body,
    })
}
