//! MLLP over TLS and mutual TLS (RELIABILITY.md §(h), mTLS and TLS-version
//! rows): bad client certificates are refused at the handshake, before any
//! HL7 byte is read; a trusted identity not on the sender's allowlist is
//! answered AR `UNAUTHORIZED-SOURCE`; only TLS 1.2 and 1.3 are negotiated.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::certs::{
    self, ClientFiles, LAB_ID, MODERN, MllpStream, Pki, Refusal, connect_tls, eventually,
    start_tls_gateway,
};
use crate::support::{self, ack_code, adt_a01, err_code, field, frame, journal_rows, oru};

/// Reads until the peer closes (or 15 s pass); returns the bytes and
/// whether the connection was closed.
async fn read_until_closed(stream: &mut TcpStream) -> (Vec<u8>, bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (got, true),
            Ok(Ok(n)) => got.extend_from_slice(&chunk[..n]),
            Err(_) => return (got, false),
        }
    }
}

#[tokio::test]
async fn plaintext_mllp_on_a_tls_listener_gets_no_ack_and_is_closed() {
    let pki = Pki::generate();
    let gw = start_tls_gateway(&pki, false).await;
    let before = gw.handshake_failures();

    let mut tcp = TcpStream::connect(gw.addr()).await.unwrap();
    use tokio::io::AsyncWriteExt;
    tcp.write_all(&frame(oru("PLAIN-1").as_bytes()))
        .await
        .unwrap();
    let (bytes, closed) = read_until_closed(&mut tcp).await;

    assert!(
        closed,
        "the TLS listener must close a plaintext MLLP connection (handshake failure)"
    );
    assert!(
        !bytes.contains(&support::SB) && !String::from_utf8_lossy(&bytes).contains("MSA"),
        "no HL7 acknowledgement may come back over plaintext, got {bytes:02x?}"
    );
    eventually("tls_handshake_failures to increase", || {
        gw.handshake_failures() > before
    })
    .await;
    assert_eq!(gw.frames(), 0, "no MLLP frame may be read before TLS");
    assert_eq!(gw.journal_len(), 0, "nothing may be journaled");
}

/// The client's view of a refused handshake: an error at connect, or (TLS
/// 1.3, where the client finishes first) an error or EOF on the first read.
/// `alert` is the TLS alert the gateway must send, which shows the refusal
/// happened for the intended reason (e.g. the CRL, not a broken chain).
async fn expect_refused(
    gw: &certs::TlsGateway,
    pki: &Pki,
    case: &str,
    client: Option<&ClientFiles>,
    alert: &str,
) {
    let before = gw.handshake_failures();

    // TLS 1.3: the server checks the client certificate after the client
    // considers the handshake complete, so the refusal shows on the read.
    let config = certs::client_config(pki, client, &[&rustls::version::TLS13]);
    match connect_tls(gw.addr(), config).await {
        Err(e) => {
            eprintln!("{case} (TLS 1.3): refused at connect: {e}");
            assert!(
                e.to_string().contains(alert),
                "{case}: expected alert {alert}, got {e}"
            );
        }
        Ok(stream) => {
            let mut c = MllpStream::new(stream);
            let id = format!("REFUSED-{case}");
            // The write may fail too once the alert has arrived.
            let _ = c.send(&oru(&id)).await;
            match c.recv().await {
                Ok(ack) => {
                    panic!("{case}: the gateway answered over a refused TLS session: {ack:?}")
                }
                Err(Refusal::Error(e)) if e.contains("no frame and no close") => {
                    panic!("{case}: the connection was neither refused nor closed")
                }
                Err(r) => {
                    eprintln!("{case} (TLS 1.3): refused on first read: {r:?}");
                    if let Refusal::Error(e) = &r {
                        assert!(e.contains(alert), "{case}: expected alert {alert}, got {e}");
                    }
                }
            }
            assert!(
                !String::from_utf8_lossy(c.leftover()).contains("MSA"),
                "{case}: no acknowledgement bytes expected"
            );
        }
    }
    eventually(
        &format!("{case}: tls_handshake_failures to increase (TLS 1.3)"),
        || gw.handshake_failures() > before,
    )
    .await;

    // TLS 1.2: the server's Finished follows its check of the client
    // certificate, so the client's handshake itself must fail.
    let before = gw.handshake_failures();
    let config = certs::client_config(pki, client, &[&rustls::version::TLS12]);
    match connect_tls(gw.addr(), config).await {
        Ok(_) => panic!("{case}: a TLS 1.2 handshake with this client certificate must fail"),
        Err(e) => {
            eprintln!("{case} (TLS 1.2): refused at connect: {e}");
            assert!(
                e.to_string().contains(alert),
                "{case}: expected alert {alert}, got {e}"
            );
        }
    }
    eventually(
        &format!("{case}: tls_handshake_failures to increase (TLS 1.2)"),
        || gw.handshake_failures() > before,
    )
    .await;
}

