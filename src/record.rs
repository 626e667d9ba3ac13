//! Just enough DTLS record parsing to sort datagrams before OpenSSL sees them.

/// DTLS record header length: type, version, epoch, sequence number, length.
pub(crate) const RECORD_HEADER: usize = 13;
/// DTLS handshake header length: type, length, message_seq, fragment offset/length.
pub(crate) const HANDSHAKE_HEADER: usize = 12;
const CONTENT_HANDSHAKE: u8 = 22;
const CLIENT_HELLO: u8 = 1;

/// What the first record of a datagram is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// An epoch-0 handshake record carrying (a fragment of) a ClientHello.
    ClientHello,
    /// Some other plaintext handshake message.
    OtherHandshake,
    /// Not a well-formed handshake record.
    Other,
}

/// Content types a DTLS 1.0/1.2 peer may send: change_cipher_spec, alert,
/// handshake, application_data.
const TYPES: std::ops::RangeInclusive<u8> = 20..=23;
/// Application data content type.
pub(crate) const CONTENT_APPLICATION_DATA: u8 = 23;

/// Checks that `d` is a sequence of whole DTLS records (known content type,
/// DTLS version, length inside the datagram, and for protected records,
/// epoch above 0, a body of at least `min_protected` bytes) and returns how
/// many of them are application data; `None` when the framing is broken.
/// Nothing beyond `d` is trusted.
pub(crate) fn frames(d: &[u8], min_protected: usize) -> Option<usize> {
    let mut rest = d;
    let mut app = 0;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        if rest.len() < RECORD_HEADER || !TYPES.contains(&rest[0]) || rest[1] != 0xfe {
            return None;
        }
        let len = usize::from(u16::from_be_bytes([rest[11], rest[12]]));
        let end = RECORD_HEADER.checked_add(len)?;
        if end > rest.len() {
            return None;
        }
        let epoch = u16::from_be_bytes([rest[3], rest[4]]);
        if epoch > 0 && len < min_protected {
            return None;
        }
        if rest[0] == CONTENT_APPLICATION_DATA {
            app += 1;
        }
        rest = &rest[end..];
    }
    Some(app)
}

/// Whether any record in `d` (walked as far as its framing holds) is
/// protected (epoch above 0).
pub(crate) fn has_protected(d: &[u8]) -> bool {
    let mut rest = d;
    while rest.len() >= RECORD_HEADER {
        if u16::from_be_bytes([rest[3], rest[4]]) > 0 {
            return true;
        }
        let len = usize::from(u16::from_be_bytes([rest[11], rest[12]]));
        rest = rest.get(RECORD_HEADER + len..).unwrap_or(&[]);
    }
    false
}

/// Classifies the first record of `d` without trusting any length beyond `d`.
pub(crate) fn classify(d: &[u8]) -> Kind {
    if d.len() < RECORD_HEADER + HANDSHAKE_HEADER {
        return Kind::Other;
    }
    // Version major byte is 0xfe for every DTLS version.
    if d[0] != CONTENT_HANDSHAKE || d[1] != 0xfe {
        return Kind::Other;
    }
    let epoch = u16::from_be_bytes([d[3], d[4]]);
    let len = usize::from(u16::from_be_bytes([d[11], d[12]]));
    if epoch != 0 || len < HANDSHAKE_HEADER || RECORD_HEADER + len > d.len() {
        return Kind::Other;
    }
    if d[RECORD_HEADER] == CLIENT_HELLO {
        Kind::ClientHello
    } else {
        Kind::OtherHandshake
    }
}

#[cfg(any(feature = "socket", feature = "reactor"))]
/// True when `d` starts with an epoch-0 ClientHello that is not fragmented.
fn whole_client_hello(d: &[u8]) -> bool {
    classify(d) == Kind::ClientHello
        && d.get(RECORD_HEADER + 6..RECORD_HEADER + 9) == Some(&[0, 0, 0][..])
}

#[cfg(any(feature = "socket", feature = "reactor"))]
/// The client random of `d` when it starts with an unfragmented epoch-0
/// ClientHello whose record holds one. Reads nothing beyond `d`.
pub(crate) fn client_random(d: &[u8]) -> Option<[u8; 32]> {
    if !whole_client_hello(d) {
        return None;
    }
    // After client_version (2 bytes); the random must lie inside the record.
    let at = RECORD_HEADER + HANDSHAKE_HEADER + 2;
    let record_end = RECORD_HEADER + usize::from(u16::from_be_bytes([d[11], d[12]]));
    if at + 32 > record_end {
        return None;
    }
    d.get(at..at + 32)?.try_into().ok()
}

#[cfg(any(feature = "socket", feature = "reactor"))]
/// True when `d` starts with an unfragmented epoch-0 ClientHello whose cookie
/// is not empty. Reads nothing beyond `d`.
pub(crate) fn carries_cookie(d: &[u8]) -> bool {
    if !whole_client_hello(d) {
        return false;
    }
    // client_version (2), random (32), session_id (1 + n), cookie (1 + n).
    let sid_at = RECORD_HEADER + HANDSHAKE_HEADER + 2 + 32;
    let Some(&sid_len) = d.get(sid_at) else {
        return false;
    };
    matches!(d.get(sid_at + 1 + usize::from(sid_len)), Some(&n) if n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hello() -> Vec<u8> {
        let mut d = vec![22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 12];
        d.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        d
    }

    #[test]
    fn sorts_records() {
        assert_eq!(classify(&hello()), Kind::ClientHello);
        let mut other = hello();
        other[RECORD_HEADER] = 2;
        assert_eq!(classify(&other), Kind::OtherHandshake);
        let mut appdata = hello();
        appdata[0] = 23;
        assert_eq!(classify(&appdata), Kind::Other);
        let mut epoch1 = hello();
        epoch1[4] = 1;
        assert_eq!(classify(&epoch1), Kind::Other);
        let mut long = hello();
        long[12] = 200;
        assert_eq!(classify(&long), Kind::Other, "length past the datagram");
        for n in 0..hello().len() {
            assert_eq!(classify(&hello()[..n]), Kind::Other, "truncated to {n}");
        }
    }

    #[test]
    fn frames_counts_whole_records() {
        assert_eq!(frames(&hello(), 0), Some(0));
        let mut two = hello();
        let mut app = vec![23, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 1, 0, 3, 9, 9, 9];
        two.append(&mut app.clone());
        assert_eq!(frames(&two, 0), Some(1));
        assert_eq!(frames(&two, 3), Some(1));
        assert_eq!(frames(&two, 4), None, "protected body too short");
        assert_eq!(frames(&hello(), 100), Some(0), "epoch 0 is not protected");
        assert!(has_protected(&two) && !has_protected(&hello()));
        assert_eq!(frames(&[], 0), None);
        for n in 1..two.len() {
            if n != hello().len() {
                assert_eq!(frames(&two[..n], 0), None, "cut at {n}");
            }
        }
        app[0] = 24;
        assert_eq!(frames(&app, 0), None, "unknown content type");
        app[0] = 23;
        app[1] = 0x03;
        assert_eq!(frames(&app, 0), None, "TLS version");
    }

    proptest! {
        #[test]
        fn never_panics(d in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = classify(&d);
            if let Some(app) = frames(&d, 0) {
                prop_assert!(app * RECORD_HEADER <= d.len());
            }
            let _ = has_protected(&d);
        }
    }
}
