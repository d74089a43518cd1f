//! The algorithms floodwall verifies: their JOSE names, [`AlgSet`], and the key [`Family`]
//! that may verify each (with HMAC's least secret length).

use std::fmt;

use jsonwebtoken::Algorithm;

/// Every algorithm floodwall verifies with its JOSE name, in the order of [`AlgSet`]'s bits.
const NAMED: [(Algorithm, &str); 12] = [
    (Algorithm::HS256, "HS256"),
    (Algorithm::HS384, "HS384"),
    (Algorithm::HS512, "HS512"),
    (Algorithm::RS256, "RS256"),
    (Algorithm::RS384, "RS384"),
    (Algorithm::RS512, "RS512"),
    (Algorithm::PS256, "PS256"),
    (Algorithm::PS384, "PS384"),
    (Algorithm::PS512, "PS512"),
    (Algorithm::ES256, "ES256"),
    (Algorithm::ES384, "ES384"),
    (Algorithm::EdDSA, "EdDSA"),
];

fn index_of(alg: Algorithm) -> usize {
    NAMED
        .iter()
        .position(|&(a, _)| a == alg)
        .expect("floodwall names every algorithm it verifies")
}

/// The JOSE name of `alg`.
pub(crate) fn alg_name(alg: Algorithm) -> &'static str {
    NAMED[index_of(alg)].1
}

/// The algorithm named exactly `name` (names are case-sensitive, RFC 7515 §4.1.1).
pub(crate) fn alg_by_name(name: &str) -> Option<Algorithm> {
    NAMED.iter().find(|&&(_, n)| n == name).map(|&(a, _)| a)
}

/// A set of algorithms, one bit each.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct AlgSet(u16);

impl AlgSet {
    pub(crate) const fn empty() -> Self {
        AlgSet(0)
    }

    fn bit(alg: Algorithm) -> u16 {
        1 << index_of(alg)
    }

    pub(crate) fn of(algs: &[Algorithm]) -> Self {
        AlgSet(algs.iter().fold(0, |set, &a| set | Self::bit(a)))
    }

    pub(crate) fn contains(self, alg: Algorithm) -> bool {
        self.0 & Self::bit(alg) != 0
    }

    pub(crate) fn insert(&mut self, alg: Algorithm) {
        self.0 |= Self::bit(alg);
    }

    pub(crate) const fn and(self, other: AlgSet) -> AlgSet {
        AlgSet(self.0 & other.0)
    }

    pub(crate) const fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub(crate) fn iter(self) -> impl Iterator<Item = Algorithm> {
        NAMED
            .into_iter()
            .map(|(a, _)| a)
            .filter(move |&a| self.contains(a))
    }
}

impl fmt::Debug for AlgSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter().map(alg_name)).finish()
    }
}

impl fmt::Display for AlgSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(alg_name).collect();
        f.write_str(&names.join(", "))
    }
}

/// What kind of key material a key is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    Hmac,
    Rsa,
    EcP256,
    EcP384,
    Ed25519,
}

impl Family {
    /// Every algorithm a key of this family can verify.
    pub(super) fn algorithms(self) -> AlgSet {
        use Algorithm::*;
        AlgSet::of(match self {
            Family::Hmac => &[HS256, HS384, HS512],
            Family::Rsa => &[RS256, RS384, RS512, PS256, PS384, PS512],
            Family::EcP256 => &[ES256],
            Family::EcP384 => &[ES384],
            Family::Ed25519 => &[EdDSA],
        })
    }

    pub(super) fn describe(self) -> &'static str {
        match self {
            Family::Hmac => "an HMAC secret",
            Family::Rsa => "an RSA key",
            Family::EcP256 => "an EC P-256 key",
            Family::EcP384 => "an EC P-384 key",
            Family::Ed25519 => "an Ed25519 key",
        }
    }
}

/// The least secret length for an HMAC algorithm: the hash's output size (RFC 7518 §3.2).
pub(super) fn hmac_min_len(alg: Algorithm) -> usize {
    match alg {
        Algorithm::HS384 => 48,
        Algorithm::HS512 => 64,
        _ => 32,
    }
}
