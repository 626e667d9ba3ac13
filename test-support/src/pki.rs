//! The test PKI of `tests/certs/` (remade by `tests/certs/gen.sh`) and the standard configs.
//!
//! The server certificates are for `localhost`, `127.0.0.1` and `::1`; all are ECDSA P-256
//! but [`SERVER_RSA`].

use dtls_reactor::{Client, ClientConfig, ConfigBuilder, Server, ServerConfig};

/// The test CA: it issued [`SERVER`], [`CLIENT`], [`SERVER_RSA`] and [`INTER`].
pub const CA: &[u8] = include_bytes!("../../tests/certs/ca.pem");
/// A second CA that issued none of the others (for verification failures).
pub const OTHER_CA: &[u8] = include_bytes!("../../tests/certs/other-ca.pem");
/// An intermediate CA under [`CA`]; it issued [`CHAIN_SERVER`].
pub const INTER: &[u8] = include_bytes!("../../tests/certs/inter.pem");
/// The server certificate (ECDSA P-256), issued by [`CA`].
pub const SERVER: &[u8] = include_bytes!("../../tests/certs/server.pem");
/// The key of [`SERVER`].
pub const SERVER_KEY: &[u8] = include_bytes!("../../tests/certs/server.key");
/// A server certificate issued by [`INTER`] (the leaf alone: chain tests add [`INTER`]).
pub const CHAIN_SERVER: &[u8] = include_bytes!("../../tests/certs/chain-server.pem");
/// The key of [`CHAIN_SERVER`].
pub const CHAIN_SERVER_KEY: &[u8] = include_bytes!("../../tests/certs/chain-server.key");
/// An RSA server certificate, issued by [`CA`].
pub const SERVER_RSA: &[u8] = include_bytes!("../../tests/certs/server-rsa.pem");
/// The key of [`SERVER_RSA`].
pub const SERVER_RSA_KEY: &[u8] = include_bytes!("../../tests/certs/server-rsa.key");
/// A client certificate, issued by [`CA`].
pub const CLIENT: &[u8] = include_bytes!("../../tests/certs/client.pem");
/// The key of [`CLIENT`].
pub const CLIENT_KEY: &[u8] = include_bytes!("../../tests/certs/client.key");
/// A self-signed client certificate (trusted by no CA here).
pub const SELFSIGNED: &[u8] = include_bytes!("../../tests/certs/selfsigned.pem");
/// The key of [`SELFSIGNED`].
pub const SELFSIGNED_KEY: &[u8] = include_bytes!("../../tests/certs/selfsigned.key");

/// The standard server config: [`SERVER`] and its key, everything else default.
pub fn server() -> ConfigBuilder<Server> {
    ServerConfig::builder()
        .certificate_chain_pem(SERVER)
        .private_key_pem(SERVER_KEY)
}

/// The standard client config: trusts [`CA`], expects the name `localhost`.
pub fn client() -> ConfigBuilder<Client> {
    ClientConfig::builder().ca_pem(CA).server_name("localhost")
}
