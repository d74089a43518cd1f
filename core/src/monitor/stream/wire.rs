//! The wire format: the fields of a stream entry, written from an [`Event`]
//! ([`entry_fields`]) and read back into one ([`parse_entry`]).

use std::fmt;
use std::time::Duration;

use crate::breaker::CallOutcome;
use crate::clock::Timestamp;
use crate::decision::StoreUsed;
use crate::error::ErrorKind;
use crate::monitor::event::{
    DecisionEvent, Event, EventOutcome, ResponseEvent, UpstreamEvent, bare_path,
};

/// The wire format's version: the `v` field of every entry this build writes and the only one
/// it reads.
pub const WIRE_VERSION: u64 = 1;

/// One field value of an entry.
#[derive(Debug, Clone, Copy)]
pub(super) enum FieldValue<'a> {
    Text(&'a str),
    Number(u64),
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Calls `put` with every field of `event`'s entry, in order.
pub(super) fn visit_fields(
    event: &Event<'_>,
    source: &str,
    mut put: impl FnMut(&'static str, FieldValue<'_>),
) {
    use FieldValue::{Number, Text};
    put("v", Number(WIRE_VERSION));
    let (kind, at) = match event {
        Event::Decision(e) => ("d", e.at),
        Event::Upstream(e) => ("u", e.at),
        Event::Response(e) => ("r", e.at),
    };
    put("k", Text(kind));
    put("t", Number(at.as_millis()));
    put("src", Text(source));
    match event {
        Event::Decision(e) => {
            if let Some((method, path)) = e.endpoint {
                put("m", Text(method));
                put("p", Text(bare_path(path)));
            }
            if let Some(subject) = e.subject {
                put("s", Text(subject));
            }
            if let Some(role) = e.role {
                put("r", Text(role));
            }
            put("o", Text(e.outcome.as_str()));
            if let Some(rule) = e.rule {
                put("rule", Text(rule));
            }
            if let Some(kind) = e.error {
                put("e", Text(kind.as_str()));
            }
            if let Some(store) = e.store {
                put("st", Text(store.as_str()));
            }
            if let Some(rule) = e.shadow_rule {
                put("sh", Text(rule));
            }
            if e.allowlisted {
                put("al", Number(1));
            }
            if e.blocked {
                put("bl", Number(1));
            }
        }
        Event::Upstream(e) => {
            put("svc", Text(e.service));
            put("up", Text(e.upstream));
            put("co", Text(e.outcome.as_str()));
            put("lat", Number(micros(e.latency)));
            put("trip", Number(u64::from(e.tripped)));
        }
        Event::Response(e) => {
            put("m", Text(e.method));
            put("p", Text(bare_path(e.path)));
            put("code", Number(u64::from(e.status)));
            put("lat", Number(micros(e.latency)));
        }
    }
}

/// The fields of `event`'s stream entry as the sink writes them, `source` being the writing
/// gateway (see the [module docs](super) for the format).
///
/// ```
/// use floodwall::monitor::{entry_fields, Event, ResponseEvent};
/// use floodwall::Timestamp;
/// use std::time::Duration;
///
/// let event = Event::Response(ResponseEvent {
///     at: Timestamp::from_millis(1_700_000_000_123),
///     method: "GET",
///     path: "/api/orders?page=2",
///     status: 200,
///     latency: Duration::from_micros(1500),
/// });
/// let fields: Vec<(&str, String)> = entry_fields(&event, "gw-1:42");
/// let text: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
/// assert_eq!(text.join(" "), "v=1 k=r t=1700000000123 src=gw-1:42 m=GET p=/api/orders code=200 lat=1500");
/// ```
pub fn entry_fields(event: &Event<'_>, source: &str) -> Vec<(&'static str, String)> {
    let mut fields = Vec::with_capacity(12);
    visit_fields(event, source, |name, value| {
        fields.push((
            name,
            match value {
                FieldValue::Text(t) => t.to_owned(),
                FieldValue::Number(n) => n.to_string(),
            },
        ));
    });
    fields
}

/// An entry read back: the event and the gateway that wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamEntry<'a> {
    /// The `src` field, if the entry has one.
    pub source: Option<&'a str>,
    /// The event.
    pub event: Event<'a>,
}

/// Why an entry could not be read as an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MalformedEntry(String);

