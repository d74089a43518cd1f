//! Client addresses: one spelling per address, IPv6 clients by subnet, and the walk of a
//! forwarding header past trusted proxies.
//!
//! An address may come dotted (`192.0.2.7`), as IPv6 in any of its spellings (`2001:DB8::1`,
//! `2001:db8:0:0::1`), IPv4-mapped (`::ffff:192.0.2.7`, `::ffff:c000:207`), bracketed, with a
//! port (`192.0.2.7:4711`, `[2001:db8::1]:80`), quoted as RFC 7239 quotes it, or with an IPv6
//! zone (`fe80::1%eth0`). All spellings of one address read as one [`IpAddr`]: an IPv4-mapped
//! address is the IPv4 address, a zone is dropped. Its key is the dotted form for IPv4 and,
//! for IPv6, the RFC 5952 form of the client's subnet (`2001:db8:0:100::/56`): one host usually
//! owns a whole /64 and can change its address within it at will.
//!
//! The client of a request is its socket peer unless the peer is a trusted proxy; only then is
//! the forwarding header read, right to left (the nearest proxy's entry is the last), past
//! every trusted address: the first untrusted one is the client. An entry that is not an
//! address (`unknown`, `_hidden`, garbage) ends the walk at the hop that sent it. A caller
//! that is not a trusted proxy therefore cannot choose the address it is limited by.

mod forwarded;
mod network;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub use forwarded::{ForwardedHeader, client_address};
pub use network::NetworkSet;

/// Reads one address in any of the spellings the module docs list; `None` when `text` is not
/// one.
///
/// ```
/// use floodwall::http::parse_address;
/// let one = parse_address("192.0.2.7").unwrap();
/// for spelling in ["::ffff:192.0.2.7", "[::FFFF:c000:0207]:443", "192.0.2.7:80", "\"[::ffff:192.0.2.7]\""] {
///     assert_eq!(parse_address(spelling), Some(one), "{spelling}");
/// }
/// assert_eq!(parse_address("unknown"), None);
/// ```
pub fn parse_address(text: &str) -> Option<IpAddr> {
    let mut node = text.trim();
    if node.len() >= 2 && node.starts_with('"') && node.ends_with('"') {
        node = &node[1..node.len() - 1];
    }
    if let Some(rest) = node.strip_prefix('[') {
        let close = rest.find(']')?;
        let after = &rest[close + 1..];
        if !(after.is_empty() || is_port(after)) {
            return None;
        }
        return parse_v6(&rest[..close]).map(unmap);
    }
    if let Ok(v4) = node.parse::<Ipv4Addr>() {
        return Some(IpAddr::V4(v4));
    }
    // One colon: `a.b.c.d:port`; more: IPv6 without brackets (no port possible).
    match node.find(':') {
        Some(colon) if !node[colon + 1..].contains(':') => {
            if !is_port(&node[colon..]) {
                return None;
            }
            node[..colon].parse::<Ipv4Addr>().ok().map(IpAddr::V4)
        }
        Some(_) => parse_v6(node).map(unmap),
        None => None,
    }
}

fn parse_v6(text: &str) -> Option<Ipv6Addr> {
    // A zone (`%eth0`) names an interface of the sender, not the client.
    let text = text.split_once('%').map_or(text, |(address, _)| address);
    text.parse().ok()
}

fn unmap(v6: Ipv6Addr) -> IpAddr {
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

fn is_port(text: &str) -> bool {
    text.len() > 1
        && text.len() <= 6
        && text.starts_with(':')
        && text[1..].bytes().all(|b| b.is_ascii_digit())
}

/// The longest address key: a full IPv6 address in RFC 5952 form and a prefix length.
pub const MAX_ADDRESS_KEY: usize = 45;

/// Writes the key an address is counted by: the dotted form for IPv4; for IPv6, the RFC 5952
/// form of its `/ipv6_subnet` network with the prefix length (`2001:db8:0:100::/56`), or of
/// the address alone when the subnet is 128. At most [`MAX_ADDRESS_KEY`] bytes.
pub fn address_key(
    address: IpAddr,
    ipv6_subnet: u8,
    out: &mut impl std::fmt::Write,
) -> std::fmt::Result {
    match address {
        IpAddr::V4(v4) => write_v4(v4, out),
        IpAddr::V6(v6) if ipv6_subnet >= 128 => write!(out, "{v6}"),
        IpAddr::V6(v6) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(ipv6_subnet))
                .unwrap_or(0);
            let network = Ipv6Addr::from(u128::from(v6) & mask);
            write!(out, "{network}/{ipv6_subnet}")
        }
    }
}

