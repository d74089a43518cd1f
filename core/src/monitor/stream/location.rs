//! Where a stream lives ([`StreamLocation`]), the Redis client and connection the writer and
//! the reader share, and the name of this gateway ([`default_instance`]).

use std::fmt;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;

use crate::config::{MonitorConfig, StoreConfig};
use crate::error::Error;

/// Where a stream lives: one Redis server, or a Redis Cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamLocation {
    /// One server, by URL (`redis://127.0.0.1:6379`).
    Node(String),
    /// A cluster, by seed node URLs.
    Cluster(Vec<String>),
}

impl StreamLocation {
    /// Where `[monitor] stream` goes: `monitor.url`, else the store's `store.url` or, for
    /// `redis_cluster`, `store.urls`. Also returns the configuration field that named it.
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
            StoreConfig::Memory(_) => Err(Error::config(
                "monitor.url",
                "the stream needs a Redis server: set monitor.url, or use a redis store",
            )),
        }
    }

    /// A client for it (nothing connects yet); `field` names what configured it in errors.
    pub(super) fn client(&self, field: &str, response_timeout: Duration) -> Result<Client, Error> {
        match self {
            StreamLocation::Node(url) => redis::Client::open(url.as_str())
                .map(Client::Node)
                .map_err(|e| Error::config(field, format!("not a Redis URL ({url:?}): {e}"))),
            StreamLocation::Cluster(urls) => {
                if urls.is_empty() {
                    return Err(Error::config(field, "no seed node URLs"));
                }
                ClusterClient::builder(urls.clone())
                    .connection_timeout(response_timeout)
                    .response_timeout(response_timeout)
                    .retries(2)
                    .build()
                    .map(|c| Client::Cluster(Box::new(c)))
                    .map_err(|e| Error::config(field, format!("not Redis URLs ({urls:?}): {e}")))
            }
        }
    }
}

impl fmt::Display for StreamLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamLocation::Node(url) => f.write_str(url),
            StreamLocation::Cluster(urls) => write!(f, "cluster {}", urls.join(",")),
        }
    }
}

pub(super) enum Client {
    Node(redis::Client),
    Cluster(Box<ClusterClient>),
}

pub(super) enum Connection {
    Node(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl Client {
    /// Connects; a node connection's replies time out after `response_timeout` (`None`: the
    /// caller's own deadline bounds them).
    pub(super) async fn connect(
        &self,
        timeout: Duration,
        response_timeout: Option<Duration>,
    ) -> redis::RedisResult<Connection> {
        match self {
            Client::Node(client) => {
                let config = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(response_timeout);
                client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .map(Connection::Node)
            }
            Client::Cluster(client) => client.get_async_connection().await.map(Connection::Cluster),
        }
    }
}

impl Connection {
    pub(super) async fn query<T: redis::FromRedisValue>(
        &mut self,
        cmd: &redis::Cmd,
    ) -> redis::RedisResult<T> {
        match self {
            Connection::Node(c) => cmd.query_async(c).await,
            Connection::Cluster(c) => cmd.query_async(c).await,
        }
    }

    pub(super) async fn query_pipeline(
        &mut self,
        pipe: &redis::Pipeline,
    ) -> redis::RedisResult<()> {
        match self {
            Connection::Node(c) => pipe.query_async(c).await,
            Connection::Cluster(c) => pipe.query_async(c).await,
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
