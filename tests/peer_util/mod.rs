//! Running the independent DTLS peers (OpenSSL's `s_client`/`s_server`,
//! GnuTLS's `gnutls-cli`/`gnutls-serv`) from the interop tests: a child
//! process whose output is collected, the test PKI's paths, free ports.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dtls_reactor::{ClientConfig, DtlsSocket};

use crate::socket_util::connect;

pub const CERTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/certs");
pub const PSK_HEX: &str = "30313233343536373839616263646566"; // "0123456789abcdef"

pub fn cert(name: &str) -> String {
    format!("{CERTS}/{name}")
}

/// Whether `bin` can run here; when it cannot, outside CI the test is skipped
/// with a printed reason, and in CI it fails.
pub fn have(bin: &str) -> bool {
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
pub struct Peer {
    pub child: Child,
    pub stdin: Option<ChildStdin>,
    output: Arc<Mutex<String>>,
    pub what: String,
}

impl Peer {
    pub fn spawn(bin: &str, args: &[String]) -> Peer {
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

    pub fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(line.as_bytes()).unwrap();
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
    }

    /// Waits (bounded) until the output contains `needle`.
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.output.lock().unwrap().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn host_port(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V4(a) => format!("{}:{}", a.ip(), a.port()),
        SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
    }
}

/// A free UDP port on `ip` (bound and released; the peer binds it next).
pub fn free_port(ip: std::net::IpAddr) -> SocketAddr {
    UdpSocket::bind(SocketAddr::new(ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
}

pub const WAIT: Duration = Duration::from_secs(10);

/// Our client against a peer server listening on `addr`: handshake, send a
/// line (the server prints it), read what the server sends back.
pub fn our_client(addr: SocketAddr, cfg: &ClientConfig) -> DtlsSocket {
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

/// Owned command-line arguments.
pub fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

/// `gnutls-serv --udp --echo` on `addr` with the test server certificate
/// and `extra` options, started (its "listening" line seen).
pub fn gnutls_serv(addr: SocketAddr, extra: &[&str]) -> Peer {
    let port = addr.port().to_string();
    let (c, k) = (cert("server.pem"), cert("server.key"));
    let mut a = args(&[
        "--udp",
        "--echo",
        "--port",
        &port,
        "--x509certfile",
        &c,
        "--x509keyfile",
        &k,
    ]);
    a.extend(args(extra));
    let peer = Peer::spawn("gnutls-serv", &a);
    assert!(
        peer.wait_for("listening", WAIT),
        "gnutls-serv did not start:\n{}",
        peer.output()
    );
    peer
}

/// `openssl s_server FLAG` (e.g. `-dtls1_2`) on a free port of `ip` with the
/// test server certificate and `extra` options, started (its "ACCEPT" seen).
pub fn s_server(ip: std::net::IpAddr, flag: &str, extra: &[&str]) -> (Peer, SocketAddr) {
    let addr = free_port(ip);
    let (c, k, at) = (cert("server.pem"), cert("server.key"), host_port(addr));
    let mut a = args(&["s_server", flag, "-accept", &at, "-cert", &c, "-key", &k]);
    a.extend(args(extra));
    let peer = Peer::spawn("openssl", &a);
    assert!(
        peer.wait_for("ACCEPT", WAIT),
        "s_server did not start:\n{}",
        peer.output()
    );
    (peer, addr)
}
