//! Bounds: frame size, partial-frame and idle timeouts.

use std::time::Duration;

use crate::support::*;

#[tokio::test]
async fn oversized_frame_is_answered_ae_104_and_connection_closed() {
    let gw = start_gateway_with("max_frame_bytes = 65536").await;
    let mut c = gw.connect().await;
    let mut bytes = vec![SB];
    bytes.extend_from_slice(oru("BIG1").as_bytes());
    c.send_raw(&bytes).await;
    // Keep sending far more than the limit, with no end block.
    let filler = vec![b'x'; 16 * 1024];
    let mut sent = 0;
    let ack = loop {
        if sent < 8 * 1024 * 1024 && c.stream.try_write(&filler).is_ok() {
            sent += filler.len();
        }
        if let Some(a) = c.try_recv(Duration::from_millis(20)).await {
            break a;
        }
        assert!(sent < 64 * 1024 * 1024, "no answer to an oversized frame");
    };
    assert_eq!(ack_code(&ack), "AE");
    assert_eq!(err_code(&ack), "104");
    assert_eq!(field(&ack, "MSA", 2), "BIG1");
    assert!(
        c.closed_within(Duration::from_secs(5)).await,
        "connection closed after the answer"
    );
    let row = &journal_rows(&gw.journal_path(), "BIG1")[0];
    assert_eq!(row.error_code, Some(104));
}

