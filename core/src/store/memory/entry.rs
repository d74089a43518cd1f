//! One key's entry: its cache-line layout, the slot packed in 32 bits with the key's pressure
//! beside it, the expiry in whole seconds, and the key comparison.

use smallvec::SmallVec;

use crate::limit::{Outcome, State};

/// One key's state: exactly one cache line, aligned to one, so that a decision on a key that
/// is not in the CPU's caches waits for one memory access, not two or three (with 100,000
/// keys that was a fifth of a `check` from Python). Hence the narrow fields: the slot packed
/// in 32 bits, the expiry in whole seconds, keys of up to 16 bytes inline (an IPv4 address, a
/// short user id, `GET /api/orders`); a longer key lives on the heap. The hash is not kept:
/// a table that grows hashes its keys again.
#[repr(align(64))]
pub(super) struct Entry {
    /// The layer's [`Layer::slot`], [`compact`]ed.
    ///
    /// [`Layer::slot`]: crate::store::Layer::slot
    pub(super) slot: u32,
    /// Seconds since the epoch, rounded up, from which `state` equals a fresh state: the entry
    /// may be forgotten from then on (it is kept up to a second longer than it must be).
    pub(super) expires_s: u32,
    pub(super) key: SmallVec<[u8; 16]>,
    pub(super) state: State,
}

const _: () = assert!(std::mem::size_of::<Entry>() == 64);

/// A [`Layer::slot`] in 32 bits: its `ABSENT` flag in bit 31, the rule's index (below
/// [`MAX_RULES`](crate::common::MAX_RULES) = 256) in bits 23–30, [`OWN_MARK`] in bit 21,
/// [`BLOCK_MARK`] in bit 20, and the role variant (at
/// most [`MAX_ROLE_OVERRIDES`](crate::common::MAX_ROLE_OVERRIDES) + 1 < 2¹⁷) in bits 0–16.
/// An entry keeps its [pressure](pressure) in bits 17–19 of the same word.
///
/// [`Layer::slot`]: crate::store::Layer::slot
#[inline(always)]
pub(super) fn compact(slot: u64) -> u32 {
    debug_assert!((slot >> 32) & 0x7fff_ffff < 256 && slot & 0x3fff_ffff < 1 << 17);
    (((slot >> 63) as u32) << 31)
        | (((slot >> 32) as u32 & 0xff) << 23)
        | ((((slot & OWN_MARK) != 0) as u32) << OWN_SHIFT)
        | ((((slot & BLOCK_MARK) != 0) as u32) << BLOCK_SHIFT)
        | (slot as u32 & 0x1_ffff)
}

/// The rule state of a [`compact`]ed slot.
pub(super) fn state_of(compact: u32) -> u32 {
    (compact >> 23) & 0xff
}

/// Set in a [`Layer::slot`] for the entry of the layer's blocking (`block_for`), beside the
/// layer's own: bit 20 of the [`compact`]ed slot.
///
/// [`Layer::slot`]: crate::store::Layer::slot
pub(super) const BLOCK_MARK: u64 = 1 << 31;
const BLOCK_SHIFT: u32 = 20;

/// Set in a [`Layer::slot`] for the entry of the key's own limit (`key_limits`), beside the
/// layer's own: bit 21 of the [`compact`]ed slot.
///
/// [`Layer::slot`]: crate::store::Layer::slot
pub(super) const OWN_MARK: u64 = 1 << 30;
const OWN_SHIFT: u32 = 21;

const _: () = assert!(crate::common::MAX_ROLE_OVERRIDES < 1 << 17);

/// Where an entry's pressure sits in its `slot` word.
pub(super) const PRESSURE_SHIFT: u32 = 17;
const PRESSURE_BITS: u32 = 0b111 << PRESSURE_SHIFT;
/// The pressure of a key that is denying.
pub(super) const DENYING: u32 = 4;

/// How much an outcome leaves of a limit used: 0 (less than a quarter) to 3 (three quarters or
/// more), or [`DENYING`] when it denied or left nothing for the next request. No division on
/// the hot path: comparisons of multiples.
#[inline(always)]
pub(super) fn pressure(outcome: &Outcome, limit: u64) -> u32 {
    if !outcome.allowed || outcome.remaining == 0 {
        return DENYING;
    }
    let used = u128::from(limit.saturating_sub(outcome.remaining)) * 4;
    let limit = u128::from(limit);
    u32::from(used >= limit) + u32::from(used >= 2 * limit) + u32::from(used >= 3 * limit)
}

/// µs since the epoch → whole seconds, rounded up (saturating in 2106).
#[inline(always)]
pub(super) fn secs(us: u64) -> u32 {
    u32::try_from(us.div_ceil(1_000_000)).unwrap_or(u32::MAX)
}

impl Entry {
    /// [`expires_s`](Self::expires_s) in µs.
    #[inline(always)]
    pub(super) fn expires_at(&self) -> u64 {
        u64::from(self.expires_s) * 1_000_000
    }

    /// The [`compact`]ed slot, without the pressure.
    #[inline(always)]
    pub(super) fn slot(&self) -> u32 {
        self.slot & !PRESSURE_BITS
    }

    #[inline(always)]
    pub(super) fn is(&self, slot: u32, key: &[u8]) -> bool {
        self.slot() == slot && key_eq(&self.key, key)
    }

    /// Records what the decision just taken on this entry left.
    #[inline(always)]
    pub(super) fn press(&mut self, outcome: &Outcome, limit: u64) {
        self.slot = self.slot() | pressure(outcome, limit) << PRESSURE_SHIFT;
    }

    /// The order of eviction: the least pressed first, then the nearest to expiry.
    pub(super) fn eviction_rank(&self) -> u64 {
        u64::from((self.slot & PRESSURE_BITS) >> PRESSURE_SHIFT) << 32 | u64::from(self.expires_s)
    }
}

/// Whether two keys are equal, without a call to `memcmp` for the short keys that are usual.
#[inline(always)]
fn key_eq(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    if n > 32 {
        return a == b;
    }
    if n >= 16 {
        let lo = |s: &[u8]| u128::from_ne_bytes(s[..16].try_into().expect("16 bytes"));
        let hi = |s: &[u8]| u128::from_ne_bytes(s[n - 16..].try_into().expect("16 bytes"));
        return lo(a) == lo(b) && hi(a) == hi(b);
    }
    if n >= 8 {
        let lo = |s: &[u8]| u64::from_ne_bytes(s[..8].try_into().expect("8 bytes"));
        let hi = |s: &[u8]| u64::from_ne_bytes(s[n - 8..].try_into().expect("8 bytes"));
        return lo(a) == lo(b) && hi(a) == hi(b);
    }
    if n >= 4 {
        let lo = |s: &[u8]| u32::from_ne_bytes(s[..4].try_into().expect("4 bytes"));
        let hi = |s: &[u8]| u32::from_ne_bytes(s[n - 4..].try_into().expect("4 bytes"));
        return lo(a) == lo(b) && hi(a) == hi(b);
    }
    a.iter().zip(b).all(|(x, y)| x == y)
}
