//! Redis connections, for everything in floodwall that talks to Redis: the store, the stream
//! sink and the stream reader.
//!
//! - [`RedisLocation`]: one server by URL, a cluster by seed URLs, or the primary that Redis
//!   Sentinel names (asked again on every connection, so that a connection made after a
//!   failover goes to the promoted replica).
//! - [`Client`]: what connects there (nothing connects when it is made), and [`Connection`]:
//!   a multiplexed connection to a node (or one that reconnects by itself, for the store), or
//!   a cluster connection that follows `MOVED`/`ASK`. A `Connection` is a
//!   [`ConnectionLike`], so commands and pipelines run on it as on any of redis's.
//! - [`within`]: runs a call within a deadline on the one I/O runtime of the process — a
//!   current-thread tokio runtime driven by whichever caller is waiting, so no thread hands
//!   I/O to another and no part starts a runtime of its own. A call must not be made from
//!   inside another tokio runtime's task (`block_on` would panic there); every binding calls
//!   in from plain threads. A part that holds connections calls [`settle`] when it is
//!   dropped, so that their sockets close then rather than at the next call of another part.

use std::fmt;
use std::sync::OnceLock;
use std::time::Duration;

use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

use crate::error::Error;

/// Where Redis is: one server, or a Redis Cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisLocation {
    /// One server, by URL (`redis://127.0.0.1:6379`).
    Node(String),
    /// A cluster, by seed node URLs.
    Cluster(Vec<String>),
    /// The primary that the sentinels at these URLs monitor under the name `master`.
    Sentinel {
        /// The sentinels' URLs.
        sentinels: Vec<String>,
        /// The monitored name.
        master: String,
    },
}

impl RedisLocation {
    /// A client for it (nothing connects yet), whose replies time out after
    /// `response_timeout` on a cluster, retrying a failed or redirected command `retries` times
    /// (`None`: redis's default); `field` names what configured it in errors.
    pub(crate) fn client(
        &self,
        field: &str,
        response_timeout: Duration,
        retries: Option<u32>,
    ) -> Result<Client, Error> {
        match self {
            RedisLocation::Node(url) => redis::Client::open(url.as_str())
                .map(Client::Node)
                .map_err(|e| Error::config(field, format!("not a Redis URL ({url:?}): {e}"))),
            RedisLocation::Cluster(urls) => {
                if urls.is_empty() {
                    return Err(Error::config(field, "no seed node URLs"));
                }
                let mut builder = ClusterClient::builder(urls.clone())
                    .connection_timeout(response_timeout)
                    .response_timeout(response_timeout);
                if let Some(retries) = retries {
                    builder = builder.retries(retries);
                }
                builder
                    .build()
                    .map(|c| Client::Cluster(Box::new(c)))
                    .map_err(|e| Error::config(field, format!("not Redis URLs ({urls:?}): {e}")))
            }
            RedisLocation::Sentinel { sentinels, master } => {
                redis::sentinel::Sentinel::build(sentinels.clone()).map_err(|e| {
                    Error::config(field, format!("not sentinel URLs ({sentinels:?}): {e}"))
                })?;
                Ok(Client::Sentinel {
                    sentinels: sentinels.clone(),
                    master: master.clone(),
                })
            }
        }
    }
}

impl fmt::Display for RedisLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RedisLocation::Node(url) => f.write_str(url),
            RedisLocation::Cluster(urls) => write!(f, "cluster {}", urls.join(",")),
            RedisLocation::Sentinel { sentinels, master } => {
                write!(f, "{master} through sentinels {}", sentinels.join(","))
            }
        }
    }
}

/// What connects to a [`RedisLocation`].
pub(crate) enum Client {
    Node(redis::Client),
    Cluster(Box<ClusterClient>),
    /// Resolved through the sentinels on every connection.
    Sentinel {
        sentinels: Vec<String>,
        master: String,
    },
}

/// A connection made by a [`Client`]; cheap to clone (clones share the connection).
#[derive(Clone)]
pub(crate) enum Connection {
    /// A multiplexed connection to one server.
    Node(MultiplexedConnection),
    /// One to one server that reconnects by itself (the store's shared connection).
    Managed(ConnectionManager),
    /// A cluster connection.
    Cluster(ClusterConnection),
}