impl MalformedEntry {
    /// What is wrong with it, e.g. `field t is not a number`.
    pub fn reason(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MalformedEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for MalformedEntry {}

/// The fields of one entry, by name.
#[derive(Default)]
struct RawEntry<'a> {
    v: Option<&'a [u8]>,
    k: Option<&'a [u8]>,
    t: Option<&'a [u8]>,
    src: Option<&'a [u8]>,
    m: Option<&'a [u8]>,
    p: Option<&'a [u8]>,
    s: Option<&'a [u8]>,
    r: Option<&'a [u8]>,
    o: Option<&'a [u8]>,
    rule: Option<&'a [u8]>,
    e: Option<&'a [u8]>,
    st: Option<&'a [u8]>,
    sh: Option<&'a [u8]>,
    al: Option<&'a [u8]>,
    bl: Option<&'a [u8]>,
    svc: Option<&'a [u8]>,
    up: Option<&'a [u8]>,
    co: Option<&'a [u8]>,
    lat: Option<&'a [u8]>,
    trip: Option<&'a [u8]>,
    code: Option<&'a [u8]>,
}

pub(super) fn malformed(reason: impl Into<String>) -> MalformedEntry {
    MalformedEntry(reason.into())
}

fn text<'a>(name: &str, value: Option<&'a [u8]>) -> Result<Option<&'a str>, MalformedEntry> {
    value
        .map(|v| {
            std::str::from_utf8(v).map_err(|_| malformed(format!("field {name} is not UTF-8")))
        })
        .transpose()
}

fn required<'a>(name: &str, value: Option<&'a [u8]>) -> Result<&'a str, MalformedEntry> {
    text(name, value)?.ok_or_else(|| malformed(format!("field {name} is missing")))
}

/// A field that is `1` when set and absent (or `0`) otherwise.
fn flag(name: &str, value: Option<&[u8]>) -> Result<bool, MalformedEntry> {
    match text(name, value)? {
        None | Some("0") => Ok(false),
        Some("1") => Ok(true),
        Some(other) => Err(malformed(format!("field {name} is not 0 or 1: {other:?}"))),
    }
}

fn number(name: &str, value: Option<&[u8]>) -> Result<u64, MalformedEntry> {
    let text = required(name, value)?;
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed(format!("field {name} is not a number: {text:?}")));
    }
    text.parse()
        .map_err(|_| malformed(format!("field {name} is out of range: {text:?}")))
}

