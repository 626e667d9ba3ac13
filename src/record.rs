//! Just enough DTLS record parsing to sort datagrams before OpenSSL sees them,
//! done once per datagram: [`Datagram::parse`] walks the record headers and
//! keeps what the front door and a connection need to know.

/// DTLS record header length: type, version, epoch, sequence number, length.
pub(crate) const RECORD_HEADER: usize = 13;

/// Where the first record of `d` ends, by its header's length field (beyond
/// `d`'s end when the record is cut short); `None` without a whole header.
pub(crate) fn record_end(d: &[u8]) -> Option<usize> {
    let len = d.get(11..RECORD_HEADER)?;
    Some(RECORD_HEADER + usize::from(u16::from_be_bytes([len[0], len[1]])))
}
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

/// A received datagram with its record headers checked, once.
///
/// Nothing beyond the datagram is trusted: every length is checked against
/// what arrived. The view says whether the datagram is a sequence of whole
/// DTLS records (known content type, DTLS version, each length inside the
/// datagram), how many of them are application data, the shortest protected
/// (epoch above 0) record body, and what its first record is: a ClientHello
/// (with its client random, and whether it carries a cookie, when the hello
/// is not fragmented) or not.
///
/// ```
/// use dtls_reactor::Datagram;
/// let d = Datagram::parse(&[23, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 1, 0, 2, 9, 9]);
/// assert!(d.is_whole());
/// assert_eq!(d.application_records(), 1);
/// assert!(!d.is_client_hello());
/// assert!(!Datagram::parse(b"garbage").is_whole());
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Datagram<'a> {
    bytes: &'a [u8],
    whole: bool,
    app: u32,
    min_protected: Option<usize>,
    first: Kind,
    random: Option<[u8; 32]>,
    cookie: bool,
}

impl<'a> Datagram<'a> {
    /// Walks the record headers of `bytes`.
    pub fn parse(bytes: &'a [u8]) -> Self {
        let mut d = Datagram {
            bytes,
            whole: !bytes.is_empty(),
            app: 0,
            min_protected: None,
            first: Kind::Other,
            random: None,
            cookie: false,
        };
        let mut rest = bytes;
        while !rest.is_empty() {
            if rest.len() < RECORD_HEADER || !TYPES.contains(&rest[0]) || rest[1] != 0xfe {
                d.whole = false;
                break;
            }
            let len = usize::from(u16::from_be_bytes([rest[11], rest[12]]));
            let end = RECORD_HEADER + len;
            if end > rest.len() {
                d.whole = false;
                break;
            }
            if u16::from_be_bytes([rest[3], rest[4]]) > 0 {
                d.min_protected = Some(d.min_protected.map_or(len, |m: usize| m.min(len)));
            }
            if rest[0] == CONTENT_APPLICATION_DATA {
                d.app += 1;
            }
            rest = &rest[end..];
        }
        d.first = classify(bytes);
        if d.first == Kind::ClientHello {
            d.random = client_random(bytes);
            d.cookie = carries_cookie(bytes);
        }
        d
    }

    /// The datagram's bytes.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// True when the datagram is one or more whole DTLS records.
    pub fn is_whole(&self) -> bool {
        self.whole
    }

    /// How many application-data records it holds (0 unless whole).
    pub fn application_records(&self) -> usize {
        if self.whole {
            self.app as usize
        } else {
            0
        }
    }

    /// The shortest body of a protected (epoch above 0) record, among the
    /// records read before the framing broke; `None` when there is none.
    pub fn min_protected_body(&self) -> Option<usize> {
        self.min_protected
    }

    /// True when the first record is an epoch-0 handshake record holding (a
    /// fragment of) a ClientHello.
    pub fn is_client_hello(&self) -> bool {
        self.first == Kind::ClientHello
    }

    /// The first record's kind.
    pub(crate) fn kind(&self) -> Kind {
        self.first
    }

    /// The client random of an unfragmented ClientHello.
    pub fn client_random(&self) -> Option<[u8; 32]> {
        self.random
    }

    /// True when the datagram starts with an unfragmented ClientHello whose
    /// cookie is not empty.
    pub fn carries_cookie(&self) -> bool {
        self.cookie
    }
}

