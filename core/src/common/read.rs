//! Reading a configuration's text: serde's errors as `invalid_config` errors that name the
//! field, say where in TOML, and read as sentences.

use crate::error::Error;

/// serde reads a struct from a sequence field by field, so an array would silently pass for
/// a configuration; only an object is one.
pub(crate) fn not_an_object() -> Error {
    Error::config(
        "",
        "a JSON configuration must be an object ({ \"rules\": [...], ... }), not an array or a single value",
    )
}

/// serde's messages for a number of the wrong kind (`invalid value: integer `-5`, expected
/// u64`), as a sentence a person reads without knowing Rust's types.
fn humanize(message: &str) -> String {
    // serde names the Rust type it wanted (`expected struct AccessListConfig`): a person wants
    // to hear that a table or an object belongs there.
    if let Some(at) = message.find(", expected struct ") {
        let rest = &message[at + ", expected struct ".len()..];
        let tail = rest.find(' ').map_or("", |i| &rest[i..]);
        return format!("{}, expected a table (an object){tail}", &message[..at]);
    }
    let ranges = [
        ("u8", "from 0 to 255"),
        ("u16", "from 0 to 65535"),
        ("u32", "from 0 to 4294967295"),
        ("u64", "of 0 or more"),
        ("usize", "of 0 or more"),
        ("i64", "(positive or negative)"),
    ];
    for (ty, range) in ranges {
        let Some(head) = message
            .strip_suffix(&format!(", expected {ty}"))
            .or_else(|| {
                message
                    .find(&format!(", expected {ty} "))
                    .map(|at| &message[..at])
            })
        else {
            continue;
        };
        let tail = message[head.len()..]
            .strip_prefix(&format!(", expected {ty}"))
            .unwrap_or("");
        let got = if let Some(v) = head.strip_prefix("invalid value: integer ") {
            v.trim_matches('`').to_owned()
        } else if let Some(v) = head.strip_prefix("invalid type: floating point ") {
            v.trim_matches('`').to_owned()
        } else if let Some(v) = head.strip_prefix("invalid type: ") {
            v.to_owned()
        } else {
            continue;
        };
        return format!("must be a whole number {range}, got {got}{tail}");
    }
    message.to_owned()
}

pub(crate) fn path_of(path: &serde_path_to_error::Path) -> String {
    let text = path.to_string();
    if text == "." { String::new() } else { text }
}

pub(crate) fn json_error(e: serde_path_to_error::Error<serde_json::Error>) -> Error {
    let field = path_of(e.path());
    let inner = e.into_inner();
    if inner.is_syntax() || inner.is_eof() {
        Error::config("", format!("invalid JSON: {inner}"))
    } else {
        // The position ("at line 1 column 57") means nothing to a caller who passed an object;
        // the field path says where.
        let text = inner.to_string();
        let text = match text.rfind(" at line ") {
            Some(at) if inner.line() > 0 => text[..at].to_owned(),
            _ => text,
        };
        Error::config(field, humanize(&text))
    }
}

pub(crate) fn toml_error(field: &str, e: &toml::de::Error, text: &str) -> Error {
    let mut message = humanize(e.message().trim_end());
    if let Some(span) = e.span() {
        let before = &text[..span.start.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        message.push_str(&format!(" (line {line}, column {column})"));
    }
    if field.is_empty() && !message.starts_with("invalid TOML") {
        message = format!("invalid TOML: {message}");
    }
    Error::config(field, message)
}