/// Reads one entry's fields (name, value pairs in any order; see the [module docs](super)).
pub fn parse_entry<'a>(
    fields: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
) -> Result<StreamEntry<'a>, MalformedEntry> {
    let mut raw = RawEntry::default();
    for (name, value) in fields {
        let slot = match name {
            b"v" => &mut raw.v,
            b"k" => &mut raw.k,
            b"t" => &mut raw.t,
            b"src" => &mut raw.src,
            b"m" => &mut raw.m,
            b"p" => &mut raw.p,
            b"s" => &mut raw.s,
            b"r" => &mut raw.r,
            b"o" => &mut raw.o,
            b"rule" => &mut raw.rule,
            b"e" => &mut raw.e,
            b"st" => &mut raw.st,
            b"sh" => &mut raw.sh,
            b"al" => &mut raw.al,
            b"bl" => &mut raw.bl,
            b"svc" => &mut raw.svc,
            b"up" => &mut raw.up,
            b"co" => &mut raw.co,
            b"lat" => &mut raw.lat,
            b"trip" => &mut raw.trip,
            b"code" => &mut raw.code,
            _ => continue,
        };
        *slot = Some(value);
    }
    let version = number("v", raw.v)?;
    if version != WIRE_VERSION {
        return Err(malformed(format!(
            "wire format version {version}; this reader reads {WIRE_VERSION}"
        )));
    }
    let at = Timestamp::from_millis(number("t", raw.t)?);
    let source = text("src", raw.src)?;
    let event = match required("k", raw.k)? {
        "d" => {
            let endpoint = match (text("m", raw.m)?, text("p", raw.p)?) {
                (Some(m), Some(p)) => Some((m, p)),
                (None, None) => None,
                _ => return Err(malformed("a decision has one of m and p without the other")),
            };
            let outcome = required("o", raw.o)?;
            Event::Decision(DecisionEvent {
                at,
                endpoint,
                subject: text("s", raw.s)?,
                role: text("r", raw.r)?,
                outcome: EventOutcome::parse(outcome)
                    .ok_or_else(|| malformed(format!("unknown outcome o={outcome:?}")))?,
                rule: text("rule", raw.rule)?,
                error: text("e", raw.e)?.and_then(ErrorKind::parse),
                store: text("st", raw.st)?.and_then(StoreUsed::parse),
                shadow_rule: text("sh", raw.sh)?,
                allowlisted: flag("al", raw.al)?,
                blocked: flag("bl", raw.bl)?,
            })
        }
        "u" => {
            let outcome = required("co", raw.co)?;
            Event::Upstream(UpstreamEvent {
                at,
                service: required("svc", raw.svc)?,
                upstream: required("up", raw.up)?,
                outcome: CallOutcome::parse(outcome)
                    .ok_or_else(|| malformed(format!("unknown call outcome co={outcome:?}")))?,
                latency: Duration::from_micros(number("lat", raw.lat)?),
                tripped: match required("trip", raw.trip)? {
                    "0" => false,
                    "1" => true,
                    other => return Err(malformed(format!("field trip is not 0 or 1: {other:?}"))),
                },
            })
        }
        "r" => Event::Response(ResponseEvent {
            at,
            method: required("m", raw.m)?,
            path: required("p", raw.p)?,
            status: u16::try_from(number("code", raw.code)?)
                .map_err(|_| malformed("field code is not an HTTP status"))?,
            latency: Duration::from_micros(number("lat", raw.lat)?),
        }),
        other => return Err(malformed(format!("unknown kind k={other:?}"))),
    };
    Ok(StreamEntry { source, event })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_kind_and_store_name_parses_back() {
        for kind in ErrorKind::ALL {
            assert_eq!(ErrorKind::parse(kind.as_str()), Some(kind));
        }
        for store in StoreUsed::ALL {
            assert_eq!(StoreUsed::parse(store.as_str()), Some(store));
        }
        assert_eq!(ErrorKind::parse("nope"), None);
    }

    fn parse(fields: &[(&str, &str)]) -> Result<String, String> {
        parse_entry(fields.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())))
            .map(|e| format!("{:?}", e.event))
            .map_err(|e| e.reason().to_owned())
    }

    #[test]
    fn malformed_entries_say_why() {
        let base = [("v", "1"), ("k", "r"), ("t", "5"), ("m", "GET"), ("p", "/")];
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut f: Vec<(&str, &str)> = base.to_vec();
            f.extend_from_slice(extra);
            f
        };
        assert!(parse(&with(&[("code", "200"), ("lat", "1")])).is_ok());
        for (fields, reason) in [
            (with(&[("code", "200")]), "field lat is missing"),
            (
                with(&[("code", "70000"), ("lat", "1")]),
                "not an HTTP status",
            ),
            (with(&[("code", "-1"), ("lat", "1")]), "not a number"),
            (vec![("k", "r")], "field v is missing"),
            (vec![("v", "2"), ("k", "r")], "version 2"),
            (vec![("v", "1"), ("k", "x"), ("t", "1")], "unknown kind"),
            (
                vec![("v", "1"), ("k", "d"), ("t", "1"), ("o", "won")],
                "unknown outcome",
            ),
            (
                vec![
                    ("v", "1"),
                    ("k", "d"),
                    ("t", "1"),
                    ("o", "admitted"),
                    ("m", "GET"),
                ],
                "without the other",
            ),
            (
                vec![
                    ("v", "1"),
                    ("k", "u"),
                    ("t", "1"),
                    ("svc", "a"),
                    ("up", "b"),
                    ("co", "success"),
                    ("lat", "1"),
                    ("trip", "yes"),
                ],
                "not 0 or 1",
            ),
        ] {
            let got = parse(&fields).expect_err("malformed");
            assert!(got.contains(reason), "{fields:?}: {got}");
        }
        // Unknown fields, and error kinds or stores from a newer writer, are tolerated.
        let newer = parse(&[
            ("v", "1"),
            ("k", "d"),
            ("t", "1"),
            ("o", "failed"),
            ("e", "brand_new_kind"),
            ("st", "etcd"),
            ("zz", "?"),
        ])
        .expect("tolerated");
        assert!(
            newer.contains("error: None") && newer.contains("store: None"),
            "{newer}"
        );
        let invalid_utf8 = parse_entry([
            (&b"v"[..], &b"1"[..]),
            (b"k", b"r"),
            (b"t", b"1"),
            (b"m", b"\xff"),
        ]);
        assert!(
            invalid_utf8
                .expect_err("malformed")
                .reason()
                .contains("UTF-8")
        );
    }
}
