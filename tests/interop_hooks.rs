//! The OpenSSL hooks and the example tools against independent DTLS
//! peers: OpenSSL's `s_client`/`s_server` and GnuTLS's
//! `gnutls-cli`/`gnutls-serv` (skipped with a printed reason outside CI when
//! missing, as in `tests/interop.rs`). `tests/hooks.rs` has the in-memory
//! test of each hook.

mod common;
mod peer_util;
mod socket_util;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{four_ways, Variant};
use dtls_reactor::Verify;
use peer_util::*;
use socket_util::*;
const LOCAL: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
const SERVER2: &[u8] = include_bytes!("certs/server2.pem");
const SERVER2_KEY: &[u8] = include_bytes!("certs/server2.key");

/// A fast server that presents the other.test certificate to clients asking for it.
fn sni_server() -> dtls_reactor::ConfigBuilder<dtls_reactor::Server> {
    fast_server().certificate_for_name(
        "other.test",
        dtls_reactor::Credentials::from_pem(SERVER2, SERVER2_KEY).unwrap(),
    )
}

/// `s_client` (not quiet: it prints the session) to an echo server of
/// ours, a line sent until it comes back. Returns s_client's output, or
/// `Err(output)` when nothing came back within `patience`.
fn s_client_session(
    srv: &EchoServer,
    args: &[&str],
    patience: Duration,
) -> std::result::Result<String, String> {
    let mut a: Vec<String> = vec!["s_client".into(), "-connect".into(), host_port(srv.addr)];
    a.extend(peer_util::args(args));
    let mut peer = Peer::spawn("openssl", &a);
    let msg = format!("hooks-{}", srv.addr.port());
    let start = Instant::now();
    while !peer.wait_for(&format!("{msg}\n{msg}"), Duration::from_millis(300)) {
        let exited = peer.child.try_wait().ok().flatten().is_some();
        if exited || start.elapsed() > patience {
            // Let the reader threads collect the last lines.
            std::thread::sleep(Duration::from_millis(100));
            return Err(peer.output());
        }
        // s_client may exit (refused handshake) between the check and the write.
        if let Some(stdin) = peer.stdin.as_mut() {
            let _ = writeln!(stdin, "{msg}").and_then(|_| stdin.flush());
        }
    }
    Ok(peer.output())
}

fn sha256_pem(pem: &[u8]) -> [u8; 32] {
    openssl::sha::sha256(
        &openssl::x509::X509::from_pem(pem)
            .unwrap()
            .to_der()
            .unwrap(),
    )
}

fn pin(want: [u8; 32]) -> impl Fn(&dtls_reactor::PeerChain) -> dtls_reactor::CertVerdict {
    move |chain| {
        if chain.leaf_sha256() == want {
            dtls_reactor::CertVerdict::Accept
        } else {
            dtls_reactor::CertVerdict::Reject("not the pinned certificate".into())
        }
    }
}

/// Our server pins the client certificate's fingerprint: a self-signed
/// certificate the CA does not know is let in, a CA-issued one that is not
/// the pinned one is refused.
fn hooks_server_pins_s_client(v: Variant) {
    if !have("openssl") {
        return;
    }
    let s = fast_server()
        .ca_pem(common::CA)
        .verify(Verify::Required)
        .verify_callback(pin(sha256_pem(common::SELFSIGNED)))
        .build()
        .unwrap();
    let srv = EchoServer::start(v, &s);
    let base = [
        "-dtls1_2",
        "-CAfile",
        &cert("ca.pem"),
        "-verify_return_error",
    ];
    let mut ok = base.to_vec();
    let (c, k) = (cert("selfsigned.pem"), cert("selfsigned.key"));
    ok.extend(["-cert", &c, "-key", &k]);
    s_client_session(&srv, &ok, WAIT).unwrap_or_else(|o| panic!("pinned client refused:\n{o}"));
    let mut bad = base.to_vec();
    let (c, k) = (cert("client.pem"), cert("client.key"));
    bad.extend(["-cert", &c, "-key", &k]);
    let out = s_client_session(&srv, &bad, Duration::from_secs(3))
        .expect_err("a client that is not the pinned one must not be served");
    assert!(
        out.contains("alert"),
        "s_client should report our alert:\n{out}"
    );
}

