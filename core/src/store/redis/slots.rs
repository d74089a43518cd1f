//! Cluster hash slots: which layers of a decision live together.

use super::RedisStore;
use crate::store::Layer;

impl RedisStore {
    /// The layers' indexes grouped by hash slot, in order of first appearance.
    pub(super) fn slot_groups(&self, layers: &[Layer<'_>]) -> Vec<Vec<usize>> {
        let mut groups: Vec<(u16, Vec<usize>)> = Vec::new();
        for (i, layer) in layers.iter().enumerate() {
            let slot = hash_slot(&self.key(layer));
            match groups.iter_mut().find(|(s, _)| *s == slot) {
                Some((_, g)) => g.push(i),
                None => groups.push((slot, vec![i])),
            }
        }
        groups.into_iter().map(|(_, g)| g).collect()
    }
}

/// The cluster hash slot of `key`: CRC16 (XMODEM) of its hash tag — the part between the
/// first `{` and the next `}`, when not empty — or of the whole key, modulo 16384.
pub(super) fn hash_slot(key: &[u8]) -> u16 {
    let tagged = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            rest.iter()
                .position(|&b| b == b'}')
                .filter(|&close| close > 0)
                .map(|close| &rest[..close])
        })
        .unwrap_or(key);
    let mut crc: u16 = 0;
    for &byte in tagged {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

/// A hash tag whose slot is `slot` (the smallest number that hashes there).
pub(super) fn tag_of_slot(slot: u16) -> String {
    (0u32..)
        .map(|i| i.to_string())
        .find(|tag| hash_slot(tag.as_bytes()) == slot)
        .expect("every slot has a number hashing to it")
}

#[cfg(test)]
mod tests {
    use super::{hash_slot, tag_of_slot};

    #[test]
    fn hash_slots_match_redis() {
        // Values from CLUSTER KEYSLOT.
        assert_eq!(hash_slot(b"foo"), 12182);
        assert_eq!(hash_slot(b"{user1000}.following"), hash_slot(b"user1000"));
        assert_eq!(hash_slot(b"123456789"), 0x31C3);
        assert_eq!(hash_slot(b"foo{}{bar}"), hash_slot(b"foo{}{bar}"));
        assert_eq!(hash_slot(b"fw:{global/0/=}"), hash_slot(b"global/0/="));
    }

    #[test]
    fn every_slot_has_a_tag() {
        for slot in [0, 1, 5460, 5461, 10922, 16383] {
            let tag = tag_of_slot(slot);
            assert_eq!(hash_slot(format!("fw:health{{{tag}}}").as_bytes()), slot);
        }
    }
}
