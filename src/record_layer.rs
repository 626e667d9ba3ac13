//! `RecordLayer`: the engine's own DTLS 1.2 record protection for AEAD
//! suites, used once OpenSSL has finished a handshake (see
//! [`crate::established`]).
//!
//! No cryptography is written here. The keys come from OpenSSL's TLS 1.2 PRF
//! (`key expansion` over the session's master secret and the two randoms,
//! RFC 5246 section 6.3) and records are sealed and opened with OpenSSL's EVP
//! AEADs, one cipher context per direction kept for the session's life (the
//! key schedule is computed once; each record only sets its nonce).
//!
//! Record format (RFC 6347 section 4.1; RFC 5246 section 6.2.3.3):
//! header = type(1) version(2) epoch(2) sequence(6) length(2); the additional
//! data is epoch‖sequence(8) type version plaintext-length(2).
//! - AES-GCM (RFC 5288) and AES-CCM / CCM-8 (RFC 6655): nonce = 4-byte
//!   implicit salt from the key block ‖ 8-byte explicit nonce, which is
//!   epoch‖sequence and goes on the wire before the ciphertext; tag 16 bytes
//!   (CCM-8: 8).
//! - ChaCha20-Poly1305 (RFC 7905): nonce = the 12-byte IV XOR epoch‖sequence
//!   (left-padded with zeros); no explicit nonce; tag 16 bytes.

use openssl::cipher::{Cipher, CipherRef};
use openssl::cipher_ctx::CipherCtx;
use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::ssl::SslRef;

use crate::ffi;
use crate::record::RECORD_HEADER;
use crate::replay::ReplayWindow;
use crate::role::Role;

/// The DTLS 1.2 version on the wire.
pub(crate) const DTLS1_2: [u8; 2] = [0xfe, 0xfd];
/// The largest plaintext of one record (RFC 5246 section 6.2.1).
const MAX_PLAINTEXT: usize = 1 << 14;
/// The largest sequence number of an epoch (48 bits).
const MAX_SEQ: u64 = (1 << 48) - 1;

/// The AEAD suites the engine's record layer carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Aead {
    Aes128Gcm,
    Aes256Gcm,
    ChaCha20Poly1305,
    Aes128Ccm,
    Aes256Ccm,
    Aes128Ccm8,
    Aes256Ccm8,
}

impl Aead {
    /// The AEAD of a negotiated cipher suite, if it is one of ours.
    pub(crate) fn of(cipher: &openssl::ssl::SslCipherRef) -> Option<Aead> {
        let nid = cipher.cipher_nid()?;
        let ccm8 = cipher.name().contains("CCM8");
        Some(match nid {
            Nid::AES_128_GCM => Aead::Aes128Gcm,
            Nid::AES_256_GCM => Aead::Aes256Gcm,
            Nid::CHACHA20_POLY1305 => Aead::ChaCha20Poly1305,
            Nid::AES_128_CCM if ccm8 => Aead::Aes128Ccm8,
            Nid::AES_256_CCM if ccm8 => Aead::Aes256Ccm8,
            Nid::AES_128_CCM => Aead::Aes128Ccm,
            Nid::AES_256_CCM => Aead::Aes256Ccm,
            _ => return None,
        })
    }

    fn cipher(self) -> &'static CipherRef {
        match self {
            Aead::Aes128Gcm => Cipher::aes_128_gcm(),
            Aead::Aes256Gcm => Cipher::aes_256_gcm(),
            Aead::ChaCha20Poly1305 => Cipher::chacha20_poly1305(),
            Aead::Aes128Ccm | Aead::Aes128Ccm8 => Cipher::aes_128_ccm(),
            Aead::Aes256Ccm | Aead::Aes256Ccm8 => Cipher::aes_256_ccm(),
        }
    }

    fn key_len(self) -> usize {
        match self {
            Aead::Aes128Gcm | Aead::Aes128Ccm | Aead::Aes128Ccm8 => 16,
            _ => 32,
        }
    }

    /// The IV bytes per direction from the key block (RFC 5246 6.3's
    /// `fixed_iv_length`).
    fn fixed_iv_len(self) -> usize {
        if self == Aead::ChaCha20Poly1305 {
            12
        } else {
            4
        }
    }

    /// Bytes of explicit nonce on the wire before the ciphertext.
    pub(crate) fn explicit_len(self) -> usize {
        if self == Aead::ChaCha20Poly1305 {
            0
        } else {
            8
        }
    }

    pub(crate) fn tag_len(self) -> usize {
        match self {
            Aead::Aes128Ccm8 | Aead::Aes256Ccm8 => 8,
            _ => 16,
        }
    }

    fn is_ccm(self) -> bool {
        matches!(
            self,
            Aead::Aes128Ccm | Aead::Aes256Ccm | Aead::Aes128Ccm8 | Aead::Aes256Ccm8
        )
    }
}