/// The dotted form of `v4`, written without the formatting machinery (this is on every
/// request that an address rule keys).
fn write_v4(v4: Ipv4Addr, out: &mut impl std::fmt::Write) -> std::fmt::Result {
    let mut text = [0u8; 15];
    let mut n = 0;
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            text[n] = b'.';
            n += 1;
        }
        if octet >= 100 {
            text[n] = b'0' + octet / 100;
            n += 1;
        }
        if octet >= 10 {
            text[n] = b'0' + octet / 10 % 10;
            n += 1;
        }
        text[n] = b'0' + octet % 10;
        n += 1;
    }
    out.write_str(std::str::from_utf8(&text[..n]).unwrap_or("0.0.0.0"))
}

/// Whether `text` is an IPv4 address in its key form already: four dotted decimal octets
/// without leading zeros (then keying it needs no parsing and no writing).
#[inline]
pub(crate) fn is_dotted_v4(text: &str) -> bool {
    let bytes = text.as_bytes();
    if !(7..=15).contains(&bytes.len()) {
        return false;
    }
    let (mut octets, mut digits, mut value) = (0, 0, 0u32);
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'0'..=b'9' => {
                if digits == 1 && value == 0 {
                    return false; // a leading zero
                }
                value = value * 10 + u32::from(b - b'0');
                digits += 1;
                if digits > 3 || value > 255 {
                    return false;
                }
            }
            b'.' if digits > 0 && i + 1 < bytes.len() => {
                octets += 1;
                digits = 0;
                value = 0;
            }
            _ => return false,
        }
    }
    octets == 3 && digits > 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(text: &str, subnet: u8) -> String {
        let mut out = String::new();
        address_key(parse_address(text).expect(text), subnet, &mut out).unwrap();
        out
    }

    #[test]
    fn spellings_of_one_address_share_a_key() {
        for spelling in [
            "192.0.2.7",
            " 192.0.2.7 ",
            "192.0.2.7:4711",
            "::ffff:192.0.2.7",
            "::FFFF:192.0.2.7",
            "::ffff:c000:207",
            "[::ffff:192.0.2.7]",
            "[::ffff:192.0.2.7]:80",
            "\"[::ffff:c000:207]:80\"",
            "0:0:0:0:0:ffff:c000:0207",
        ] {
            assert_eq!(key(spelling, 56), "192.0.2.7", "{spelling}");
        }
        for spelling in [
            "2001:db8::1",
            "2001:DB8::1",
            "2001:db8:0:0:0:0:0:1",
            "[2001:db8::1]:443",
            "2001:0db8::0001",
            "fe80::1%eth0",
        ] {
            let expected = if spelling.starts_with("fe80") {
                "fe80::1"
            } else {
                "2001:db8::1"
            };
            assert_eq!(key(spelling, 128), expected, "{spelling}");
        }
    }

    #[test]
    fn dotted_keys() {
        for text in ["0.0.0.0", "192.0.2.7", "255.255.255.255", "10.0.0.1"] {
            assert!(is_dotted_v4(text), "{text}");
            assert_eq!(key(text, 56), text);
        }
        for text in [
            "01.2.3.4",
            "1.2.3",
            "1.2.3.4.",
            ".1.2.3",
            "256.1.1.1",
            "1.2.3.4:80",
            "1..3.4",
            "::1",
            "1.2.3.1000",
        ] {
            assert!(!is_dotted_v4(text), "{text}");
        }
    }

    #[test]
    fn ipv6_clients_are_keyed_by_subnet() {
        assert_eq!(key("2001:db8:0:1ff:aaaa::1", 56), "2001:db8:0:100::/56");
        assert_eq!(key("2001:db8:0:100::2", 56), "2001:db8:0:100::/56");
        assert_eq!(key("2001:db8:0:200::2", 56), "2001:db8:0:200::/56");
        assert_eq!(key("2001:db8::1", 64), "2001:db8::/64");
        assert_eq!(key("2001:db8::1", 0), "::/0");
    }

    #[test]
    fn not_addresses() {
        for text in [
            "",
            "unknown",
            "_hidden",
            "1.2.3",
            "1.2.3.4:",
            "1.2.3.4:x",
            "[1.2.3.4]",
            "[::1",
            "::1]:80",
            "300.1.1.1",
        ] {
            assert_eq!(parse_address(text), None, "{text:?}");
        }
    }
}