/// SNI: `s_client -servername other.test` gets the other.test certificate
/// (its hostname check passes only with it), without a name the default.
fn hooks_sni_s_client(v: Variant) {
    if !have("openssl") {
        return;
    }
    let s = sni_server().build().unwrap();
    let srv = EchoServer::start(v, &s);
    let ca = cert("ca.pem");
    for (name, cn) in [
        ("other.test", "CN = other.test"),
        ("localhost", "CN = localhost"),
    ] {
        let out = s_client_session(
            &srv,
            &[
                "-dtls1_2",
                "-CAfile",
                &ca,
                "-verify_return_error",
                "-servername",
                name,
                "-verify_hostname",
                name,
            ],
            WAIT,
        )
        .unwrap_or_else(|o| panic!("SNI {name}:\n{o}"));
        assert!(
            out.contains(&format!("subject=O = dtls-reactor tests, {cn}")),
            "SNI {name}:\n{out}"
        );
    }
}

/// ALPN: our server's preference list against `s_client -alpn`.
fn hooks_alpn_s_client(v: Variant) {
    if !have("openssl") {
        return;
    }
    let s = fast_server()
        .alpn_protocols(&["coap", "h2"])
        .build()
        .unwrap();
    let srv = EchoServer::start(v, &s);
    let out = s_client_session(&srv, &["-dtls1_2", "-alpn", "h2,coap"], WAIT).unwrap();
    assert!(out.contains("ALPN protocol: coap"), "{out}");
}

/// Key log: our server's lines equal the ones `s_client -keylogfile` writes.
fn hooks_key_log_s_client(v: Variant) {
    if !have("openssl") {
        return;
    }
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let l2 = lines.clone();
    let s = fast_server()
        .key_log(move |l| l2.lock().unwrap().push(l.to_string()))
        .build()
        .unwrap();
    let srv = EchoServer::start(v, &s);
    let file = std::env::temp_dir().join(format!(
        "dtls-keylog-{}-{}",
        std::process::id(),
        srv.addr.port()
    ));
    let f = file.to_string_lossy().to_string();
    s_client_session(&srv, &["-dtls1_2", "-keylogfile", &f], WAIT).unwrap();
    let theirs = std::fs::read_to_string(&file).unwrap_or_default();
    let _ = std::fs::remove_file(&file);
    let theirs: Vec<&str> = theirs.lines().filter(|l| !l.starts_with('#')).collect();
    let ours = lines.lock().unwrap().clone();
    assert_eq!(ours.len(), 1, "{ours:?}");
    assert!(ours[0].starts_with("CLIENT_RANDOM "), "{ours:?}");
    assert_eq!(
        theirs,
        vec![ours[0].as_str()],
        "the same secret on both sides"
    );
}

/// Ticket keys: `s_client -sess_out` from one server of ours, `-sess_in`
/// to another (its own configuration, the same ticket keys): resumed.
fn hooks_ticket_keys_s_client(v: Variant) {
    if !have("openssl") {
        return;
    }
    let secret = [0x5a; 32];
    let a = fast_server()
        .ticket_keys(dtls_reactor::TicketKeys::from_secret(secret))
        .build()
        .unwrap();
    let b = fast_server()
        .ticket_keys(dtls_reactor::TicketKeys::from_secret(secret))
        .build()
        .unwrap();
    let other = fast_server().build().unwrap();
    let sess = std::env::temp_dir().join(format!("dtls-sess-{}-{}", std::process::id(), v.demux));
    let sess = sess.to_string_lossy().to_string();
    let srv_a = EchoServer::start(v, &a);
    let out = s_client_session(&srv_a, &["-dtls1_2", "-sess_out", &sess], WAIT).unwrap();
    assert!(out.contains("New, "), "{out}");
    let srv_b = EchoServer::start(v, &b);
    let out = s_client_session(&srv_b, &["-dtls1_2", "-sess_in", &sess], WAIT).unwrap();
    assert!(
        out.contains("Reused, "),
        "resumed on the second server:\n{out}"
    );
    let srv_o = EchoServer::start(v, &other);
    let out = s_client_session(&srv_o, &["-dtls1_2", "-sess_in", &sess], WAIT).unwrap();
    let _ = std::fs::remove_file(&sess);
    assert!(
        out.contains("New, "),
        "other keys: a full handshake:\n{out}"
    );
}