/// What a session's record protection is derived from, kept for the RFC
/// 5705 exporter. The master secret is wiped when dropped.
pub(crate) struct Secrets {
    master: Vec<u8>,
    client_random: [u8; 32],
    server_random: [u8; 32],
    prf: MessageDigest,
}

impl Drop for Secrets {
    fn drop(&mut self) {
        ffi::cleanse(&mut self.master);
    }
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets(..)")
    }
}

impl Secrets {
    /// The established session's secrets, from OpenSSL.
    pub(crate) fn from_ssl(ssl: &SslRef) -> Option<Secrets> {
        let prf = ssl.current_cipher()?.handshake_digest()?;
        let session = ssl.session()?;
        let mut master = vec![0u8; session.master_key_len()];
        let n = session.master_key(&mut master);
        master.truncate(n);
        let mut client_random = [0u8; 32];
        let mut server_random = [0u8; 32];
        if n == 0
            || ssl.client_random(&mut client_random) != 32
            || ssl.server_random(&mut server_random) != 32
        {
            return None;
        }
        Some(Secrets {
            master,
            client_random,
            server_random,
            prf,
        })
    }

    /// RFC 5705: PRF(master, label, client_random ‖ server_random [‖ length
    /// ‖ context]).
    pub(crate) fn export(
        &self,
        out: &mut [u8],
        label: &str,
        context: Option<&[u8]>,
    ) -> Result<(), ErrorStack> {
        let mut seed = Vec::with_capacity(label.len() + 66 + context.map_or(0, <[u8]>::len));
        seed.extend_from_slice(label.as_bytes());
        seed.extend_from_slice(&self.client_random);
        seed.extend_from_slice(&self.server_random);
        if let Some(c) = context {
            let len = u16::try_from(c.len()).map_err(|_| ErrorStack::get())?;
            seed.extend_from_slice(&len.to_be_bytes());
            seed.extend_from_slice(c);
        }
        ffi::tls1_prf(self.prf, &self.master, &seed, out)
    }

    /// The key block of RFC 5246 section 6.3: PRF(master, "key expansion",
    /// server_random ‖ client_random).
    fn key_block(&self, len: usize) -> Result<Vec<u8>, ErrorStack> {
        let mut seed = Vec::with_capacity(13 + 64);
        seed.extend_from_slice(b"key expansion");
        seed.extend_from_slice(&self.server_random);
        seed.extend_from_slice(&self.client_random);
        let mut block = vec![0u8; len];
        ffi::tls1_prf(self.prf, &self.master, &seed, &mut block)?;
        Ok(block)
    }
}

/// One direction's protection: the cipher context with its key set, the
/// IV (salt) from the key block, and the epoch.
struct Direction {
    ctx: CipherCtx,
    iv: [u8; 12],
    epoch: u16,
}

impl Direction {
    fn new(aead: Aead, key: &[u8], iv: &[u8], epoch: u16, seal: bool) -> Result<Self, ErrorStack> {
        let mut ctx = CipherCtx::new()?;
        let init = |ctx: &mut CipherCtx,
                    c: Option<&CipherRef>,
                    k: Option<&[u8]>|
         -> Result<(), ErrorStack> {
            if seal {
                ctx.encrypt_init(c, k, None)
            } else {
                ctx.decrypt_init(c, k, None)
            }
        };
        init(&mut ctx, Some(aead.cipher()), None)?;
        ctx.set_iv_length(12)?;
        if aead.is_ccm() {
            // CCM fixes its tag length before the key.
            ctx.set_tag_length(aead.tag_len())?;
        }
        init(&mut ctx, None, Some(key))?;
        let mut full = [0u8; 12];
        full[..iv.len()].copy_from_slice(iv);
        Ok(Direction {
            ctx,
            iv: full,
            epoch,
        })
    }

    /// The nonce of record `epoch‖seq` (`es`, 8 bytes big-endian).
    fn nonce(&self, aead: Aead, es: [u8; 8]) -> [u8; 12] {
        let mut n = self.iv;
        if aead == Aead::ChaCha20Poly1305 {
            for (b, e) in n[4..].iter_mut().zip(es) {
                *b ^= e;
            }
        } else {
            n[4..].copy_from_slice(&es);
        }
        n
    }
}

