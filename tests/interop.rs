//! Interoperability with independent DTLS implementations: OpenSSL's
//! `s_client`/`s_server` binaries and GnuTLS's `gnutls-cli`/`gnutls-serv`.
//!
//! Our servers run in the four variants (IPv4/IPv6 x OsNet/Router); our
//! client runs over IPv4 and IPv6. A test skips with a printed reason only
//! when its peer binary is missing and `CI` is unset; `.ci/run` installs the
//! binaries, so in CI nothing is skipped (a missing binary fails the test).

mod common;
mod peer_util;
mod socket_util;

use std::time::{Duration, Instant};

use common::{four_ways, Variant};
use dtls_reactor::{ClientConfig, Protocol, ServerConfig, Verify};
use peer_util::*;
use socket_util::*;

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

fn against_s_server(v6: bool, flag: &str, client: ClientConfig, extra: &[&str]) {
    if !have("openssl") {
        return;
    }
    let ip = Variant::new(v6, dtls_demux::DemuxKind::OsNet).ip();
    let (mut peer, addr) = s_server(ip, flag, extra);
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
    let ip = Variant::new(v6, dtls_demux::DemuxKind::OsNet).ip();
    let addr = free_port(ip);
    let peer = gnutls_serv(addr, &[]);
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
