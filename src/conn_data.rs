//! An established [`Connection`]'s application data, both ways
//! ([`Connection::recv`], [`Connection::send`]), and the peer's records that
//! are not data: alerts, and a retransmission of the peer's final flight,
//! which this side answers with its own last flight. A datagram of such
//! records alone is acted on as soon as it is fed (`act_on_arrival`), so a
//! peer that lost this side's last handshake flight completes its handshake
//! whether or not the application ever reads.

use openssl::ssl::ErrorCode;

use crate::conn::{Connection, Tls};
use crate::conn_state::{CloseReason, Event, State};
use crate::error::{Error, Result};
use crate::established::Got;
use crate::ssl_error::{map_ssl_error, would_block};

/// Whether a read takes the application data it finds or leaves it queued.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Take {
    Data,
    /// Act on the records met (alerts, a retransmitted Finished) and leave
    /// any data where it is.
    Nothing,
}

impl Connection {
    /// Reads one datagram of plaintext into `buf` (use a buffer of at least
    /// [`Self::data_mtu`] bytes: the rest of a longer record waits for the next
    /// call). `Ok(None)` when nothing is readable now.
    /// [`Error::ClosedByPeer`] once the peer's close_notify arrived; this
    /// side answers it with its own close_notify.
    pub fn recv(&mut self, buf: &mut [u8]) -> Result<Option<usize>> {
        match &self.state {
            State::Handshaking => {
                self.drive()?;
                if self.state == State::Handshaking {
                    return Ok(None);
                }
            }
            State::Established => {}
            State::Closed(CloseReason::Local) if !self.close_received => {}
            State::Closed(_) => return Err(self.closed_error()),
        }
        if buf.is_empty() {
            return Ok(None);
        }
        self.read(buf, Take::Data)
    }

    /// Whether a datagram about to be queued on an established session is
    /// one to act on at once: records that are not application data (a
    /// retransmitted final flight, an alert), with nothing queued or read in
    /// part ahead of it, so acting on it now keeps the order of the peer's
    /// records.
    pub(crate) fn acts_on_arrival(&self, application_records: usize) -> bool {
        if self.state != State::Established || application_records != 0 {
            return false;
        }
        match &self.tls {
            Tls::Ssl(s) => s.get_ref().inbound.is_empty() && s.ssl().pending() == 0,
            Tls::Own(e) => !e.has_pending(),
        }
    }

    /// Whether the peer may still lack this side's last handshake flight:
    /// this side sent it (the server of a full handshake, the client of an
    /// abbreviated one), nothing the peer sent since shows it arrived (no
    /// application record yet), and the peer may still be retransmitting its
    /// own final flight for it (within the handshake timeout after the
    /// handshake). An owner that reads only when its application does (the
    /// socket API) reads now and then while this holds, so that such a
    /// retransmission is answered.
    #[cfg(feature = "socket")]
    pub(crate) fn peer_may_lack_last_flight(&self) -> bool {
        let Some(until) = self.answer_until else {
            return false;
        };
        let unconfirmed = match &self.tls {
            Tls::Own(e) => e.keeps_last_flight(),
            Tls::Ssl(s) => s.get_ref().app_records_read == 0,
        };
        unconfirmed && self.state == State::Established && std::time::Instant::now() < until
    }

    /// Acts on the datagram just queued (see [`Self::acts_on_arrival`]):
    /// answers a retransmitted final flight with this side's last flight,
    /// closes on close_notify (answering it), fails on a fatal alert. What
    /// ends the session is reported by the next call, as if `recv` had met it.
    pub(crate) fn act_on_arrival(&mut self) {
        let _ = self.read(&mut [], Take::Nothing);
    }

