//! What the examples share: the embedded test certificates (for `localhost`,
//! `127.0.0.1` and `::1`, issued by the test CA in `tests/certs/`) and the
//! command-line options every example takes.
#![allow(dead_code)]

use std::net::IpAddr;
use std::path::PathBuf;

use dtls_demux::DemuxKind;
use dtls_reactor::{ClientConfig, Protocol, ServerConfig, Verify};

/// Test CA certificate (PEM).
pub const TEST_CA: &[u8] = include_bytes!("../../tests/certs/ca.pem");
/// Test server certificate for localhost (PEM, ECDSA P-256).
pub const TEST_CERT: &[u8] = include_bytes!("../../tests/certs/server.pem");
/// Its private key. A test key: never use it for anything real.
pub const TEST_KEY: &[u8] = include_bytes!("../../tests/certs/server.key");

/// Logging for every example: `RUST_LOG` as `env_logger` reads it (e.g.
/// `RUST_LOG=debug` for per-connection events, `trace` for per-datagram ones),
/// `warn` when unset, so configuration and system failures always show.
pub fn init_log() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
}

/// Options of every server example.
#[derive(clap::Args, Debug, Clone)]
pub struct ServerOpts {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: IpAddr,
    /// UDP port to listen on.
    #[arg(long, default_value_t = 28000)]
    pub port: u16,
    /// How datagrams reach each peer's connection: osnet, router, or shared
    /// (one socket for every peer; reactor examples only).
    #[arg(long, default_value = "osnet")]
    pub demux: DemuxChoice,
    /// DTLS version: 1.0, 1.2 or any.
    #[arg(long, default_value = "1.2")]
    pub dtls: Protocol,
    /// Certificate chain (PEM); default: the embedded test certificate.
    #[arg(long, requires = "key")]
    pub cert: Option<PathBuf>,
    /// Private key (PEM) of --cert.
    #[arg(long, requires = "cert")]
    pub key: Option<PathBuf>,
    /// Accept this pre-shared key: `IDENTITY:HEXKEY` (repeat for more
    /// clients). Name PSK suites with --ciphers, e.g. `PSK-AES128-CCM8`
    /// (what tinydtls and most CoAP/LwM2M devices speak).
    #[arg(long, value_parser = parse_psk)]
    pub psk: Vec<Psk>,
    /// OpenSSL cipher list, e.g. `PSK-AES128-CCM8:PSK-AES128-CCM`.
    #[arg(long)]
    pub ciphers: Option<String>,
}

/// `--demux`: a demux of the socket API, or the reactor's shared socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DemuxChoice {
    /// OsNet or Router (`dtls_demux::Demux`): every front end.
    Kind(DemuxKind),
    /// `dtls_demux::SharedSocket`: one socket for every peer, the reactor only.
    Shared,
}

impl std::str::FromStr for DemuxChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.eq_ignore_ascii_case("shared") {
            return Ok(DemuxChoice::Shared);
        }
        s.parse::<DemuxKind>()
            .map(DemuxChoice::Kind)
            .map_err(|e| format!("{e}, or \"shared\""))
    }
}

impl std::fmt::Display for DemuxChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DemuxChoice::Kind(k) => k.fmt(f),
            DemuxChoice::Shared => f.write_str("shared"),
        }
    }
}

impl DemuxChoice {
    /// The demux for a socket-API server; `shared` serves only the reactor.
    pub fn socket_kind(self) -> Result<DemuxKind, String> {
        match self {
            DemuxChoice::Kind(k) => Ok(k),
            DemuxChoice::Shared => Err(
                "--demux shared: the shared socket serves only the reactor (reactor_echo); the socket API needs osnet or router".into(),
            ),
        }
    }
}

/// The local address of client session `i` on a wildcard shared socket:
/// 127.1.0.1 onwards (every 127/8 address is the loopback's), so many sessions
/// to one server leave from one socket.
pub fn session_local_v4(i: usize) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(127, 1, 0, 1)) + i as u32)
}

/// Starts a client session to `addr` from a reactor callback: DTLS with a
/// configuration, plain UDP without; on its own socket, or on the shared
/// socket `via` from the next local address ([`session_local_v4`] of
/// `*next_local`, which moves on).
#[cfg(feature = "reactor")]
pub fn connect_session(
    ctx: &mut dtls_reactor::Ctx<'_>,
    via: Option<dtls_reactor::ListenerId>,
    next_local: &mut usize,
    addr: std::net::SocketAddr,
    cfg: Option<&ClientConfig>,
) -> dtls_reactor::Result<dtls_reactor::ConnId> {
    let Some(via) = via else {
        return match cfg {
            Some(c) => ctx.connect(addr, c),
            None => ctx.connect_plain(addr),
        };
    };
    let local = Some(IpAddr::V4(session_local_v4(*next_local)));
    *next_local += 1;
    match cfg {
        Some(c) => ctx.connect_via(via, local, addr, c),
        None => ctx.connect_plain_via(via, local, addr),
    }
}

/// Sets this process's soft limit of open files to `n` (what `ulimit -n n`
/// does), to show a server needs no descriptor per peer.
pub fn set_nofile(n: u64) -> std::io::Result<()> {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        rl.rlim_cur = n.min(rl.rlim_max);
        if libc::setrlimit(libc::RLIMIT_NOFILE, &rl) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// One `--psk IDENTITY:HEXKEY`.
#[derive(Clone, Debug)]
pub struct Psk {
    /// The identity, as bytes.
    pub identity: Vec<u8>,
    /// The key.
    pub key: Vec<u8>,
}

/// Parses `IDENTITY:HEXKEY` (the identity may itself hold colons: the key is
/// after the last one).
pub fn parse_psk(s: &str) -> Result<Psk, String> {
    let (id, hex) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("`{s}`: expected IDENTITY:HEXKEY"))?;
    if id.is_empty() {
        return Err("the identity is empty".into());
    }
    if hex.is_empty() || hex.len() % 2 != 0 {
        return Err(format!(
            "`{hex}`: the key must be an even number of hex digits"
        ));
    }
    let key = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|_| format!("`{hex}`: not hexadecimal"))?;
    Ok(Psk {
        identity: id.as_bytes().to_vec(),
        key,
    })
}

