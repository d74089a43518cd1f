//! [`NetworkSet`]: a set of CIDR networks, for the trusted proxies and the address lists.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A set of networks (CIDR blocks or single addresses).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkSet {
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

impl NetworkSet {
    /// Adds `spec` — `10.0.0.0/8`, `2001:db8::/32` or one address — or says what is wrong
    /// with it. Host bits set below the prefix are refused (they usually betray a typo).
    pub fn add(&mut self, spec: &str) -> Result<(), String> {
        let spec = spec.trim();
        let (address, prefix) = match spec.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (spec, None),
        };
        let ip: IpAddr = if address.contains(':') {
            address
                .parse::<Ipv6Addr>()
                .map(IpAddr::V6)
                .map_err(|_| format!("{spec:?} is not an IP address or CIDR network"))?
        } else {
            address
                .parse::<Ipv4Addr>()
                .map(IpAddr::V4)
                .map_err(|_| format!("{spec:?} is not an IP address or CIDR network"))?
        };
        let bits = match ip {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        let prefix = match prefix {
            None => bits,
            Some(p) => p
                .parse::<u32>()
                .ok()
                .filter(|p| *p <= bits)
                .ok_or_else(|| format!("{spec:?}: the prefix length must be 0 to {bits}"))?,
        };
        match ip {
            IpAddr::V4(v4) => {
                let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
                let value = u32::from(v4);
                if value & !mask != 0 {
                    return Err(format!(
                        "{spec:?} has host bits set: the network is {}/{prefix}",
                        Ipv4Addr::from(value & mask)
                    ));
                }
                self.v4.push((value, mask));
            }
            IpAddr::V6(v6) => {
                if v6.to_ipv4_mapped().is_some() && prefix >= 96 {
                    return Err(format!(
                        "{spec:?} is an IPv4-mapped range: write it as IPv4 (clients are matched as IPv4)"
                    ));
                }
                let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
                let value = u128::from(v6);
                if value & !mask != 0 {
                    return Err(format!(
                        "{spec:?} has host bits set: the network is {}/{prefix}",
                        Ipv6Addr::from(value & mask)
                    ));
                }
                self.v6.push((value, mask));
            }
        }
        Ok(())
    }

    /// Whether the set holds no network.
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// Whether some network of the set covers every address of a family (a `/0`).
    pub fn covers_everything(&self) -> bool {
        self.v4.iter().any(|&(_, mask)| mask == 0) || self.v6.iter().any(|&(_, mask)| mask == 0)
    }

    /// Whether `address` is in one of the networks.
    pub fn contains(&self, address: IpAddr) -> bool {
        match address {
            IpAddr::V4(v4) => {
                let a = u32::from(v4);
                self.v4.iter().any(|&(net, mask)| a & mask == net)
            }
            IpAddr::V6(v6) => {
                let a = u128::from(v6);
                self.v6.iter().any(|&(net, mask)| a & mask == net)
            }
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::super::parse_address;
    use super::*;

    /// The networks `specs`, every one valid (the forwarding walk's tests use it too).
    pub(in crate::http::address) fn trusted(specs: &[&str]) -> NetworkSet {
        let mut set = NetworkSet::default();
        for spec in specs {
            set.add(spec).unwrap();
        }
        set
    }

    #[test]
    fn networks() {
        let set = trusted(&["10.0.0.0/8", "2001:db8::/32", "192.0.2.1"]);
        assert!(set.contains(parse_address("10.9.8.7").unwrap()));
        assert!(set.contains(parse_address("::ffff:10.9.8.7").unwrap()));
        assert!(!set.contains(parse_address("11.0.0.1").unwrap()));
        assert!(set.contains(parse_address("2001:db8:ffff::1").unwrap()));
        assert!(set.contains(parse_address("192.0.2.1").unwrap()));
        assert!(!set.contains(parse_address("192.0.2.2").unwrap()));
        assert!(!set.covers_everything());
        assert!(trusted(&["0.0.0.0/0"]).covers_everything());
        let mut set = NetworkSet::default();
        assert!(set.add("10.0.0.1/8").unwrap_err().contains("10.0.0.0/8"));
        assert!(set.add("10.0.0.0/33").unwrap_err().contains("0 to 32"));
        assert!(set.add("ten").unwrap_err().contains("not an IP address"));
        assert!(set.add("::ffff:10.0.0.0/104").unwrap_err().contains("IPv4"));
    }
}
