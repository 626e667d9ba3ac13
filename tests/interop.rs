//! Interoperability with independent DTLS implementations: OpenSSL's
//! `s_client`/`s_server` binaries and GnuTLS's `gnutls-cli`/`gnutls-serv`.
//!
//! Our servers run in the four variants (IPv4/IPv6 x OsNet/Router); our
//! client runs over IPv4 and IPv6. A test skips with a printed reason only
//! when its peer binary is missing and `CI` is unset; `.ci/run` installs the
//! binaries, so in CI nothing is skipped (a missing binary fails the test).

mod common;
mod socket_util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Variant;
use dtls_reactor::{ClientConfig, DtlsSocket, Protocol, ServerConfig, Verify};
use socket_util::*;

const CERTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/certs");
const PSK_HEX: &str = "30313233343536373839616263646566"; // "0123456789abcdef"

fn cert(name: &str) -> String {
    format!("{CERTS}/{name}")
}

/// Whether `bin` can run here; when it cannot, outside CI the test is skipped
/// with a printed reason, and in CI it fails.
fn have(bin: &str) -> bool {
    let ok = Command::new(bin)
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "{bin} is missing in CI: .ci/run should have installed it"
        );
        eprintln!("SKIPPED: {bin} not installed (apt-get install openssl gnutls-bin)");
    }
    ok
}

/// A peer process whose stdout and stderr are collected; killed on drop.
struct Peer {
    child: Child,
    stdin: Option<ChildStdin>,
    output: Arc<Mutex<String>>,
    what: String,
}

impl Peer {
    fn spawn(bin: &str, args: &[String]) -> Peer {
        let mut child = Command::new(bin)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        let output = Arc::new(Mutex::new(String::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let out = output.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(stream);
                let mut line = String::new();
                while r.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                    out.lock().unwrap().push_str(&line);
                    line.clear();
                }
            });
        }
        Peer {
            stdin: child.stdin.take(),
            child,
            output,
            what: format!("{bin} {}", args.join(" ")),
        }
    }

    fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(line.as_bytes()).unwrap();
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
    }

    /// Waits (bounded) until the output contains `needle`.
    fn wait_for(&self, needle: &str, timeout: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.output.lock().unwrap().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn host_port(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V4(a) => format!("{}:{}", a.ip(), a.port()),
        SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
    }
}