impl ServerOpts {
    /// The server configuration these options describe.
    pub fn config(&self) -> dtls_reactor::Result<ServerConfig> {
        let b = ServerConfig::builder().protocol(self.dtls);
        let mut b = match (&self.cert, &self.key) {
            (Some(c), Some(k)) => b.certificate_chain_file(c).private_key_file(k),
            _ => b.certificate_chain_pem(TEST_CERT).private_key_pem(TEST_KEY),
        };
        if !self.psk.is_empty() {
            let keys = self.psk.clone();
            b = b.psk_lookup(move |id| {
                let found = keys
                    .iter()
                    .find(|p| p.identity == id)
                    .map(|p| p.key.clone());
                if found.is_none() {
                    eprintln!(
                        "PSK identity {:?} unknown: refused",
                        String::from_utf8_lossy(id)
                    );
                }
                found
            });
        }
        if let Some(c) = &self.ciphers {
            b = b.ciphers(c);
        }
        b.build()
    }
}

/// Logging for the server examples: `RUST_LOG` as usual; by default `info`
/// plus the front door's per-connection lines, among them why a handshake
/// was refused, with OpenSSL's reason (`no shared cipher`...).
pub fn init_server_log() {
    env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or("info,dtls_reactor::front_door=debug"),
    )
    .init();
}

/// Options of every client example.
#[derive(clap::Args, Debug, Clone)]
pub struct ClientOpts {
    /// DTLS version: 1.0, 1.2 or any.
    #[arg(long, default_value = "1.2")]
    pub dtls: Protocol,
    /// CA file to verify the server with; default: the embedded test CA.
    #[arg(long, conflicts_with = "insecure")]
    pub ca: Option<PathBuf>,
    /// Do not verify the server's certificate at all.
    #[arg(long)]
    pub insecure: bool,
    /// Client certificate chain (PEM), for servers that ask for one.
    #[arg(long, requires = "key")]
    pub cert: Option<PathBuf>,
    /// Private key (PEM) of --cert.
    #[arg(long, requires = "cert")]
    pub key: Option<PathBuf>,
    /// Offer this pre-shared key: `IDENTITY:HEXKEY` (name PSK suites with --ciphers).
    #[arg(long, value_parser = parse_psk)]
    pub psk: Option<Psk>,
    /// OpenSSL cipher list, e.g. `PSK-AES128-CCM8`.
    #[arg(long)]
    pub ciphers: Option<String>,
}

impl ClientOpts {
    /// The client configuration for a server known as `host`.
    pub fn config(&self, host: &str) -> dtls_reactor::Result<ClientConfig> {
        let mut b = ClientConfig::builder()
            .protocol(self.dtls)
            .server_name(host);
        if self.insecure {
            b = b.verify(Verify::None);
        } else if let Some(ca) = &self.ca {
            b = b.ca_file(ca);
        } else {
            b = b.ca_pem(TEST_CA);
        }
        if let (Some(c), Some(k)) = (&self.cert, &self.key) {
            b = b.certificate_chain_file(c).private_key_file(k);
        }
        if let Some(p) = &self.psk {
            b = b.psk(&p.identity, &p.key);
        }
        if let Some(c) = &self.ciphers {
            b = b.ciphers(c);
        }
        b.build()
    }
}

/// Raises the open-file limit to the hard limit: every peer is a socket.
pub fn raise_nofile() {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) == 0 && rl.rlim_cur < rl.rlim_max {
            rl.rlim_cur = rl.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &rl);
        }
    }
}

/// Pins the calling thread to `cpu`.
pub fn pin_to_cpu(cpu: usize) -> std::io::Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_ZERO/CPU_SET write within our local
    // value and sched_setaffinity reads it for the calling thread (pid 0).
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Pins the calling thread to `cpu` when `enabled`; returns where it runs,
/// for printing the placement.
pub fn placement(cpu: usize, enabled: bool) -> String {
    if !enabled {
        return "unpinned".into();
    }
    match pin_to_cpu(cpu) {
        Ok(()) => format!("cpu{cpu}"),
        Err(_) => format!("cpu{cpu} (pin failed, unpinned)"),
    }
}

/// Parses a `--loss` value: a probability (`0.05`) or a percentage (`5%`),
/// at most one half (more and the handshakes and probes take too long).
pub fn loss_rate(s: &str) -> Result<f64, String> {
    let s = s.trim();
    let p = match s.strip_suffix('%') {
        Some(pct) => pct.trim().parse::<f64>().map(|x| x / 100.0),
        None => s.parse::<f64>(),
    }
    .map_err(|e| format!("`{s}`: {e}"))?;
    if (0.0..=0.5).contains(&p) {
        Ok(p)
    } else {
        Err(format!("`{s}`: a loss rate is in 0..=0.5"))
    }
}

/// A loss rate for printing: `0` or `5%`.
pub fn loss_label(p: f64) -> String {
    if p == 0.0 {
        "0".into()
    } else {
        format!("{}%", (p * 1e5).round() / 1e3)
    }
}
