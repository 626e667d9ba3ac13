//! `PeerCertificate`: the peer's certificate as users look at it.

use std::fmt;

use openssl::nid::Nid;
use openssl::x509::{X509NameRef, X509};

/// The peer's certificate, with the fields people usually look at.
#[derive(Clone)]
pub struct PeerCertificate {
    pub(crate) x509: X509,
}

impl fmt::Debug for PeerCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerCertificate")
            .field("subject", &self.subject())
            .field("issuer", &self.issuer())
            .field("subject_alt_names", &self.subject_alt_names())
            .field("not_after", &self.not_after())
            .finish()
    }
}

fn name_entries(name: &X509NameRef) -> Vec<(String, String)> {
    name.entries()
        .map(|e| {
            let key = e
                .object()
                .nid()
                .short_name()
                .map(str::to_string)
                .unwrap_or_else(|_| e.object().to_string());
            let val = e
                .data()
                .to_string()
                .unwrap_or_else(|_| String::from_utf8_lossy(e.data().as_slice()).into_owned());
            (key, val)
        })
        .collect()
}

impl PeerCertificate {
    /// The certificate in DER.
    pub fn to_der(&self) -> Vec<u8> {
        self.x509.to_der().unwrap_or_default()
    }
    /// The certificate in PEM.
    pub fn to_pem(&self) -> Vec<u8> {
        self.x509.to_pem().unwrap_or_default()
    }
    /// Subject name entries as (short name, value), e.g. `("CN", "localhost")`.
    pub fn subject(&self) -> Vec<(String, String)> {
        name_entries(self.x509.subject_name())
    }
    /// The subject's common name, if any.
    pub fn common_name(&self) -> Option<String> {
        self.x509
            .subject_name()
            .entries_by_nid(Nid::COMMONNAME)
            .next()
            .and_then(|e| e.data().to_string().ok())
    }
    /// Issuer name entries as (short name, value).
    pub fn issuer(&self) -> Vec<(String, String)> {
        name_entries(self.x509.issuer_name())
    }
    /// subjectAltName entries: `DNS:name`, `IP:addr`, `email:...`, `URI:...`.
    pub fn subject_alt_names(&self) -> Vec<String> {
        let Some(names) = self.x509.subject_alt_names() else {
            return Vec::new();
        };
        names
            .iter()
            .filter_map(|g| {
                if let Some(d) = g.dnsname() {
                    Some(format!("DNS:{d}"))
                } else if let Some(ip) = g.ipaddress() {
                    match ip.len() {
                        4 => Some(format!(
                            "IP:{}",
                            std::net::Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3])
                        )),
                        16 => {
                            let mut b = [0u8; 16];
                            b.copy_from_slice(ip);
                            Some(format!("IP:{}", std::net::Ipv6Addr::from(b)))
                        }
                        _ => None,
                    }
                } else if let Some(e) = g.email() {
                    Some(format!("email:{e}"))
                } else {
                    g.uri().map(|u| format!("URI:{u}"))
                }
            })
            .collect()
    }
    /// Start of validity, as OpenSSL prints it (`Jan  1 00:00:00 2026 GMT`).
    pub fn not_before(&self) -> String {
        self.x509.not_before().to_string()
    }
    /// End of validity.
    pub fn not_after(&self) -> String {
        self.x509.not_after().to_string()
    }
    /// The rust-openssl certificate, for anything else.
    pub fn x509(&self) -> &X509 {
        &self.x509
    }
}