/// Classifies the first record of `d` without trusting any length beyond `d`.
fn classify(d: &[u8]) -> Kind {
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

/// True when `d`, whose first record is an epoch-0 ClientHello, holds it
/// unfragmented.
fn whole_client_hello(d: &[u8]) -> bool {
    d.get(RECORD_HEADER + 6..RECORD_HEADER + 9) == Some(&[0, 0, 0][..])
}

/// The client random of `d`, which starts with an epoch-0 ClientHello, when
/// the hello is unfragmented and its record holds one.
fn client_random(d: &[u8]) -> Option<[u8; 32]> {
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

/// True when `d`, which starts with an epoch-0 ClientHello, holds it
/// unfragmented with a cookie that is not empty.
fn carries_cookie(d: &[u8]) -> bool {
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

    fn kind(d: &[u8]) -> Kind {
        Datagram::parse(d).kind()
    }

    #[test]
    fn sorts_records() {
        assert_eq!(kind(&hello()), Kind::ClientHello);
        let mut other = hello();
        other[RECORD_HEADER] = 2;
        assert_eq!(kind(&other), Kind::OtherHandshake);
        let mut appdata = hello();
        appdata[0] = 23;
        assert_eq!(kind(&appdata), Kind::Other);
        let mut epoch1 = hello();
        epoch1[4] = 1;
        assert_eq!(kind(&epoch1), Kind::Other);
        let mut long = hello();
        long[12] = 200;
        assert_eq!(kind(&long), Kind::Other, "length past the datagram");
        for n in 0..hello().len() {
            assert_eq!(kind(&hello()[..n]), Kind::Other, "truncated to {n}");
        }
    }

    #[test]
    fn counts_whole_records() {
        let one = hello();
        let h = Datagram::parse(&one);
        assert!(h.is_whole());
        assert_eq!(h.application_records(), 0);
        assert_eq!(h.min_protected_body(), None, "epoch 0 is not protected");
        let mut two = hello();
        let mut app = vec![23, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 1, 0, 3, 9, 9, 9];
        two.append(&mut app.clone());
        let t = Datagram::parse(&two);
        assert!(t.is_whole());
        assert_eq!(t.application_records(), 1);
        assert_eq!(t.min_protected_body(), Some(3));
        assert!(t.is_client_hello(), "the first record decides");
        assert!(!Datagram::parse(&[]).is_whole());
        for n in 1..two.len() {
            if n != hello().len() {
                let cut = Datagram::parse(&two[..n]);
                assert!(!cut.is_whole(), "cut at {n}");
                assert_eq!(cut.application_records(), 0, "cut at {n}");
            }
        }
        app[0] = 24;
        assert!(!Datagram::parse(&app).is_whole(), "unknown content type");
        app[0] = 23;
        app[1] = 0x03;
        assert!(!Datagram::parse(&app).is_whole(), "TLS version");
    }

    #[test]
    fn hello_facts() {
        // A ClientHello body: version, random, session id (0), cookie (2 bytes).
        let mut body = vec![0xfe, 0xfd];
        body.extend_from_slice(&[7; 32]);
        body.extend_from_slice(&[0, 2, 0xaa, 0xbb]);
        let n = body.len() as u8;
        let mut d = vec![22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 12 + n];
        d.extend_from_slice(&[1, 0, 0, n, 0, 0, 0, 0, 0, 0, 0, n]);
        d.extend_from_slice(&body);
        let v = Datagram::parse(&d);
        assert!(v.is_client_hello() && v.carries_cookie());
        assert_eq!(v.client_random(), Some([7; 32]));
        // Fragmented: neither random nor cookie is trusted.
        let mut frag = d.clone();
        frag[RECORD_HEADER + 8] = 1;
        let f = Datagram::parse(&frag);
        assert!(f.is_client_hello() && !f.carries_cookie());
        assert_eq!(f.client_random(), None);
        // Empty cookie.
        let mut plain = d.clone();
        plain[RECORD_HEADER + HANDSHAKE_HEADER + 2 + 32 + 1] = 0;
        assert!(!Datagram::parse(&plain).carries_cookie());
        for cut in 0..d.len() {
            let c = Datagram::parse(&d[..cut]);
            assert!(
                !c.carries_cookie() && c.client_random().is_none(),
                "cut at {cut}"
            );
        }
    }

    proptest! {
        #[test]
        fn never_panics(d in proptest::collection::vec(any::<u8>(), 0..64)) {
            let v = Datagram::parse(&d);
            prop_assert!(v.application_records() * RECORD_HEADER <= d.len());
            if v.carries_cookie() || v.client_random().is_some() {
                prop_assert!(v.is_client_hello());
            }
        }
    }
}
