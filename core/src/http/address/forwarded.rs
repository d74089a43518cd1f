//! The forwarding headers a trusted proxy writes ([`ForwardedHeader`]) and the walk past the
//! trusted proxies to the client ([`client_address`]).

use std::net::IpAddr;

use super::{NetworkSet, parse_address};

/// Which forwarding header a trusted proxy writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2`.
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client, for=proxy1`.
    Forwarded,
}

impl ForwardedHeader {
    /// The header's lower-case name.
    pub const fn name(self) -> &'static str {
        match self {
            ForwardedHeader::XForwardedFor => "x-forwarded-for",
            ForwardedHeader::Forwarded => "forwarded",
        }
    }
}

/// The client of a request whose socket peer is `peer` and whose forwarding header (every line
/// of it, joined by commas) is `forwarded`, past the `trusted` proxies (see the module docs).
/// `None` when the peer is unknown or not an address (a Unix socket).
pub fn client_address(
    peer: Option<&str>,
    forwarded: Option<&str>,
    header: ForwardedHeader,
    trusted: &NetworkSet,
) -> Option<IpAddr> {
    let peer = parse_address(peer?)?;
    let Some(forwarded) = forwarded else {
        return Some(peer);
    };
    if trusted.is_empty() || !trusted.contains(peer) {
        return Some(peer);
    }
    let mut client = peer;
    let mut walk = |entry: &str| -> bool {
        match parse_address(entry) {
            Some(address) => {
                client = address;
                trusted.contains(address)
            }
            None => false,
        }
    };
    match header {
        ForwardedHeader::XForwardedFor => {
            for entry in forwarded.rsplit(',') {
                if entry.trim().is_empty() {
                    continue;
                }
                if !walk(entry) {
                    break;
                }
            }
        }
        ForwardedHeader::Forwarded => {
            let elements = forwarded_elements(forwarded);
            for element in elements.iter().rev() {
                let Some(node) = forwarded_for(element) else {
                    break;
                };
                if !walk(node) {
                    break;
                }
            }
        }
    }
    Some(client)
}

/// The elements of an RFC 7239 `Forwarded` value: split on commas outside quoted strings.
fn forwarded_elements(value: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in value.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&value[start..]);
    out.retain(|e| !e.trim().is_empty());
    out
}

/// The `for=` value of one `Forwarded` element (pairs split on `;` outside quotes).
fn forwarded_for(element: &str) -> Option<&str> {
    let mut quoted = false;
    let mut start = 0;
    let bytes = element.as_bytes();
    for i in 0..=bytes.len() {
        let end = i == bytes.len();
        if !end && bytes[i] == b'"' {
            quoted = !quoted;
        }
        if end || (bytes[i] == b';' && !quoted) {
            let pair = &element[start..i];
            if let Some((name, value)) = pair.split_once('=')
                && name.trim().eq_ignore_ascii_case("for")
            {
                return Some(value.trim());
            }
            start = i + 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::super::network::tests::trusted;
    use super::*;

    #[test]
    fn the_walk() {
        let proxies = trusted(&["10.0.0.0/8"]);
        let walk = |peer: &str, xff: Option<&str>| {
            client_address(Some(peer), xff, ForwardedHeader::XForwardedFor, &proxies)
                .map(|a| a.to_string())
        };
        // Not from a trusted proxy: the header is ignored.
        assert_eq!(
            walk("203.0.113.9", Some("1.1.1.1")).as_deref(),
            Some("203.0.113.9")
        );
        // From one: the rightmost untrusted entry.
        assert_eq!(
            walk("10.0.0.1", Some("1.1.1.1, 2.2.2.2")).as_deref(),
            Some("2.2.2.2")
        );
        assert_eq!(
            walk("10.0.0.1", Some("1.1.1.1, 2.2.2.2, 10.0.0.2")).as_deref(),
            Some("2.2.2.2")
        );
        assert_eq!(
            walk("10.0.0.1", Some("[::ffff:2.2.2.2]:99")).as_deref(),
            Some("2.2.2.2")
        );
        assert_eq!(
            walk("::ffff:10.0.0.1", Some("2.2.2.2")).as_deref(),
            Some("2.2.2.2")
        );
        // Every entry trusted: the leftmost.
        assert_eq!(
            walk("10.0.0.1", Some("10.0.0.3,10.0.0.2")).as_deref(),
            Some("10.0.0.3")
        );
        // Garbage ends the walk at the hop that sent it.
        assert_eq!(
            walk("10.0.0.1", Some("1.1.1.1, garbage")).as_deref(),
            Some("10.0.0.1")
        );
        assert_eq!(
            walk("10.0.0.1", Some("garbage, 10.0.0.2")).as_deref(),
            Some("10.0.0.2")
        );
        assert_eq!(walk("10.0.0.1", None).as_deref(), Some("10.0.0.1"));
        assert_eq!(
            client_address(
                Some("/tmp/sock"),
                None,
                ForwardedHeader::XForwardedFor,
                &proxies
            ),
            None
        );
        assert_eq!(
            client_address(
                None,
                Some("1.1.1.1"),
                ForwardedHeader::XForwardedFor,
                &proxies
            ),
            None
        );
    }

    #[test]
    fn rfc_7239() {
        let proxies = trusted(&["10.0.0.0/8"]);
        let walk = |value: &str| {
            client_address(
                Some("10.0.0.1"),
                Some(value),
                ForwardedHeader::Forwarded,
                &proxies,
            )
            .map(|a| a.to_string())
        };
        assert_eq!(
            walk("for=192.0.2.60;proto=http;by=203.0.113.43").as_deref(),
            Some("192.0.2.60")
        );
        assert_eq!(
            walk("for=1.1.1.1, for=\"[2001:db8:cafe::17]:4711\"").as_deref(),
            Some("2001:db8:cafe::17")
        );
        assert_eq!(
            walk("For=\"1.1.1.1\";by=\"a,b\", for=10.0.0.5").as_deref(),
            Some("1.1.1.1")
        );
        assert_eq!(walk("for=unknown").as_deref(), Some("10.0.0.1"));
        assert_eq!(walk("proto=https").as_deref(), Some("10.0.0.1"));
    }
}