impl Client {
    /// Connects; a node connection's replies time out after `response_timeout` (`None`: the
    /// caller's own deadline bounds them).
    pub(crate) async fn connect(
        &self,
        timeout: Duration,
        response_timeout: Option<Duration>,
    ) -> redis::RedisResult<Connection> {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(response_timeout);
        match self {
            Client::Node(client) => client
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .map(Connection::Node),
            Client::Cluster(client) => client.get_async_connection().await.map(Connection::Cluster),
            Client::Sentinel { .. } => self
                .primary()
                .await?
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .map(Connection::Node),
        }
    }

    /// Connects a connection that outlives failures: on a node, one that reconnects by
    /// itself — with no retry of its own, so that a refused connection is reported as refused
    /// at once and the caller decides what comes next; on a cluster, the cluster connection.
    pub(crate) async fn connect_lasting(
        &self,
        timeout: Duration,
        response_timeout: Duration,
    ) -> redis::RedisResult<Connection> {
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(0)
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(response_timeout));
        match self {
            Client::Node(client) => ConnectionManager::new_with_config(client.clone(), config)
                .await
                .map(Connection::Managed),
            Client::Cluster(client) => client.get_async_connection().await.map(Connection::Cluster),
            // It reconnects to the same server; after a failover that one refuses writes or is
            // gone, the store's probe finds the new primary and the store connects again.
            Client::Sentinel { .. } => {
                ConnectionManager::new_with_config(self.primary().await?, config)
                    .await
                    .map(Connection::Managed)
            }
        }
    }

    /// The primary the sentinels name now (the first sentinel that answers is asked, and the
    /// server it names must say it is a primary).
    async fn primary(&self) -> redis::RedisResult<redis::Client> {
        let Client::Sentinel { sentinels, master } = self else {
            unreachable!("asked of a sentinel client")
        };
        redis::sentinel::Sentinel::build(sentinels.clone())?
            .async_master_for(master, None)
            .await
    }

    /// Whether it connects to a cluster.
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self, Client::Cluster(_))
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Node(c) => c.req_packed_command(cmd),
            Connection::Managed(c) => c.req_packed_command(cmd),
            Connection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Node(c) => c.req_packed_commands(pipeline, offset, count),
            Connection::Managed(c) => c.req_packed_commands(pipeline, offset, count),
            Connection::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Node(c) => c.get_db(),
            Connection::Managed(c) => c.get_db(),
            Connection::Cluster(c) => c.get_db(),
        }
    }
}

/// No answer within the deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Elapsed;

/// The process's Redis I/O runtime, started on first use.
fn runtime() -> Result<&'static tokio::runtime::Runtime, Error> {
    static RUNTIME: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| Error::config("store", format!("cannot start the Redis I/O runtime: {e}")))
}

/// Starts the process's Redis I/O runtime if it is not running, so that a part that will
/// call [`within`] fails when it is built rather than on its first call.
pub(crate) fn start() -> Result<(), Error> {
    runtime().map(|_| ())
}

/// Lets the runtime finish what dropped connections leave behind: a connection's driver task
/// ends, and closes its socket, only once it is polled after its last handle went, and with the
/// runtime shared nothing polls it unless someone waits on Redis. A part that holds
/// connections calls this when it is dropped, after dropping them. Does nothing inside another
/// runtime's task, where blocking is not allowed.
pub(crate) fn settle() {
    if tokio::runtime::Handle::try_current().is_ok() {
        return;
    }
    if let Ok(runtime) = runtime() {
        runtime.block_on(async {
            for _ in 0..4 {
                tokio::task::yield_now().await;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        });
    }
}

/// Runs `call` on the process's Redis I/O runtime, waiting at most `deadline`.
pub(crate) fn within<T>(deadline: Duration, call: impl Future<Output = T>) -> Result<T, Elapsed> {
    let runtime = runtime().expect("started when the part that calls was built");
    runtime.block_on(async {
        tokio::time::timeout(deadline, call)
            .await
            .map_err(|_| Elapsed)
    })
}