#[tokio::test]
async fn mutual_tls_refuses_missing_untrusted_expired_and_revoked_certificates() {
    let pki = Pki::generate();
    let gw = start_tls_gateway(&pki, true).await;

    let cases: [(&str, Option<&ClientFiles>, &str); 4] = [
        ("no-client-cert", None, "CertificateRequired"),
        ("untrusted-ca", Some(&pki.untrusted), "UnknownCA"),
        ("expired", Some(&pki.expired), "CertificateExpired"),
        ("revoked-by-crl", Some(&pki.revoked), "CertificateRevoked"),
    ];
    for (case, client, alert) in cases {
        expect_refused(&gw, &pki, case, client, alert).await;
    }

    assert!(
        gw.handshake_failures() >= 8,
        "4 certificates x 2 TLS versions must each count as a handshake failure, got {}",
        gw.handshake_failures()
    );
    assert_eq!(
        gw.frames(),
        0,
        "no MLLP frame may be read on a refused connection"
    );
    assert_eq!(gw.journal_len(), 0, "nothing may be journaled");

    // The same gateway still serves the allowed client: the refusals above
    // are about the certificates, not a broken listener.
    let stream = connect_tls(
        gw.addr(),
        certs::client_config(&pki, Some(&pki.lab), MODERN),
    )
    .await
    .expect("the allowed client completes the handshake");
    let ack = MllpStream::new(stream)
        .roundtrip(&oru("AFTER-REFUSALS"))
        .await;
    assert_eq!(ack_code(&ack), "AA", "{ack:?}");
}

#[tokio::test]
async fn trusted_certificate_not_on_the_allowlist_is_answered_unauthorized_source() {
    let pki = Pki::generate();
    let gw = start_tls_gateway(&pki, true).await;
    let config = certs::client_config(&pki, Some(&pki.nurse_call), MODERN);
    let stream = connect_tls(gw.addr(), config)
        .await
        .expect("a certificate from the trusted CA completes the handshake");
    let mut c = MllpStream::new(stream);

    // MSH-3 LAB claims sender `lab`, whose allowlist is lab.example.org only.
    let ack = c.roundtrip(&oru("NURSE-AS-LAB-1")).await;
    assert_eq!(
        ack_code(&ack),
        "AR",
        "unauthorised source must be AR: {ack:?}"
    );
    assert_eq!(
        field(&ack, "MSA", 2),
        "NURSE-AS-LAB-1",
        "MSA-2 = MSH-10: {ack:?}"
    );
    assert_eq!(
        err_code(&ack),
        "199",
        "ERR-3 must be 199 (other error): {ack:?}"
    );
    let err5 = field(&ack, "ERR", 5);
    assert_eq!(
        err5.split('^').next().unwrap_or(""),
        "UNAUTHORIZED-SOURCE",
        "ERR-5 must name UNAUTHORIZED-SOURCE: {ack:?}"
    );

    let rows = journal_rows(&gw.journal_path(), "NURSE-AS-LAB-1");
    assert_eq!(rows.len(), 1, "the refusal is journaled once: {rows:?}");
    assert_eq!(rows[0].fate.as_str(), "rejected", "{rows:?}");
    assert_eq!(rows[0].ack_code.as_deref(), Some("AR"), "{rows:?}");
}

#[tokio::test]
async fn allowed_client_certificate_is_accepted_and_its_identity_journaled() {
    let pki = Pki::generate();
    let gw = start_tls_gateway(&pki, true).await;
    let config = certs::client_config(&pki, Some(&pki.lab), MODERN);
    let stream = connect_tls(gw.addr(), config)
        .await
        .expect("the allowed client completes the handshake");
    let mut c = MllpStream::new(stream);

    for msg in [oru("MTLS-ORU-1"), adt_a01("MTLS-ADT-1")] {
        let id = field(&msg, "MSH", 10);
        let ack = c.roundtrip(&msg).await;
        assert_eq!(ack_code(&ack), "AA", "allowed client must get AA: {ack:?}");
        assert_eq!(field(&ack, "MSA", 2), id, "MSA-2 = MSH-10: {ack:?}");
        let rows = journal_rows(&gw.journal_path(), &id);
        assert_eq!(rows.len(), 1, "{id} journaled once: {rows:?}");
        assert!(
            rows[0].peer.contains(LAB_ID),
            "journal peer must mention the certificate identity {LAB_ID}: {:?}",
            rows[0].peer
        );
        assert_eq!(rows[0].sender.as_deref(), Some("lab"), "{rows:?}");
    }
    assert_eq!(gw.handshake_failures(), 0);
}

