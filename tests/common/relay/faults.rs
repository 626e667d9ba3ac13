//! The relay's fault decisions: the deterministic PRNG, the fault
//! probabilities of one direction (and their `drop=0.3,...` spec), and
//! [`decide`], which draws and applies the faults of one datagram, always
//! with the same number of draws.
//!
//! Faults, in the order they are applied to one datagram:
//! 1. drop: the datagram goes nowhere;
//! 2. truncate: cut to a random length below its own (possibly 0);
//! 3. corrupt: 1 to 4 random bytes XORed with a non-zero value;
//! 4. duplicate: a copy is sent at once, the original goes on;
//! 5. delay: sent after a random time in 1 ms ..= `max_delay` (datagrams
//!    behind it overtake it), or else
//! 6. reorder: held until the next datagram of the same client and
//!    direction has been sent (or `reorder_hold` passed), then sent.

use std::str::FromStr;
use std::time::Duration;

/// A small deterministic PRNG: splitmix64 to seed, xorshift64* to run.
#[derive(Clone, Debug)]
pub struct Rng(u64);

/// One step of splitmix64 (also a good 64-bit mixer).
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    /// A generator whose sequence depends only on `seed`.
    pub fn new(seed: u64) -> Rng {
        // xorshift must not start at 0.
        Rng(splitmix64(seed) | 1)
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
    /// True with probability `p` (one draw, whatever `p` is).
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
    /// Uniform in 0..n (0 when n is 0; one draw either way).
    pub fn below(&mut self, n: u64) -> u64 {
        let r = self.next_u64();
        if n == 0 {
            0
        } else {
            r % n
        }
    }
}

/// Fault probabilities for one direction, each in 0.0..=1.0.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Faults {
    /// Lose the datagram.
    pub drop: f64,
    /// Send it twice.
    pub duplicate: f64,
    /// Hold it until the next datagram went out.
    pub reorder: f64,
    /// Send it late.
    pub delay: f64,
    /// Cut it short.
    pub truncate: f64,
    /// Flip some of its bytes.
    pub corrupt: f64,
}

impl Faults {
    /// No faults: a transparent relay.
    pub const NONE: Faults = Faults {
        drop: 0.0,
        duplicate: 0.0,
        reorder: 0.0,
        delay: 0.0,
        truncate: 0.0,
        corrupt: 0.0,
    };

    /// Only loss, with probability `p`.
    pub fn loss(p: f64) -> Faults {
        Faults {
            drop: p,
            ..Faults::NONE
        }
    }

    /// An error naming the first probability outside 0..=1.
    pub(super) fn check(&self) -> Result<(), String> {
        for (name, p) in [
            ("drop", self.drop),
            ("dup", self.duplicate),
            ("reorder", self.reorder),
            ("delay", self.delay),
            ("truncate", self.truncate),
            ("corrupt", self.corrupt),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(format!("{name}={p} is outside 0..=1"));
            }
        }
        Ok(())
    }
}

/// `drop=0.3,dup=0.1,reorder=0.1,delay=0.05,truncate=0,corrupt=0.01`: any
/// subset, the rest 0; `none` for no faults. Values are probabilities
/// (`0.3`) or percentages (`30%`).
impl FromStr for Faults {
    type Err = String;
    fn from_str(s: &str) -> Result<Faults, String> {
        let mut f = Faults::NONE;
        let s = s.trim();
        if s.is_empty() || s == "none" {
            return Ok(f);
        }
        for part in s.split(',') {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("`{part}`: expected name=probability"))?;
            let v = v.trim();
            let p = match v.strip_suffix('%') {
                Some(pct) => pct.trim().parse::<f64>().map(|x| x / 100.0),
                None => v.parse::<f64>(),
            }
            .map_err(|e| format!("`{part}`: {e}"))?;
            match k.trim() {
                "drop" | "loss" => f.drop = p,
                "dup" | "duplicate" => f.duplicate = p,
                "reorder" => f.reorder = p,
                "delay" => f.delay = p,
                "truncate" => f.truncate = p,
                "corrupt" => f.corrupt = p,
                other => return Err(format!("unknown fault `{other}`")),
            }
        }
        f.check()?;
        Ok(f)
    }
}

/// The faults decided for one datagram (what was applied, not only drawn).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Decision {
    /// Lost.
    pub drop: bool,
    /// Cut to this length.
    pub truncate: Option<usize>,
    /// Bytes XORed.
    pub corrupt: u8,
    /// An extra copy sent.
    pub duplicate: bool,
    /// Sent this many milliseconds late.
    pub delay_ms: Option<u64>,
    /// Held for reordering.
    pub reorder: bool,
}

/// Draws the faults of one datagram of `len` bytes, and applies truncation
/// and corruption to `data`. Always the same number of draws.
pub fn decide(rng: &mut Rng, f: &Faults, max_delay: Duration, data: &mut Vec<u8>) -> Decision {
    let len = data.len();
    let drop = rng.chance(f.drop);
    let truncate = rng.chance(f.truncate);
    let cut = rng.below(len as u64) as usize;
    let corrupt = rng.chance(f.corrupt);
    let flips = 1 + rng.below(4) as usize;
    let mut positions = [(0usize, 0u8); 4];
    for p in positions.iter_mut() {
        let at = rng.next_u64();
        let x = (rng.next_u64() % 255) as u8 + 1;
        *p = (at as usize, x);
    }
    let duplicate = rng.chance(f.duplicate);
    let delay = rng.chance(f.delay);
    let max_ms = max_delay.as_millis().max(1) as u64;
    let delay_ms = 1 + rng.below(max_ms);
    let reorder = rng.chance(f.reorder);

    let mut d = Decision::default();
    if drop {
        d.drop = true;
        return d;
    }
    if truncate && len > 0 {
        data.truncate(cut);
        d.truncate = Some(cut);
    }
    if corrupt && !data.is_empty() {
        for (at, x) in &positions[..flips] {
            let i = at % data.len();
            data[i] ^= x;
        }
        d.corrupt = flips as u8;
    }
    d.duplicate = duplicate;
    if delay {
        d.delay_ms = Some(delay_ms);
    } else if reorder {
        d.reorder = true;
    }
    d
}