/// A free UDP port on `ip` (bound and released; the peer binds it next).
fn free_port(ip: std::net::IpAddr) -> SocketAddr {
    UdpSocket::bind(SocketAddr::new(ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
}

const WAIT: Duration = Duration::from_secs(10);

/// Starts our echo server, runs `s_client` with `args`, sends a line and
/// expects it echoed.
fn s_client_echo(v: Variant, server: &ServerConfig, args: &[&str]) {
    if !have("openssl") {
        return;
    }
    let srv = EchoServer::start(v, server);
    let mut a: Vec<String> = vec!["s_client".into(), "-connect".into(), host_port(srv.addr)];
    a.extend(args.iter().map(|s| s.to_string()));
    a.push("-quiet".into());
    let mut peer = Peer::spawn("openssl", &a);
    let msg = format!("interop-{}-{}", v.demux, srv.addr.port());
    // s_client sends each stdin line as one record once the handshake is done.
    let start = Instant::now();
    while !peer.wait_for(&msg, Duration::from_millis(300)) {
        assert!(
            start.elapsed() < WAIT,
            "no echo from our server via `{}`:\n{}",
            peer.what,
            peer.output()
        );
        peer.send_line(&msg);
    }
}

fn s_client_dtls12_ecdsa(v: Variant) {
    s_client_echo(
        v,
        &server_cfg(),
        &[
            "-dtls1_2",
            "-CAfile",
            &cert("ca.pem"),
            "-verify_return_error",
        ],
    );
}

fn s_client_dtls10(v: Variant) {
    let s = fast_server().protocol(Protocol::Any).build().unwrap();
    s_client_echo(
        v,
        &s,
        &[
            "-dtls1",
            "-cipher",
            "DEFAULT:@SECLEVEL=0",
            "-CAfile",
            &cert("ca.pem"),
            "-verify_return_error",
        ],
    );
}

fn s_client_rsa(v: Variant) {
    let s = ServerConfig::builder()
        .certificate_chain_pem(common::SERVER_RSA)
        .private_key_pem(common::SERVER_RSA_KEY)
        .build()
        .unwrap();
    s_client_echo(
        v,
        &s,
        &[
            "-dtls1_2",
            "-cipher",
            "ECDHE-RSA-AES128-GCM-SHA256",
            "-CAfile",
            &cert("ca.pem"),
            "-verify_return_error",
        ],
    );
}

fn s_client_mutual_auth(v: Variant) {
    let s = fast_server()
        .ca_pem(common::CA)
        .verify(Verify::Required)
        .build()
        .unwrap();
    s_client_echo(
        v,
        &s,
        &[
            "-dtls1_2",
            "-CAfile",
            &cert("ca.pem"),
            "-verify_return_error",
            "-cert",
            &cert("client.pem"),
            "-key",
            &cert("client.key"),
        ],
    );
}

fn s_client_psk(v: Variant) {
    let s = ServerConfig::builder()
        .psk_identity_hint("dtls-reactor")
        .psk_lookup(|id| (id == b"device-1").then(|| b"0123456789abcdef".to_vec()))
        .ciphers("PSK-AES128-GCM-SHA256")
        .build()
        .unwrap();
    s_client_echo(
        v,
        &s,
        &[
            "-dtls1_2",
            "-psk",
            PSK_HEX,
            "-psk_identity",
            "device-1",
            "-cipher",
            "PSK-AES128-GCM-SHA256",
        ],
    );
}

fn gnutls_cli_echo(v: Variant) {
    if !have("gnutls-cli") {
        return;
    }
    let srv = EchoServer::start(v, &server_cfg());
    let host = srv.addr.ip().to_string();
    let a: Vec<String> = [
        "--udp",
        "--port",
        &srv.addr.port().to_string(),
        "--x509cafile",
        &cert("ca.pem"),
        "--x509certfile",
        &cert("client.pem"),
        "--x509keyfile",
        &cert("client.key"),
        &host,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut peer = Peer::spawn("gnutls-cli", &a);
    assert!(
        peer.wait_for("Handshake was completed", WAIT),
        "gnutls-cli handshake with our server:\n{}",
        peer.output()
    );
    let msg = format!("gnutls-{}-{}", v.demux, srv.addr.port());
    peer.send_line(&msg);
    // gnutls-cli prints what the server sends: our echo of the line.
    assert!(peer.wait_for(&msg, WAIT), "no echo:\n{}", peer.output());
}

four_ways!(
    s_client_dtls12_ecdsa,
    s_client_dtls10,
    s_client_rsa,
    s_client_mutual_auth,
    s_client_psk,
    gnutls_cli_echo,
);

/// Our client against a peer server listening on `addr`: handshake, send a
/// line (the server prints it), read what the server sends back.
fn our_client(addr: SocketAddr, cfg: &ClientConfig) -> DtlsSocket {
    let start = Instant::now();
    loop {
        match connect(addr, cfg) {
            Ok(s) => return s,
            Err(e) if start.elapsed() < WAIT => {
                eprintln!("retrying connect: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("our client could not connect to {addr}: {e}"),
        }
    }
}

fn against_s_server(v6: bool, flag: &str, client: ClientConfig, extra: &[&str]) {
    if !have("openssl") {
        return;
    }
    let ip = Variant::new(v6, dtls_demux::DemuxKind::OsNet).ip;
    let addr = free_port(ip);
    let mut a: Vec<String> = vec![
        "s_server".into(),
        flag.into(),
        "-accept".into(),
        host_port(addr),
        "-cert".into(),
        cert("server.pem"),
        "-key".into(),
        cert("server.key"),
    ];
    a.extend(extra.iter().map(|s| s.to_string()));
    let mut peer = Peer::spawn("openssl", &a);
    assert!(
        peer.wait_for("ACCEPT", WAIT),
        "s_server did not start:\n{}",
        peer.output()
    );
    let mut s = our_client(addr, &client);
    s.send(b"from-our-client\n").unwrap();
    assert!(
        peer.wait_for("from-our-client", WAIT),
        "s_server did not print our data:\n{}",
        peer.output()
    );
    peer.send_line("from-s_server");
    let mut buf = [0u8; 2048];
    let n = s.recv(&mut buf).expect("data from s_server");
    // s_server sends the line with or without its newline, depending on timing.
    assert_eq!(
        String::from_utf8_lossy(&buf[..n]).trim_end(),
        "from-s_server"
    );
}

#[test]
fn our_client_to_s_server_dtls12_v4() {
    against_s_server(false, "-dtls1_2", client_cfg(), &[]);
}

#[test]
fn our_client_to_s_server_dtls12_v6() {
    against_s_server(true, "-dtls1_2", client_cfg(), &[]);
}

#[test]
fn our_client_to_s_server_dtls10() {
    let c = fast_client().protocol(Protocol::Dtls1_0).build().unwrap();
    against_s_server(false, "-dtls1", c, &["-cipher", "DEFAULT:@SECLEVEL=0"]);
}

#[test]
fn our_client_to_s_server_mutual_auth() {
    let c = fast_client()
        .certificate_chain_pem(common::CLIENT)
        .private_key_pem(common::CLIENT_KEY)
        .build()
        .unwrap();
    against_s_server(
        true,
        "-dtls1_2",
        c,
        &[
            "-Verify",
            "1",
            "-CAfile",
            &cert("ca.pem"),
            "-verify_return_error",
        ],
    );
}

fn against_gnutls_serv(v6: bool) {
    if !have("gnutls-serv") {
        return;
    }
    let ip = Variant::new(v6, dtls_demux::DemuxKind::OsNet).ip;
    let addr = free_port(ip);
    let a: Vec<String> = [
        "--udp",
        "--echo",
        "--port",
        &addr.port().to_string(),
        "--x509certfile",
        &cert("server.pem"),
        "--x509keyfile",
        &cert("server.key"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let peer = Peer::spawn("gnutls-serv", &a);
    assert!(
        peer.wait_for("listening", WAIT),
        "gnutls-serv did not start:\n{}",
        peer.output()
    );
    let mut s = our_client(addr, &client_cfg());
    for i in 0..5 {
        let msg = format!("echo-through-gnutls-{i}");
        s.send(msg.as_bytes()).unwrap();
        let mut buf = [0u8; 2048];
        let n = s.recv(&mut buf).expect("echo from gnutls-serv");
        assert_eq!(&buf[..n], msg.as_bytes());
    }
    let _ = s.shutdown();
    drop(peer);
}

#[test]
fn our_client_to_gnutls_serv_v4() {
    against_gnutls_serv(false);
}

#[test]
fn our_client_to_gnutls_serv_v6() {
    against_gnutls_serv(true);
}

// --- The OpenSSL hooks against the command-line peers (tests/hooks.rs has
// the in-memory tests of each) ---------------------------------------------

const SERVER2: &[u8] = include_bytes!("certs/server2.pem");
const SERVER2_KEY: &[u8] = include_bytes!("certs/server2.key");

/// `s_client` (not quiet: it prints the session) to an echo server of
/// ours, a line sent until it comes back. Returns s_client's output, or
/// `Err(output)` when nothing came back within `patience`.
fn s_client_session(
    srv: &EchoServer,
    args: &[&str],
    patience: Duration,
) -> std::result::Result<String, String> {
    let mut a: Vec<String> = vec!["s_client".into(), "-connect".into(), host_port(srv.addr)];
    a.extend(args.iter().map(|s| s.to_string()));
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
    let s = fast_server()
        .certificate_for_name(
            "other.test",
            dtls_reactor::Credentials::from_pem(SERVER2, SERVER2_KEY).unwrap(),
        )
        .build()
        .unwrap();
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
    let s = fast_server()
        .certificate_for_name(
            "other.test",
            dtls_reactor::Credentials::from_pem(SERVER2, SERVER2_KEY).unwrap(),
        )
        .alpn_protocols(&["coap"])
        .ticket_keys(dtls_reactor::TicketKeys::from_secret([3; 32]))
        .build()
        .unwrap();
    let srv = EchoServer::start(v, &s);
    let port = srv.addr.port().to_string();
    let ca = cert("ca.pem");
    let host = srv.addr.ip().to_string();
    let a: Vec<String> = [
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
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
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

fn s_server(flag_args: &[&str]) -> (Peer, SocketAddr) {
    let addr = free_port(std::net::Ipv4Addr::LOCALHOST.into());
    let mut a: Vec<String> = vec![
        "s_server".into(),
        "-dtls1_2".into(),
        "-accept".into(),
        host_port(addr),
        "-cert".into(),
        cert("server.pem"),
        "-key".into(),
        cert("server.key"),
    ];
    a.extend(flag_args.iter().map(|s| s.to_string()));
    let peer = Peer::spawn("openssl", &a);
    assert!(
        peer.wait_for("ACCEPT", WAIT),
        "s_server did not start:\n{}",
        peer.output()
    );
    (peer, addr)
}

/// Our client pins `s_server`'s certificate; a wrong pin fails with
/// `CertificateRejected` (`PermissionDenied`) and its reason.
#[test]
fn hooks_our_client_pins_s_server() {
    if !have("openssl") {
        return;
    }
    let (_peer, addr) = s_server(&[]);
    let c = fast_client()
        .verify_callback(pin(sha256_pem(common::SERVER)))
        .build()
        .unwrap();
    let mut s = our_client(addr, &c);
    s.send(b"pinned\n").unwrap();
    drop(s);
    let (_peer, addr) = s_server(&[]);
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
    let (_peer, addr) = s_server(&["-alpn", "coap"]);
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
    let a: Vec<String> = [
        "--udp",
        "--echo",
        "--port",
        &addr.port().to_string(),
        "--x509certfile",
        &cert("server.pem"),
        "--x509keyfile",
        &cert("server.key"),
        "--alpn",
        "coap",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let peer = Peer::spawn("gnutls-serv", &a);
    assert!(
        peer.wait_for("listening", WAIT),
        "gnutls-serv:\n{}",
        peer.output()
    );
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
