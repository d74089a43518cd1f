//! The `[monitor]` section.

use serde::Deserialize;
use std::time::Duration;

use crate::common::HumanDuration;
use crate::error::Error;
use crate::store::{StoreConfig, StoreKind};

/// The `[monitor]` section. The in-memory aggregate is always on; `stream` adds the Redis
/// Streams sink.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorConfig {
    /// How long the per-minute series is: whole minutes, from `"1m"` to `"24h"`.
    #[serde(default = "default_horizon")]
    pub horizon: HumanDuration,
    /// How many entries each top list of a report holds (1 to 1000).
    #[serde(default = "default_top")]
    pub top: usize,
    /// The Redis stream every event is also written to (`XADD … MAXLEN ~`), if any.
    #[serde(default)]
    pub stream: Option<String>,
    /// The Redis server the stream lives on; by default the store's (`store.url`, or
    /// `store.urls` for a cluster).
    #[serde(default)]
    pub url: Option<String>,
    /// About how many entries the stream keeps (`MAXLEN ~`).
    #[serde(default = "default_maxlen")]
    pub maxlen: u64,
    /// How many events may wait for the writer; past it, events are dropped and counted.
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// The most events the writer sends in one round trip.
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// The longest an event waits before the writer sends what it has.
    #[serde(default = "default_flush")]
    pub flush: HumanDuration,
    /// The name events in the stream carry as their source (default: host name and pid).
    #[serde(default)]
    pub instance: Option<String>,
}

fn default_horizon() -> HumanDuration {
    HumanDuration(Duration::from_secs(3600))
}
fn default_top() -> usize {
    10
}
fn default_maxlen() -> u64 {
    100_000
}
fn default_queue() -> usize {
    10_000
}
fn default_batch() -> usize {
    256
}
fn default_flush() -> HumanDuration {
    HumanDuration(Duration::from_millis(100))
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            horizon: default_horizon(),
            top: default_top(),
            stream: None,
            url: None,
            maxlen: default_maxlen(),
            queue: default_queue(),
            batch: default_batch(),
            flush: default_flush(),
            instance: None,
        }
    }
}

impl MonitorConfig {
    /// The horizon in whole minutes, or the error naming the field.
    pub fn horizon_minutes(&self) -> Result<u64, Error> {
        let micros = self.horizon.0.as_micros();
        let minutes = micros / 60_000_000;
        if !micros.is_multiple_of(60_000_000) || minutes == 0 || minutes > 24 * 60 {
            return Err(Error::config(
                "monitor.horizon",
                format!(
                    "must be whole minutes from \"1m\" to \"24h\", got \"{}\"",
                    self.horizon
                ),
            ));
        }
        Ok(minutes as u64)
    }

    /// Checks every field; `store` says where a stream would go by default.
    pub(crate) fn validate(&self, store: &StoreConfig) -> Result<(), Error> {
        self.horizon_minutes()?;
        if !(1..=1000).contains(&self.top) {
            return Err(Error::config("monitor.top", "must be from 1 to 1000"));
        }
        let Some(stream) = &self.stream else {
            return Ok(());
        };
        if stream.is_empty() {
            return Err(Error::config("monitor.stream", "must not be empty"));
        }
        if self.url.is_none() && store.kind() == StoreKind::Memory {
            return Err(Error::config(
                "monitor.url",
                "the stream needs a Redis server: set monitor.url, or use a redis store",
            ));
        }
        if self.maxlen == 0 {
            return Err(Error::config("monitor.maxlen", "must be at least 1"));
        }
        if self.queue == 0 {
            return Err(Error::config("monitor.queue", "must be at least 1"));
        }
        if !(1..=10_000).contains(&self.batch) {
            return Err(Error::config("monitor.batch", "must be from 1 to 10000"));
        }
        if self.flush.0.is_zero() {
            return Err(Error::config("monitor.flush", "must be greater than zero"));
        }
        if self.instance.as_deref() == Some("") {
            return Err(Error::config("monitor.instance", "must not be empty"));
        }
        Ok(())
    }
}
