//! Where a stream lives ([`StreamLocation`], from the configuration) and the name of this
//! gateway ([`default_instance`]). The writer and the reader connect through [`crate::link`],
//! as the store does.

use crate::error::Error;
use crate::monitor::MonitorConfig;
use crate::store::StoreConfig;

/// Where a stream lives: one Redis server, or a Redis Cluster (the same location type every
/// part of floodwall that talks to Redis uses).
pub use crate::link::RedisLocation as StreamLocation;

impl StreamLocation {
    /// Where `[monitor] stream` goes: `monitor.url`, else the store's `store.url` or, for
    /// `redis_cluster`, `store.urls` (for `redis_sentinel`, the primary its sentinels name).
    /// Also returns the configuration field that named it.
    pub(super) fn of_config(
        monitor: &MonitorConfig,
        store: &StoreConfig,
    ) -> Result<(StreamLocation, &'static str), Error> {
        if let Some(url) = &monitor.url {
            return Ok((StreamLocation::Node(url.clone()), "monitor.url"));
        }
        match store {
            StoreConfig::Redis(r) if !r.url.is_empty() => {
                Ok((StreamLocation::Node(r.url.clone()), "store.url"))
            }
            StoreConfig::Redis(_) => Err(Error::config(
                "store.url",
                "the stream goes to the store's Redis, and the redis store has no url",
            )),
            StoreConfig::RedisCluster(c) if !c.urls.is_empty() => {
                Ok((StreamLocation::Cluster(c.urls.clone()), "store.urls"))
            }
            StoreConfig::RedisCluster(_) => Err(Error::config(
                "store.urls",
                "the stream goes to the store's cluster, and the redis_cluster store has no seed nodes",
            )),
            StoreConfig::RedisSentinel(s) if !s.sentinels.is_empty() && !s.master.is_empty() => {
                Ok((
                    StreamLocation::Sentinel {
                        sentinels: s.sentinels.clone(),
                        master: s.master.clone(),
                    },
                    "store.sentinels",
                ))
            }
            StoreConfig::RedisSentinel(_) => Err(Error::config(
                "store.sentinels",
                "the stream goes to the store's primary, and the redis_sentinel store names no sentinels or no master",
            )),
            StoreConfig::Memory(_) => Err(Error::config(
                "monitor.url",
                "the stream needs a Redis server: set monitor.url, or use a redis store",
            )),
        }
    }
}

/// `hostname:pid`: the host name from `/proc/sys/kernel/hostname` or `$HOSTNAME`.
pub fn default_instance() -> String {
    format!("{}:{}", host_name(), std::process::id())
}

/// This host's name, or `unknown`.
pub(crate) fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "unknown".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_instance_names_host_and_process() {
        let instance = default_instance();
        assert!(
            instance.ends_with(&format!(":{}", std::process::id())),
            "{instance}"
        );
        assert!(instance.len() > 2);
    }
}