/// The additional data of a record: epoch‖seq, type, version, plaintext length.
fn aad(es: [u8; 8], ty: u8, version: [u8; 2], len: usize) -> [u8; 13] {
    let mut a = [0u8; 13];
    a[..8].copy_from_slice(&es);
    a[8] = ty;
    a[9..11].copy_from_slice(&version);
    a[11..].copy_from_slice(&(len as u16).to_be_bytes());
    a
}

fn epoch_seq(epoch: u16, seq: u64) -> [u8; 8] {
    (u64::from(epoch) << 48 | seq).to_be_bytes()
}

/// What opening a record gave.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Opened {
    /// Authentic: content type and where its plaintext lies in the record
    /// buffer (decrypted in place).
    Plain { ty: u8, at: usize, len: usize },
    /// A record of the epoch before the current one (the handshake's
    /// epoch 0): not protected, never opened; the caller decides.
    OldEpoch,
    /// Thrown away: wrong epoch or version, replayed or too old, too short,
    /// failed authentication.
    Discard(&'static str),
    /// Authentic, but its plaintext is longer than a record may carry: a
    /// fatal record_overflow, as OpenSSL treats it.
    Overflow,
}

/// Why a record could not be sealed.
#[derive(Debug)]
pub(crate) enum SealError {
    /// The epoch's 2^48 sequence numbers are used up.
    Exhausted,
    /// OpenSSL's AEAD failed.
    Ssl(ErrorStack),
}

/// The record protection of one established DTLS 1.2 session.
pub(crate) struct RecordLayer {
    aead: Aead,
    write: Direction,
    /// The next sequence number this side writes.
    write_seq: u64,
    read: Direction,
    window: ReplayWindow,
}

impl std::fmt::Debug for RecordLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordLayer")
            .field("aead", &self.aead)
            .field("write_epoch", &self.write.epoch)
            .field("write_seq", &self.write_seq)
            .field("read_epoch", &self.read.epoch)
            .finish_non_exhaustive()
    }
}

impl RecordLayer {
    /// The record layer of an established session, keys from `secrets`;
    /// this side writes `epoch` from `write_seq` on and reads `epoch`.
    pub(crate) fn new(
        aead: Aead,
        secrets: &Secrets,
        role: Role,
        epoch: u16,
        write_seq: u64,
    ) -> Result<Self, ErrorStack> {
        let (k, iv) = (aead.key_len(), aead.fixed_iv_len());
        let block = secrets.key_block(2 * (k + iv))?;
        let (client_key, rest) = block.split_at(k);
        let (server_key, rest) = rest.split_at(k);
        let (client_iv, server_iv) = rest.split_at(iv);
        let (wk, wiv, rk, riv) = match role {
            Role::Client => (client_key, client_iv, server_key, server_iv),
            Role::Server => (server_key, server_iv, client_key, client_iv),
        };
        let layer = RecordLayer {
            aead,
            write: Direction::new(aead, wk, wiv, epoch, true)?,
            write_seq,
            read: Direction::new(aead, rk, riv, epoch, false)?,
            window: ReplayWindow::new(),
        };
        // The key block is wiped with its buffer.
        let mut block = block;
        ffi::cleanse(&mut block);
        Ok(layer)
    }

    pub(crate) fn aead(&self) -> Aead {
        self.aead
    }

    /// Appends one record of type `ty` holding `plain` to `out`.
    pub(crate) fn seal(
        &mut self,
        ty: u8,
        plain: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), SealError> {
        if self.write_seq > MAX_SEQ {
            return Err(SealError::Exhausted);
        }
        let aead = self.aead;
        let es = epoch_seq(self.write.epoch, self.write_seq);
        let body = aead.explicit_len() + plain.len() + aead.tag_len();
        let start = out.len();
        out.push(ty);
        out.extend_from_slice(&DTLS1_2);
        out.extend_from_slice(&es);
        out.extend_from_slice(&(body as u16).to_be_bytes());
        if aead.explicit_len() > 0 {
            out.extend_from_slice(&es);
        }
        let at = out.len();
        out.extend_from_slice(plain);
        out.resize(at + plain.len() + aead.tag_len(), 0);
        let nonce = self.write.nonce(aead, es);
        let r = (|| {
            let ctx = &mut self.write.ctx;
            ctx.encrypt_init(None, None, Some(&nonce))?;
            if aead.is_ccm() {
                ctx.set_data_len(plain.len())?;
            }
            ctx.cipher_update(&aad(es, ty, DTLS1_2, plain.len()), None)?;
            let (data, tag) = out[at..].split_at_mut(plain.len());
            ctx.cipher_update_inplace(data, plain.len())?;
            ctx.cipher_final(&mut [])?;
            ctx.tag(tag)
        })();
        match r {
            Ok(()) => {
                self.write_seq += 1;
                Ok(())
            }
            Err(e) => {
                out.truncate(start);
                Err(SealError::Ssl(e))
            }
        }
    }

