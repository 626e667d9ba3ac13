//! Shared helpers of the integration tests: the test scaffolding of `dtls-test-support`
//! (`test-support/`: the variants and `four_ways!`, the test PKI and standard configs, the
//! in-memory pair driver) under its old names here, and the fault-injecting relay.
#![allow(dead_code, unused_imports)]

pub mod final_flight;
pub mod relay;

pub use dtls_test_support::pair::{echo, handshake, handshake_with, peer, transfer, Dir, Pair};
pub use dtls_test_support::pki::*;
pub use dtls_test_support::{four_ways, six_ways, Variant};