/// GnuTLS: SNI and ALPN with gnutls-cli, and its resumption (`--resume`)
/// on our ticket keys.
fn hooks_gnutls_cli(v: Variant) {
    if !have("gnutls-cli") {
        return;
    }
    let s = sni_server()
        .alpn_protocols(&["coap"])
        .ticket_keys(dtls_reactor::TicketKeys::from_secret([3; 32]))
        .build()
        .unwrap();
    let srv = EchoServer::start(v, &s);
    let port = srv.addr.port().to_string();
    let ca = cert("ca.pem");
    let host = srv.addr.ip().to_string();
    let a = args(&[
        "--udp",
        "--port",
        &port,
        "--x509cafile",
        &ca,
        "--sni-hostname",
        "other.test",
        "--verify-hostname",
        "other.test",
        "--alpn",
        "coap",
        "--resume",
        &host,
    ]);
    let peer = Peer::spawn("gnutls-cli", &a);
    assert!(
        peer.wait_for("This is a resumed session", WAIT),
        "gnutls-cli did not resume:\n{}",
        peer.output()
    );
    let out = peer.output();
    assert!(
        out.contains("Application protocol: coap") || out.contains("ALPN: coap"),
        "{out}"
    );
    assert!(!out.contains("verification failed"), "{out}");
}

four_ways!(
    hooks_server_pins_s_client,
    hooks_sni_s_client,
    hooks_alpn_s_client,
    hooks_key_log_s_client,
    hooks_ticket_keys_s_client,
    hooks_gnutls_cli,
);

/// Our client pins `s_server`'s certificate; a wrong pin fails with
/// `CertificateRejected` (`PermissionDenied`) and its reason.
#[test]
fn hooks_our_client_pins_s_server() {
    if !have("openssl") {
        return;
    }
    let (_peer, addr) = s_server(LOCAL, "-dtls1_2", &[]);
    let c = fast_client()
        .verify_callback(pin(sha256_pem(common::SERVER)))
        .build()
        .unwrap();
    let mut s = our_client(addr, &c);
    s.send(b"pinned\n").unwrap();
    drop(s);
    let (_peer, addr) = s_server(LOCAL, "-dtls1_2", &[]);
    let c = fast_client()
        .verify_callback(pin(sha256_pem(common::SERVER_RSA)))
        .build()
        .unwrap();
    let e = connect(addr, &c).expect_err("a wrong pin must fail the handshake");
    match &e {
        dtls_reactor::Error::CertificateRejected { reason, .. } => {
            assert_eq!(reason, "not the pinned certificate")
        }
        other => panic!("expected CertificateRejected, got {other:?}"),
    }
    assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied);
}

/// Our client's ALPN offer against `s_server -alpn`, and its session store
/// resuming against `s_server`'s tickets.
#[test]
fn hooks_our_client_alpn_and_resumption_with_s_server() {
    if !have("openssl") {
        return;
    }
    let (_peer, addr) = s_server(LOCAL, "-dtls1_2", &["-alpn", "coap"]);
    let c = fast_client()
        .alpn_protocols(&["h2", "coap"])
        .resume_sessions(true)
        .build()
        .unwrap();
    let mut s = our_client(addr, &c);
    assert_eq!(s.connection().unwrap().alpn_protocol(), Some(&b"coap"[..]));
    assert!(!s.connection().unwrap().session_reused());
    let _ = s.shutdown();
    let s = our_client(addr, &c);
    assert!(
        s.connection().unwrap().session_reused(),
        "resumed with s_server's ticket"
    );
}

/// GnuTLS's server: our client's ALPN offer and pin.
#[test]
fn hooks_our_client_with_gnutls_serv() {
    if !have("gnutls-serv") {
        return;
    }
    let addr = free_port(std::net::Ipv4Addr::LOCALHOST.into());
    let _peer = gnutls_serv(addr, &["--alpn", "coap"]);
    let c = fast_client()
        .alpn_protocols(&["coap"])
        .verify_callback(pin(sha256_pem(common::SERVER)))
        .build()
        .unwrap();
    let mut s = our_client(addr, &c);
    assert_eq!(s.connection().unwrap().alpn_protocol(), Some(&b"coap"[..]));
    s.send(b"gnutls-alpn").unwrap();
    let mut buf = [0u8; 64];
    let n = s.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"gnutls-alpn");
}

// --- The examples as tools: PSK with AES-CCM and AES-CCM-8 ------------------