    /// Opens one whole record (`rec`: header and body, as the datagram
    /// parse found it) in place. Checks, in OpenSSL's order: version, epoch,
    /// replay window, length, authentication; an authentic record moves the
    /// window.
    pub(crate) fn open(&mut self, rec: &mut [u8]) -> Opened {
        self.open_to(rec, None)
    }

    /// [`Self::open`], the plaintext written to the start of `out` instead
    /// of in place (`out` holds at least the record's plaintext: the body
    /// less the AEAD's overhead). Saves a copy when the caller's buffer is
    /// the destination.
    pub(crate) fn open_into(&mut self, rec: &mut [u8], out: &mut [u8]) -> Opened {
        self.open_to(rec, Some(out))
    }

    fn open_to(&mut self, rec: &mut [u8], out: Option<&mut [u8]>) -> Opened {
        let aead = self.aead;
        let ty = rec[0];
        let version = [rec[1], rec[2]];
        let epoch = u16::from_be_bytes([rec[3], rec[4]]);
        let mut s = [0u8; 8];
        s[2..].copy_from_slice(&rec[5..11]);
        let seq = u64::from_be_bytes(s);
        if version != DTLS1_2 {
            return Opened::Discard("version");
        }
        if epoch != self.read.epoch {
            if epoch.wrapping_add(1) == self.read.epoch {
                return Opened::OldEpoch;
            }
            return Opened::Discard("epoch");
        }
        if !self.window.check(seq) {
            return Opened::Discard("replayed or too old");
        }
        let body = rec.len() - RECORD_HEADER;
        let Some(len) = body.checked_sub(aead.explicit_len() + aead.tag_len()) else {
            return Opened::Discard("shorter than the AEAD's overhead");
        };
        let at = RECORD_HEADER + aead.explicit_len();
        let mut es = [0u8; 8];
        es.copy_from_slice(&rec[3..11]);
        let nonce = if aead.explicit_len() > 0 {
            // The nonce's explicit part is what the record says, whatever it is.
            let mut n = self.read.iv;
            n[4..].copy_from_slice(&rec[RECORD_HEADER..at]);
            n
        } else {
            self.read.nonce(aead, es)
        };
        let ctx = &mut self.read.ctx;
        let mut run = |out: Option<&mut [u8]>| -> Result<(), ErrorStack> {
            ctx.decrypt_init(None, None, Some(&nonce))?;
            ctx.set_tag(&rec[at + len..])?;
            if aead.is_ccm() {
                ctx.set_data_len(len)?;
            }
            ctx.cipher_update(&aad(es, ty, version, len), None)?;
            match out {
                Some(o) => ctx.cipher_update(&rec[at..at + len], Some(&mut o[..len]))?,
                None => ctx.cipher_update_inplace(&mut rec[at..at + len], len)?,
            };
            ctx.cipher_final(&mut [])?;
            Ok(())
        };
        let failed = match out {
            Some(o) => {
                let failed = run(Some(&mut *o)).is_err();
                if failed {
                    // No unauthenticated plaintext left in the caller's buffer.
                    o[..len].fill(0);
                }
                failed
            }
            None => run(None).is_err(),
        };
        if failed {
            return Opened::Discard("failed authentication");
        }
        if len > MAX_PLAINTEXT {
            return Opened::Overflow;
        }
        self.window.mark(seq);
        Opened::Plain { ty, at, len }
    }
}

/// The epoch and sequence number of a record header.
pub(crate) fn header_epoch_seq(rec: &[u8]) -> Option<(u16, u64)> {
    if rec.len() < RECORD_HEADER {
        return None;
    }
    let epoch = u16::from_be_bytes([rec[3], rec[4]]);
    let mut s = [0u8; 8];
    s[2..].copy_from_slice(&rec[5..11]);
    Some((epoch, u64::from_be_bytes(s)))
}
