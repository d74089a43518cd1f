//! Why a Redis call gave no decision, in the kinds the store's health names.

use std::fmt;

/// Why a Redis call did not give a decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreFailure {
    /// No answer within the deadline.
    Timeout,
    /// The connection was refused or lost: nothing listens, or the server went away.
    Refused(String),
    /// Redis is out of memory (`maxmemory` reached and nothing it may evict): it refuses writes.
    OutOfMemory(String),
    /// Redis does not know the decision script even after it was loaded (`NOSCRIPT` again).
    NoScript(String),
    /// A cluster node is down or the cluster cannot serve a slot.
    ClusterDown(String),
    /// Any other error Redis answered with.
    Redis(String),
}

impl StoreFailure {
    /// `timeout`, `refused`, `out_of_memory`, `noscript`, `cluster_down` or `error`.
    pub const fn kind(&self) -> &'static str {
        match self {
            StoreFailure::Timeout => "timeout",
            StoreFailure::Refused(_) => "refused",
            StoreFailure::OutOfMemory(_) => "out_of_memory",
            StoreFailure::NoScript(_) => "noscript",
            StoreFailure::ClusterDown(_) => "cluster_down",
            StoreFailure::Redis(_) => "error",
        }
    }

    /// What the client library said, read for its cause.
    pub(crate) fn of(e: &redis::RedisError) -> Self {
        use redis::{ErrorKind, ServerErrorKind};
        let text = e.to_string();
        if e.is_timeout() {
            return StoreFailure::Timeout;
        }
        if e.is_connection_refusal() || e.is_connection_dropped() || e.is_io_error() {
            return StoreFailure::Refused(text);
        }
        match (e.kind(), e.code()) {
            (ErrorKind::Server(ServerErrorKind::NoScript), _) | (_, Some("NOSCRIPT")) => {
                StoreFailure::NoScript(text)
            }
            (_, Some("OOM")) => StoreFailure::OutOfMemory(text),
            (ErrorKind::Server(ServerErrorKind::ClusterDown), _) | (_, Some("CLUSTERDOWN")) => {
                StoreFailure::ClusterDown(text)
            }
            _ if e.is_cluster_error() => StoreFailure::ClusterDown(text),
            _ => StoreFailure::Redis(text),
        }
    }
}

impl fmt::Display for StoreFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreFailure::Timeout => f.write_str("no answer from Redis within the deadline"),
            StoreFailure::Refused(e) => write!(f, "redis refused or dropped the connection: {e}"),
            StoreFailure::OutOfMemory(e) => write!(f, "redis is out of memory: {e}"),
            StoreFailure::NoScript(e) => {
                write!(
                    f,
                    "redis does not keep the decision script (NOSCRIPT after loading it): {e}"
                )
            }
            StoreFailure::ClusterDown(e) => write!(f, "a redis cluster node is down: {e}"),
            StoreFailure::Redis(e) => write!(f, "redis: {e}"),
        }
    }
}

/// A failed call, and on a cluster the hash slots whose commands failed (empty when it is not
/// known which: a single node, or no connection to any node).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed {
    /// Why.
    pub failure: StoreFailure,
    /// The slots of the commands that failed.
    pub slots: Vec<u16>,
}

impl From<StoreFailure> for Failed {
    fn from(failure: StoreFailure) -> Self {
        Failed {
            failure,
            slots: Vec::new(),
        }
    }
}

impl Failed {
    /// The failures of several commands as one: the first one's reason, every one's slots
    /// (none known if one of them is not).
    pub(crate) fn merge(failures: impl IntoIterator<Item = Failed>) -> Option<Failed> {
        let mut merged: Option<Failed> = None;
        let mut unknown = false;
        for f in failures {
            unknown |= f.slots.is_empty();
            match &mut merged {
                None => merged = Some(f),
                Some(m) => m.slots.extend(f.slots),
            }
        }
        if let Some(m) = merged.as_mut() {
            if unknown {
                m.slots.clear();
            } else {
                m.slots.sort_unstable();
                m.slots.dedup();
            }
        }
        merged
    }
}

#[cfg(test)]
mod tests {
    use super::{Failed, StoreFailure};

    #[test]
    fn merged_failures_keep_the_first_reason_and_every_slot_unless_one_is_unknown() {
        let on = |slots: &[u16]| Failed {
            failure: StoreFailure::Refused(format!("{slots:?}")),
            slots: slots.to_vec(),
        };
        assert_eq!(Failed::merge(Vec::new()), None);
        let merged = Failed::merge([on(&[9, 3]), on(&[3, 1])]).expect("a failure");
        assert_eq!(merged.failure, StoreFailure::Refused("[9, 3]".into()));
        assert_eq!(merged.slots, [1, 3, 9]);
        // A failure that cannot say where (no connection at all) is every slot's.
        let unknown = Failed::merge([on(&[2]), StoreFailure::Timeout.into()]).expect("a failure");
        assert!(unknown.slots.is_empty());
    }
}
