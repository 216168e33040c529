//! The web console, served by the gateway itself under `/console/`.
//!
//! Guarantees:
//! - The assets (`index.html`, `console.js`, `console.css`) are compiled
//!   into the binary: no separate server, no build step, no CDN, no
//!   external font; the page talks only to this gateway's operator API.
//! - Every console response carries [`SECURITY_HEADERS`]: a Content
//!   Security Policy that allows scripts, styles and connections from this
//!   origin only (no inline script or style, no framing, no form posts),
//!   `nosniff`, no referrer, `X-Frame-Options: DENY` and `no-store`.
//! - The page signs in with an operator API token (`[[operators]]`), kept
//!   in the tab's `sessionStorage` only and sent as `Authorization: Bearer`,
//!   never in a URL. What it may see and do is what the token may do in the
//!   API: the console has no privileges of its own.
//!
//! The alert board reads `GET /api/v1/alerts/stream` (server-sent events,
//! parsed from `fetch()`, since `EventSource` cannot send a header) and
//! acknowledges through `POST /api/v1/alerts/{id}/ack`. Dynamic text is
//! inserted as text, never as markup.

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

const INDEX_HTML: &str = include_str!("assets/index.html");
const CONSOLE_JS: &str = include_str!("assets/console.js");
const CONSOLE_CSS: &str = include_str!("assets/console.css");

/// The Content Security Policy of every console response.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
img-src 'self'; connect-src 'self'; font-src 'self'; object-src 'none'; \
base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Headers on every console response.
pub const SECURITY_HEADERS: [(&str, &str); 5] = [
    ("content-security-policy", CSP),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("x-frame-options", "DENY"),
    ("cache-control", "no-store"),
];

/// The console's routes (stateless: the page calls the API).
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/console", get(to_index))
        .route("/console/", get(index))
        .route("/console/console.js", get(script))
        .route("/console/console.css", get(style))
        .route("/console/{*rest}", get(not_found))
}

fn secured(status: StatusCode, content_type: &'static str, body: &'static str) -> Response {
    let mut r = (status, [(header::CONTENT_TYPE, content_type)], body).into_response();
    for (k, v) in SECURITY_HEADERS {
        r.headers_mut()
            .insert(k, header::HeaderValue::from_static(v));
    }
    r
}

async fn index() -> Response {
    secured(StatusCode::OK, "text/html; charset=utf-8", INDEX_HTML)
}

async fn script() -> Response {
    secured(StatusCode::OK, "text/javascript; charset=utf-8", CONSOLE_JS)
}

async fn style() -> Response {
    secured(StatusCode::OK, "text/css; charset=utf-8", CONSOLE_CSS)
}

async fn to_index() -> Response {
    let mut r = secured(
        StatusCode::PERMANENT_REDIRECT,
        "text/plain; charset=utf-8",
        "",
    );
    r.headers_mut().insert(
        header::LOCATION,
        header::HeaderValue::from_static("/console/"),
    );
    r
}

async fn not_found() -> Response {
    secured(
        StatusCode::NOT_FOUND,
        "text/plain; charset=utf-8",
        "not found\n",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn get(path: &str) -> (StatusCode, axum::http::HeaderMap, String) {
        let r = router::<()>()
            .oneshot(
                axum::http::Request::get(path)
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        let (parts, body) = r.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        (
            parts.status,
            parts.headers,
            String::from_utf8(bytes.to_vec()).unwrap(),
        )
    }

    #[tokio::test]
    async fn every_console_response_carries_the_security_headers() {
        for (path, status, kind) in [
            ("/console/", 200, "text/html; charset=utf-8"),
            ("/console/console.js", 200, "text/javascript; charset=utf-8"),
            ("/console/console.css", 200, "text/css; charset=utf-8"),
            ("/console/nothing-here", 404, "text/plain; charset=utf-8"),
            ("/console", 308, "text/plain; charset=utf-8"),
        ] {
            let (s, h, _) = get(path).await;
            assert_eq!(s.as_u16(), status, "{path}");
            assert_eq!(h["content-type"], kind, "{path}");
            for (k, v) in SECURITY_HEADERS {
                assert_eq!(h[k], v, "{path}: {k}");
            }
        }
        let (_, h, _) = get("/console").await;
        assert_eq!(h["location"], "/console/");
    }

    #[tokio::test]
    async fn the_page_has_no_inline_script_style_or_outside_resource() {
        let (_, h, html) = get("/console/").await;
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.starts_with("default-src 'self';"), "{csp}");
        assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"));
        // Every <script> has a src of this origin and no body.
        let scripts: Vec<&str> = html.split("<script").skip(1).collect();
        assert_eq!(scripts.len(), 1, "{html}");
        assert!(
            scripts[0].starts_with(" src=\"console.js\" defer></script>"),
            "{}",
            scripts[0]
        );
        for bad in [" style=", "<style", "javascript:", "http:", "https:", "//"] {
            assert!(!html.contains(bad), "index.html contains {bad:?}");
        }
        // No event-handler attribute (` onclick=`, ...).
        for (i, _) in html.match_indices(" on") {
            let name: String = html[i + 3..]
                .chars()
                .take_while(char::is_ascii_alphabetic)
                .collect();
            assert!(
                !html[i + 3 + name.len()..].starts_with('='),
                "index.html has an inline handler on{name}="
            );
        }
        let (_, _, js) = get("/console/console.js").await;
        for bad in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "localStorage",
            "http:",
            "https:",
        ] {
            assert!(!js.contains(bad), "console.js contains {bad:?}");
        }
        let (_, _, css) = get("/console/console.css").await;
        for bad in ["@import", "url(", "http:", "https:"] {
            assert!(!css.contains(bad), "console.css contains {bad:?}");
        }
    }
}