#[tokio::test]
async fn certificate_identities_match_the_allowlist_case_insensitively() {
    let pki = Pki::generate();
    let gw = start_tls_gateway(&pki, true).await;
    let config = certs::client_config(&pki, Some(&pki.lab_mixed_case), MODERN);
    let stream = connect_tls(gw.addr(), config)
        .await
        .expect("the trusted client completes the handshake");
    let ack = MllpStream::new(stream)
        .roundtrip(&oru("MIXED-CASE-1"))
        .await;
    assert_eq!(
        ack_code(&ack),
        "AA",
        "`Lab.Example.ORG` must match the allowlist entry `{LAB_ID}`: {ack:?}"
    );
}

#[tokio::test]
async fn only_tls_1_2_and_1_3_can_be_negotiated() {
    let pki = Pki::generate();
    let gw = start_tls_gateway(&pki, true).await;

    for (name, version, expected) in [
        (
            "TLS 1.2",
            &rustls::version::TLS12,
            rustls::ProtocolVersion::TLSv1_2,
        ),
        (
            "TLS 1.3",
            &rustls::version::TLS13,
            rustls::ProtocolVersion::TLSv1_3,
        ),
    ] {
        let config = certs::client_config(&pki, Some(&pki.lab), &[version]);
        let stream = connect_tls(gw.addr(), config)
            .await
            .unwrap_or_else(|e| panic!("{name} must be negotiable: {e}"));
        assert_eq!(stream.get_ref().1.protocol_version(), Some(expected));
        let id = format!("VERSION-{}", name.replace([' ', '.'], ""));
        let ack = MllpStream::new(stream).roundtrip(&oru(&id)).await;
        assert_eq!(ack_code(&ack), "AA", "{name}: {ack:?}");
        assert_eq!(field(&ack, "MSA", 2), id);
    }

    // rustls cannot even offer TLS 1.0/1.1; OpenSSL can.
    if std::process::Command::new("openssl")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_err()
    {
        crate::support::note(
            "openssl CLI not found: skipping the `openssl s_client -tls1_1/-tls1` part",
        );
        return;
    }
    let port = gw.addr().port().to_string();
    let s_client = |flag: &'static str| {
        let mut cmd = tokio::process::Command::new("openssl");
        cmd.args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
            .args(["-servername", "localhost", flag])
            // Let OpenSSL 3 really offer the old protocols (its default
            // security level would refuse before sending anything).
            .args(["-cipher", "DEFAULT:@SECLEVEL=0"])
            .arg("-CAfile")
            .arg(&pki.ca)
            .arg("-cert")
            .arg(&pki.lab.cert)
            .arg("-key")
            .arg(&pki.lab.key)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        async move {
            let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
                .await
                .unwrap_or_else(|_| panic!("openssl s_client {flag} did not finish in 30 s"))
                .expect("run openssl s_client");
            let text = format!(
                "{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            (out.status.success(), text)
        }
    };

    // Control: the same command line with TLS 1.2 works, so a failure
    // below is the protocol version and not the command.
    let (ok, text) = s_client("-tls1_2").await;
    assert!(ok, "openssl s_client -tls1_2 must succeed:\n{text}");
    assert!(
        text.contains("TLSv1.2"),
        "expected a TLS 1.2 session:\n{text}"
    );

    for flag in ["-tls1_1", "-tls1"] {
        let before = gw.handshake_failures();
        let (ok, text) = s_client(flag).await;
        assert!(
            !ok,
            "openssl s_client {flag} must fail against the gateway:\n{text}"
        );
        // OpenSSL prints the protocol it attempted even on failure; a
        // negotiated session is the line `New, <version>, Cipher is <name>`.
        assert!(
            text.lines()
                .filter(|l| l.starts_with("New, "))
                .all(|l| l.contains("Cipher is (NONE)")),
            "{flag}: a session with an old protocol was established:\n{text}"
        );
        assert!(
            !text.contains("no protocols available"),
            "{flag}: OpenSSL refused to offer the protocol itself, so the test proves nothing:\n{text}"
        );
        eventually(
            &format!("{flag}: the gateway counts a handshake failure"),
            || gw.handshake_failures() > before,
        )
        .await;
    }
    assert_eq!(
        gw.journal_len(),
        2,
        "only the two rustls messages are journaled"
    );
}
