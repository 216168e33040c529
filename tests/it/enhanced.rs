//! Enhanced acknowledgement mode: accept acknowledgements on the connection,
//! application acknowledgements through the outbox to a return destination.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::*;

fn enhanced(id: &str, accept: &str, app: &str) -> String {
    oru(id).replace(
        &format!("|{id}|P|2.5.1\r"),
        &format!("|{id}|P|2.5.1|||{accept}|{app}\r"),
    )
}

/// A fake sender-side MLLP listener that records what it receives and
/// answers `answer` (with MSA-2 = the received MSH-10).
async fn return_listener(
    answer: &'static str,
) -> (std::net::SocketAddr, tokio::sync::mpsc::Receiver<String>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let n = match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(end) = buf.iter().position(|b| *b == EB) {
                        let msg = String::from_utf8_lossy(&buf[1..end]).to_string();
                        buf.drain(..(end + 2).min(buf.len()));
                        let id = field(&msg, "MSH", 10);
                        let reply = format!(
                            "MSH|^~\\&|LAB|HOSP|SWITCHBOARD|HOSP|20261123||ACK|R{id}|P|2.5.1\rMSA|{answer}|{id}\r"
                        );
                        let _ = s.write_all(&frame(reply.as_bytes())).await;
                        let _ = tx.send(msg).await;
                    }
                }
            });
        }
    });
    (addr, rx)
}

async fn gateway_with_return(
    addr: std::net::SocketAddr,
) -> (switchboard::app::Gateway, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[storage]\ndata_dir = \"{}\"\n[mllp]\nlisten = \"127.0.0.1:0\"\n[http]\nlisten = \"127.0.0.1:0\"\n[outbox]\nretry_initial_secs = 1\nretry_max_secs = 2\n[[senders]]\nname = \"lab\"\nmsh3 = [\"LAB\"]\nmsh4 = [\"*\"]\nnetworks = [\"127.0.0.1\"]\nprocessing_ids = [\"P\"]\nreturn_address = \"{addr}\"\n",
        dir.path().join("data").display()
    );
    let path = dir.path().join("s.toml");
    std::fs::write(&path, text).unwrap();
    let gw = switchboard::app::Gateway::start(switchboard::config::load(&path).unwrap())
        .await
        .unwrap();
    (gw, dir)
}

#[tokio::test]
async fn al_ne_gets_ca_after_commit_and_no_application_ack() {
    let (ret, mut rx) = return_listener("CA").await;
    let (gw, _dir) = gateway_with_return(ret).await;
    let mut c = Mllp::connect(gw.mllp_addr()).await;
    let ack = c.roundtrip(&enhanced("E1", "AL", "NE")).await;
    assert_eq!(ack_code(&ack), "CA");
    assert_eq!(field(&ack, "MSA", 2), "E1");
    assert!(
        tokio::time::timeout(Duration::from_millis(500), rx.recv())
            .await
            .is_err(),
        "no application ACK"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn ne_al_gets_no_accept_ack_and_an_application_ack_later() {
    let (ret, mut rx) = return_listener("CA").await;
    let (gw, _dir) = gateway_with_return(ret).await;
    let mut c = Mllp::connect(gw.mllp_addr()).await;
    c.send(&enhanced("E2", "NE", "AL")).await;
    let app = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ack_code(&app), "AA");
    assert_eq!(field(&app, "MSA", 2), "E2");
    assert_eq!(field(&app, "MSH", 9), "ACK^R01^ACK");
    assert_eq!(
        field(&app, "MSH", 15),
        "AL",
        "we ask the receiver to confirm"
    );
    assert!(
        c.try_recv(Duration::from_millis(300)).await.is_none(),
        "no accept ACK on the connection"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn content_error_in_enhanced_mode_is_ca_then_application_ae() {
    let (ret, mut rx) = return_listener("CA").await;
    let (gw, _dir) = gateway_with_return(ret).await;
    let mut c = Mllp::connect(gw.mllp_addr()).await;
    let m = enhanced("E3", "AL", "ER").replace("||6.9|", "||FOO|");
    let ack = c.roundtrip(&m).await;
    assert_eq!(ack_code(&ack), "CA");
    assert!(!ack.contains("ERR"), "accept ACK reports the commit only");
    let app = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ack_code(&app), "AE");
    assert_eq!(err_code(&app), "102");
    gw.shutdown().await;
}

#[tokio::test]
async fn header_reject_in_enhanced_mode_is_cr() {
    let (ret, _rx) = return_listener("CA").await;
    let (gw, _dir) = gateway_with_return(ret).await;
    let mut c = Mllp::connect(gw.mllp_addr()).await;
    let m = enhanced("E4", "AL", "AL").replace("|E4|P|", "|E4|T|");
    let ack = c.roundtrip(&m).await;
    assert_eq!(ack_code(&ack), "CR");
    assert_eq!(err_code(&ack), "202");
    gw.shutdown().await;
}

#[tokio::test]
async fn application_ack_is_retried_until_the_receiver_is_up() {
    // Reserve a port, start nothing there yet.
    let probe = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = probe.local_addr().unwrap();
    drop(probe);
    let (gw, _dir) = gateway_with_return(addr).await;
    let mut c = Mllp::connect(gw.mllp_addr()).await;
    c.send(&enhanced("E5", "NE", "AL")).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        gw.metrics()
            .app_ack_failures
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
    // Now the receiver comes up on that port.
    let l = TcpListener::bind(addr).await.unwrap();
    let (mut s, _) = tokio::time::timeout(Duration::from_secs(10), l.accept())
        .await
        .unwrap()
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    let msg = String::from_utf8_lossy(&buf[1..n - 2]).to_string();
    assert_eq!(field(&msg, "MSA", 2), "E5");
    let id = field(&msg, "MSH", 10);
    s.write_all(&frame(
        format!("MSH|^~\\&|A|B|C|D|20261123||ACK|X|P|2.5.1\rMSA|CA|{id}\r").as_bytes(),
    ))
    .await
    .unwrap();
    for _ in 0..50 {
        if gw
            .metrics()
            .app_acks_delivered
            .load(std::sync::atomic::Ordering::Relaxed)
            == 1
        {
            gw.shutdown().await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("application ACK not marked delivered");
}

#[tokio::test]
async fn accept_ack_er_is_sent_only_on_error() {
    let (ret, _rx) = return_listener("CA").await;
    let (gw, _dir) = gateway_with_return(ret).await;
    let mut c = Mllp::connect(gw.mllp_addr()).await;
    c.send(&enhanced("E6", "ER", "NE")).await;
    assert!(
        c.try_recv(Duration::from_millis(400)).await.is_none(),
        "ER: no CA on success"
    );
    let bad = enhanced("E7", "ER", "NE").replace("|E7|P|", "|E7|T|");
    let ack = c.roundtrip(&bad).await;
    assert_eq!(ack_code(&ack), "CR");
    gw.shutdown().await;
}