/// The example binary `name`, next to this test: `cargo test` builds the
/// examples first; when it is missing (a run of this test target alone) it
/// is built here. One already there is used as is, so after changing an
/// example run `cargo build --examples` (or the whole `cargo test`).
fn example(name: &str) -> String {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().join("examples");
    let path = dir.join(name);
    if !path.exists() {
        let release = exe.to_string_lossy().contains("/release/");
        let mut cmd = std::process::Command::new(env!("CARGO"));
        cmd.args(["build", "--example", name]);
        if release {
            cmd.arg("--release");
        }
        let st = cmd.status().expect("cargo build --example");
        assert!(st.success(), "building example {name} failed");
    }
    path.to_string_lossy().into_owned()
}

const CCM_SUITES: [&str; 2] = ["PSK-AES128-CCM8", "PSK-AES128-CCM"];

/// `s_client` offering the test PSK (identity `device-1`) with only `suite`.
fn s_client_psk(addr: SocketAddr, suite: &str) -> Peer {
    let at = host_port(addr);
    Peer::spawn(
        "openssl",
        &args(&[
            "s_client",
            "-dtls1_2",
            "-connect",
            &at,
            "-psk",
            PSK_HEX,
            "-psk_identity",
            "device-1",
            "-cipher",
            suite,
        ]),
    )
}

/// A server example with `--psk` and `--ciphers`, reached by `s_client
/// -psk` with each CCM suite; a client offering only a suite the server
/// does not allow is refused, and the server logs OpenSSL's reason.
fn psk_ccm_server_example(bin: &str, ready: &str, extra: &[&str]) {
    if !have("openssl") {
        return;
    }
    let addr = free_port(std::net::Ipv4Addr::LOCALHOST.into());
    let port = addr.port().to_string();
    let psk = format!("device-1:{PSK_HEX}");
    let mut opts = vec![
        "--port",
        &port,
        "--psk",
        &psk,
        "--ciphers",
        "PSK-AES128-CCM8:PSK-AES128-CCM",
    ];
    opts.extend(extra);
    let server = Peer::spawn(&example(bin), &args(&opts));
    assert!(
        server.wait_for(ready, WAIT),
        "{bin} did not start:\n{}",
        server.output()
    );
    for suite in CCM_SUITES {
        let mut c = s_client_psk(addr, suite);
        let msg = format!("ccm-{suite}");
        let start = Instant::now();
        while !c.wait_for(&format!("{msg}\n{msg}"), Duration::from_millis(300)) {
            assert!(start.elapsed() < WAIT, "{suite} via {bin}:\n{}", c.output());
            c.send_line(&msg);
        }
        assert!(
            c.output().contains(&format!("Cipher is {suite}")),
            "{}",
            c.output()
        );
    }
    // A suite the server does not allow: refused, and the server says why.
    let c = s_client_psk(addr, "PSK-AES128-GCM-SHA256");
    assert!(c.wait_for("handshake failure", WAIT), "{}", c.output());
    assert!(
        server.wait_for("no shared cipher", WAIT),
        "{bin} must log OpenSSL's reason:\n{}",
        server.output()
    );
}

#[test]
fn examples_echo_server_psk_ccm() {
    psk_ccm_server_example("echo_server", "listening on", &[]);
}

#[test]
fn examples_reactor_echo_psk_ccm() {
    psk_ccm_server_example("reactor_echo", "DTLS echo on", &[]);
}

/// `echo_client --psk --ciphers` against `s_server -psk -nocert` with each
/// CCM suite: both sides report the suite (s_server does not echo, so the
/// client's one datagram goes unanswered; what is checked is the handshake).
#[test]
fn examples_echo_client_psk_ccm() {
    if !have("openssl") {
        return;
    }
    for suite in CCM_SUITES {
        let addr = free_port(std::net::Ipv4Addr::LOCALHOST.into());
        let a = args(&[
            "s_server",
            "-dtls1_2",
            "-accept",
            &host_port(addr),
            "-nocert",
            "-psk",
            PSK_HEX,
            "-psk_identity",
            "device-1",
            "-cipher",
            suite,
        ]);
        let server = Peer::spawn("openssl", &a);
        assert!(server.wait_for("ACCEPT", WAIT), "{}", server.output());
        let psk = format!("device-1:{PSK_HEX}");
        let out = std::process::Command::new(example("echo_client"))
            .args([
                "127.0.0.1",
                &addr.port().to_string(),
                "--psk",
                &psk,
                "--ciphers",
                suite,
                "--count",
                "1",
                "--timeout",
                "2",
            ])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains(&format!("DTLSv1.2 {suite}")),
            "echo_client with {suite}:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            server.wait_for(&format!("CIPHER is {suite}"), WAIT),
            "{}",
            server.output()
        );
    }
}