    /// Reads records from the receive queue into `buf` (nothing is taken
    /// with [`Take::Nothing`]; `buf` may then be empty).
    fn read(&mut self, buf: &mut [u8], take: Take) -> Result<Option<usize>> {
        self.restore_buffers()?;
        let stream = match &mut self.tls {
            Tls::Ssl(s) => s,
            Tls::Own(_) => return self.read_own(buf, take),
        };
        // The rest of a record read in part is not a new record.
        let continues = stream.ssl().pending() > 0;
        // Reading may answer a retransmitted flight of the peer's with this
        // side's last flight: packed like any flight.
        stream.get_mut().begin_flight();
        let r = match take {
            Take::Data => stream.ssl_read(buf),
            // Peeking leaves any data in OpenSSL's buffer for the next read.
            Take::Nothing => stream.ssl_peek(&mut [0u8; 1]),
        };
        stream.get_mut().end_flight();
        match r {
            Ok(_) if take == Take::Nothing => Ok(None),
            Ok(n) => {
                if !continues {
                    self.app_records_delivered += 1;
                }
                Ok(Some(n))
            }
            Err(e) if would_block(&e) => {
                self.log_discards();
                Ok(None)
            }
            Err(e) => match e.code() {
                ErrorCode::ZERO_RETURN => {
                    if !self.close_sent {
                        let _ = stream.shutdown();
                    }
                    Err(self.closed_by_peer())
                }
                _ => {
                    let err = map_ssl_error(e, stream.ssl());
                    Err(self.fail(err))
                }
            },
        }
    }

    /// [`Self::read`] on the engine's record layer. With an empty `buf` it
    /// takes nothing: a record of data met stays where it is.
    fn read_own(&mut self, buf: &mut [u8], take: Take) -> Result<Option<usize>> {
        let Tls::Own(e) = &mut self.tls else {
            return Ok(None);
        };
        match e.recv(buf) {
            Got::Data { .. } if take == Take::Nothing => Ok(None),
            Got::Data { n, first } => {
                if first {
                    self.app_records_delivered += 1;
                }
                Ok(Some(n))
            }
            Got::Nothing => {
                self.log_discards();
                Ok(None)
            }
            Got::CloseNotify => {
                if !self.close_sent {
                    let _ = e.close();
                }
                Err(self.closed_by_peer())
            }
            Got::Failed(err) => Err(self.fail(err)),
        }
    }

    /// The peer's close_notify arrived (and this side's answer, unless it
    /// was sent before, was just queued by the record layer that read it):
    /// the connection is closed by the peer, for either record layer.
    fn closed_by_peer(&mut self) -> Error {
        self.close_received = true;
        self.close_sent = true;
        if !matches!(self.state, State::Closed(_)) {
            self.state = State::Closed(CloseReason::PeerClosed);
            self.events
                .push_back(Event::Closed(CloseReason::PeerClosed));
        }
        log::debug!("connection {:?}: close_notify received", self.peer);
        Error::ClosedByPeer
    }

    fn log_discards(&mut self) {
        let discarded = self.stats().discarded;
        if discarded > self.discards_logged {
            log::trace!(
                "connection {:?}: {} application record(s) discarded \
                 (forged, corrupted, replayed or wrong epoch)",
                self.peer,
                discarded - self.discards_logged
            );
            self.discards_logged = discarded;
        }
    }

    /// Seals one datagram of plaintext; the record is then in
    /// [`Self::poll_transmit`]. Larger than [`Self::data_mtu`] is an error,
    /// never a silent fragment. An empty slice sends nothing.
    pub fn send(&mut self, plaintext: &[u8]) -> Result<usize> {
        match &self.state {
            State::Established => {}
            State::Handshaking => return Err(Error::WouldBlock),
            State::Closed(_) => {
                return Err(if self.close_sent {
                    Error::Closed
                } else {
                    self.closed_error()
                })
            }
        }
        let mtu = self.data_mtu();
        if plaintext.len() > mtu {
            return Err(Error::TooLarge {
                len: plaintext.len(),
                mtu,
            });
        }
        if plaintext.is_empty() {
            return Ok(0);
        }
        self.restore_buffers()?;
        let r = match &mut self.tls {
            Tls::Own(e) => e.send(plaintext).map(|()| plaintext.len()),
            Tls::Ssl(stream) => stream
                .ssl_write(plaintext)
                .map_err(|e| map_ssl_error(e, stream.ssl())),
        };
        r.map_err(|e| self.fail(e))
    }
}
