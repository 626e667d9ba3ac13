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

    proptest! {
        #[test]
        fn never_panics(d in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = classify(&d);
        }
    }
}
