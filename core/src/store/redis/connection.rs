//! The connections: one shared, multiplexed connection (a cluster connection on a cluster),
//! made on first use or at build, each call within its deadline on the store's own runtime;
//! the probe's connection of its own; and the `NOSCRIPT` reload.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;

use super::{RedisStore, StoreFailure};

/// Where the store connects, and its connection once made.
pub(super) enum Target {
    Single(redis::Client, Mutex<Option<ConnectionManager>>),
    Cluster(Box<ClusterClient>, Mutex<Option<ClusterConnection>>),
}

/// A connection to either.
#[derive(Clone)]
pub(super) enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl RedisStore {
    pub(super) async fn connection(&self) -> Result<Connection, redis::RedisError> {
        self.connection_within(self.timeout).await
    }

    /// The shared connection, made within `deadline` when there is none.
    pub(super) async fn connection_within(
        &self,
        deadline: Duration,
    ) -> Result<Connection, redis::RedisError> {
        match &self.target {
            Target::Single(client, slot) => {
                if let Some(c) = slot.lock().clone() {
                    return Ok(Connection::Single(c));
                }
                // No retry of its own: a refused connection is reported as refused at once,
                // and the failover store decides what comes next.
                let config = ConnectionManagerConfig::new()
                    .set_number_of_retries(0)
                    .set_connection_timeout(Some(deadline))
                    .set_response_timeout(Some(self.timeout));
                let c = ConnectionManager::new_with_config(client.clone(), config).await?;
                *slot.lock() = Some(c.clone());
                Ok(Connection::Single(c))
            }
            Target::Cluster(client, slot) => {
                if let Some(c) = slot.lock().clone() {
                    return Ok(Connection::Cluster(c));
                }
                let c = client.get_async_connection().await?;
                *slot.lock() = Some(c.clone());
                Ok(Connection::Cluster(c))
            }
        }
    }

    /// Runs `commands` (one round trip: pipelined on one node, concurrent across a cluster)
    /// within the deadline, loading the script and trying once more when Redis does not know
    /// it (`NOSCRIPT`).
    pub(super) fn run(&self, commands: &[redis::Cmd]) -> Result<Vec<Vec<i64>>, StoreFailure> {
        self.within(self.timeout, async {
            match self.connection().await? {
                Connection::Single(mut c) => run_on(&mut c, &self.script, commands, false).await,
                Connection::Cluster(mut c) => run_on(&mut c, &self.script, commands, true).await,
            }
        })
    }

    /// Runs `call` on the store's runtime, failing with [`StoreFailure::Timeout`] past
    /// `deadline`.
    pub(super) fn within<T>(
        &self,
        deadline: Duration,
        call: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreFailure> {
        self.runtime.block_on(async {
            match tokio::time::timeout(deadline, call).await {
                Ok(Ok(value)) => Ok(value),
                Ok(Err(e)) => Err(StoreFailure::of(&e)),
                Err(_) => Err(StoreFailure::Timeout),
            }
        })
    }

    /// Asks Redis, on a connection of its own rather than the shared one, whether it can decide
    /// again: it must accept a write (an out-of-memory server refuses them) and know the
    /// decision script, which is loaded when it does not. On success the shared connection is
    /// dropped, so that the next decision connects afresh instead of waiting out the old
    /// connection's reconnection backoff. Takes at most `deadline`.
    pub fn probe(&self, deadline: Duration) -> Result<(), StoreFailure> {
        let key = format!("{}health", self.prefix);
        let script = Arc::clone(&self.script);
        let result = self.within(deadline, async {
            let mut check = redis::pipe();
            check
                .cmd("SET")
                .arg(&key)
                .arg(1)
                .arg("PX")
                .arg(1000)
                .ignore()
                .cmd("SCRIPT")
                .arg("EXISTS")
                .arg(script.get_hash());
            match &self.target {
                Target::Single(client, _) => {
                    let config = redis::AsyncConnectionConfig::new()
                        .set_connection_timeout(Some(deadline))
                        .set_response_timeout(Some(deadline));
                    let mut c = client
                        .get_multiplexed_async_connection_with_config(&config)
                        .await?;
                    let (known,): (Vec<bool>,) = check.query_async(&mut c).await?;
                    if !known.first().copied().unwrap_or(false) {
                        script.load_async(&mut c).await?;
                    }
                }
                Target::Cluster(client, _) => {
                    let mut c = client.get_async_connection().await?;
                    let mut write = redis::cmd("SET");
                    write.arg(&key).arg(1).arg("PX").arg(1000);
                    write.query_async::<()>(&mut c).await?;
                }
            }
            Ok(())
        });
        if result.is_ok() {
            self.drop_connection();
        }
        result
    }

    /// Connects the shared connection and loads the decision script, within `deadline`: what
    /// the first decision would otherwise pay (a connect and a `SCRIPT LOAD`, 3–20 ms).
    pub fn connect(&self, deadline: Duration) -> Result<(), StoreFailure> {
        self.within(deadline, async {
            match self.connection_within(deadline).await? {
                Connection::Single(mut c) => {
                    self.script.load_async(&mut c).await?;
                }
                Connection::Cluster(mut c) => {
                    // Each primary: the script is loaded where a call first needs it.
                    redis::cmd("PING").query_async::<()>(&mut c).await?;
                }
            }
            Ok(())
        })
    }

    /// Forgets the shared connection; the next call makes a new one.
    pub(super) fn drop_connection(&self) {
        match &self.target {
            Target::Single(_, slot) => *slot.lock() = None,
            Target::Cluster(_, slot) => *slot.lock() = None,
        }
    }
}

/// Runs `commands` on one connection, reloading the script once on `NOSCRIPT`. On a cluster
/// they are sent concurrently (each routed by its first key); on one node, as a pipeline.
async fn run_on<C: ConnectionLike + Clone + Send + 'static>(
    connection: &mut C,
    script: &redis::Script,
    commands: &[redis::Cmd],
    cluster: bool,
) -> redis::RedisResult<Vec<Vec<i64>>> {
    for attempt in 0..2 {
        let result: redis::RedisResult<Vec<Vec<i64>>> = match commands {
            [one] => one.query_async(connection).await.map(|r| vec![r]),
            many if cluster => {
                let calls = many.iter().map(|c| {
                    let mut connection = connection.clone();
                    let c = c.clone();
                    async move { c.query_async::<Vec<i64>>(&mut connection).await }
                });
                futures_util::future::join_all(calls)
                    .await
                    .into_iter()
                    .collect()
            }
            many => {
                let mut pipe = redis::pipe();
                for c in many {
                    pipe.add_command(c.clone());
                }
                pipe.query_async(connection).await
            }
        };
        match result {
            Err(e)
                if attempt == 0
                    && e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
            {
                script.load_async(connection).await?;
            }
            other => return other,
        }
    }
    unreachable!("the second attempt returns")
}