#[tokio::test]
async fn partial_frame_times_out_and_nothing_is_journaled() {
    let gw = start_gateway_with("frame_timeout_secs = 1").await;
    let mut c = gw.connect().await;
    let text = oru("SLOW1");
    c.send_raw(&[SB]).await;
    c.send_raw(&text.as_bytes()[..40]).await;
    let started = std::time::Instant::now();
    assert!(
        c.closed_within(Duration::from_secs(5)).await,
        "partial frame must be closed"
    );
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert!(journal_rows(&gw.journal_path(), "SLOW1").is_empty());
    assert_eq!(
        gw.gateway
            .metrics()
            .frame_timeouts
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[tokio::test]
async fn slowloris_bytes_do_not_extend_the_frame_deadline() {
    let gw = start_gateway_with("frame_timeout_secs = 2").await;
    let mut c = gw.connect().await;
    c.send_raw(&[SB]).await;
    let started = std::time::Instant::now();
    let mut closed = false;
    for b in b"MSH|^~\\&|LAB|HOSP|" {
        if c.stream.try_write(&[*b]).is_err() {
            closed = true;
            break;
        }
        if c.closed_within(Duration::from_millis(300)).await {
            closed = true;
            break;
        }
    }
    assert!(closed || c.closed_within(Duration::from_secs(5)).await);
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "closed near frame_timeout"
    );
}

#[tokio::test]
async fn idle_connection_is_closed() {
    let gw = start_gateway_with("idle_timeout_secs = 1").await;
    let mut c = gw.connect().await;
    assert_eq!(ack_code(&c.roundtrip(&oru("IDLE1")).await), "AA");
    assert!(c.closed_within(Duration::from_secs(5)).await);
}

/// Opens a connection and measures how long until the gateway closes it
/// (EOF or reset); `None` when it stays open for `wait`.
async fn time_to_close(addr: std::net::SocketAddr, wait: Duration) -> Option<Duration> {
    let started = std::time::Instant::now();
    let mut c = Mllp::connect(addr).await;
    c.closed_within(wait).await.then(|| started.elapsed())
}

/// Connects until a frame is answered (a permit frees asynchronously once
/// the gateway sees the old connection's close); panics after 10 s.
pub async fn served_eventually(addr: std::net::SocketAddr, id: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut c = Mllp::connect(addr).await;
        c.send(&oru(id)).await;
        if let Some(ack) = c.try_recv(Duration::from_secs(2)).await {
            return ack;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no connection was served within 10 s after a permit was freed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// RELIABILITY §(f): connections beyond `max_connections` are closed at
/// once (target 100 ms; asserted ≤ 1 s), not parked in the kernel backlog;
/// the connections being served keep working; a freed permit serves a new
/// sender; refusals are counted and exported.
#[tokio::test]
async fn connections_beyond_the_cap_are_closed_at_once() {
    let gw = start_gateway_with("max_connections = 4").await;
    let mut served = Vec::new();
    for i in 0..4 {
        let mut c = gw.connect().await;
        let id = format!("CAP{i}");
        assert_eq!(ack_code(&c.roundtrip(&oru(&id)).await), "AA");
        served.push(c);
    }
    let mut times = Vec::new();
    for _ in 0..20 {
        let t = time_to_close(gw.addr(), Duration::from_secs(1))
            .await
            .expect("a connection over the cap must be closed within 1 s");
        times.push(t);
    }
    times.sort();
    eprintln!(
        "over-cap MLLP close: median {:?}, max {:?} (20 connections)",
        times[times.len() / 2],
        times[times.len() - 1]
    );
    let refused = gw
        .gateway
        .metrics()
        .connections_refused
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(refused, 20, "every refusal is counted");
    let text = gw.gateway.metrics().render(&[]);
    assert!(
        text.contains("\nswitchboard_mllp_connections_refused_total 20\n"),
        "{text}"
    );

    // The connections holding the permits are still served.
    for (i, c) in served.iter_mut().enumerate() {
        let id = format!("CAPAGAIN{i}");
        let ack = c.roundtrip(&oru(&id)).await;
        assert_eq!((ack_code(&ack), field(&ack, "MSA", 2)), ("AA".into(), id));
    }

    // Free one permit: a new connection is served with a correct ACK.
    drop(served.pop());
    let ack = served_eventually(gw.addr(), "CAPNEW").await;
    assert_eq!(ack_code(&ack), "AA", "{ack:?}");
    assert_eq!(field(&ack, "MSA", 2), "CAPNEW");
    assert_eq!(journal_rows(&gw.journal_path(), "CAPNEW").len(), 1);
}

/// The same for HTTP: over the cap, a `503` with `Retry-After` and
/// `Connection: close` comes back at once without the request being read;
/// a freed permit serves requests again.
#[tokio::test]
async fn http_connections_beyond_the_cap_get_503_at_once() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(&dir.path().join("data"), "")
        .replace("[http]\n", "[http]\nmax_connections = 2\n");
    let path = dir.path().join("switchboard.toml");
    std::fs::write(&path, text).unwrap();
    let gw = switchboard::app::Gateway::start(switchboard::config::load(&path).unwrap())
        .await
        .unwrap();
    let addr = gw.http_addr();
    // Two idle connections (no request yet) hold both permits.
    let mut idle = Vec::new();
    for _ in 0..2 {
        idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..5 {
        let started = std::time::Instant::now();
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut raw = Vec::new();
        tokio::time::timeout(Duration::from_secs(1), s.read_to_end(&mut raw))
            .await
            .expect("a connection over the cap is answered and closed within 1 s")
            .expect("closed with a FIN, not a reset");
        eprintln!("over-cap HTTP 503 + close: {:?}", started.elapsed());
        let text = String::from_utf8_lossy(&raw);
        assert!(text.starts_with("HTTP/1.1 503 "), "{text}");
        assert!(text.contains("Retry-After: 1\r\n"), "{text}");
        assert!(text.contains("Connection: close\r\n"), "{text}");
        assert!(text.contains("\"code\":\"transient\""), "{text}");
    }
    assert_eq!(
        gw.metrics()
            .http_connections_refused
            .load(std::sync::atomic::Ordering::Relaxed),
        5
    );
    // One of the held connections is still served.
    let mut s = idle.pop().unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut raw))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&raw).starts_with("HTTP/1.1 200 "));
    // That connection closed, so its permit frees: a new one is served.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = crate::fhir::request(addr, "GET", "/healthz", &[], b"").await;
        if r.status == 200 {
            break;
        }
        assert_eq!(r.status, 503);
        assert!(std::time::Instant::now() < deadline, "never served again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(idle);
}
