//! The Redis store: every decision is one Lua script call ([`decide.lua`]) that applies all of
//! its layers all-or-nothing, with the same algorithms as the memory store, ported step for
//! step, so that gateway processes sharing a Redis make the decisions one process would.
//!
//! - **Scripts** are sent by SHA (`EVALSHA`); after a Redis restart, failover or `SCRIPT
//!   FLUSH` the `NOSCRIPT` reply makes the client load the script and call again, transparently.
//! - **Time** is the server's (`TIME`) unless `store.clock = "local"`: then the caller's clock,
//!   or a request's explicit time, is passed in (the conformance vectors run that way).
//! - **Keys** are `PREFIX{RULE/VARIANT/=KEY}` (a `-` instead of `=KEY` for requests lacking the
//!   keyed part; a sliding log adds a `:total` key next to its list). Every key is written with
//!   a TTL (`PX`, relative to the script's time, rounded up to the millisecond) after which its
//!   state equals a fresh one; keys whose state is fresh are deleted rather than written. A
//!   sliding log is trimmed on every call, so it holds at most `limit` entries.
//! - **Connections**: one multiplexed connection (`ConnectionManager`, which reconnects by
//!   itself) shared by every caller, so that concurrent decisions pipeline on it; a small tokio
//!   runtime owned by the store drives it. Each call has the configured deadline.
//! - **Numbers**: Lua computes in doubles, exact below 2^53. The engine refuses, for this store,
//!   a `sliding_window_counter` whose `limit × window` (in µs) reaches 2^53, the only product
//!   that could (every other value is bounded by the 366-day cap on periods).
//!
//! [`decide.lua`]: https://github.com/floodwall/floodwall/blob/main/core/src/store/decide.lua

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{ABSENT, Layer};
use crate::clock::Timestamp;
use crate::config::{StoreClock, StoreConfig};
use crate::error::Error;
use crate::limit::{Algorithm, Outcome};

/// The decision script.
pub const DECIDE_LUA: &str = include_str!("decide.lua");

/// Why a Redis call did not give a decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreFailure {
    /// No answer within the deadline.
    Timeout,
    /// Redis could not be reached or answered with an error.
    Redis(String),
}

impl fmt::Display for StoreFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreFailure::Timeout => f.write_str("no answer from Redis within the deadline"),
            StoreFailure::Redis(e) => write!(f, "redis: {e}"),
        }
    }
}

/// Limiter state in one Redis server.
pub struct RedisStore {
    runtime: tokio::runtime::Runtime,
    client: redis::Client,
    connection: Mutex<Option<ConnectionManager>>,
    script: Arc<redis::Script>,
    prefix: String,
    timeout: Duration,
    local_clock: bool,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("local_clock", &self.local_clock)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// A store for `config` (kind `redis`); it connects on first use, and again by itself
    /// whenever the connection is lost.
    pub fn new(config: &StoreConfig) -> Result<Self, Error> {
        let url = config.url.as_deref().ok_or_else(|| {
            Error::config(
                "store.url",
                "the redis store needs a url, e.g. \"redis://127.0.0.1:6379\"",
            )
        })?;
        let client = redis::Client::open(url)
            .map_err(|e| Error::config("store.url", format!("not a Redis URL: {e}")))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("floodwall-redis")
            .enable_all()
            .build()
            .map_err(|e| {
                Error::config("store", format!("cannot start the Redis I/O thread: {e}"))
            })?;
        Ok(RedisStore {
            runtime,
            client,
            connection: Mutex::new(None),
            script: Arc::new(redis::Script::new(DECIDE_LUA)),
            prefix: config.prefix.clone(),
            timeout: config.timeout.0,
            local_clock: config.clock == StoreClock::Local,
        })
    }

    /// The key of `layer`'s state.
    fn key(&self, layer: &Layer<'_>) -> Vec<u8> {
        let variant = layer.slot & 0xffff_ffff;
        let mut key =
            Vec::with_capacity(self.prefix.len() + layer.rule.len() + layer.key.len() + 16);
        key.extend_from_slice(self.prefix.as_bytes());
        key.push(b'{');
        key.extend_from_slice(layer.rule.as_bytes());
        key.extend_from_slice(format!("/{variant}/").as_bytes());
        if layer.slot & ABSENT != 0 {
            key.push(b'-');
        } else {
            key.push(b'=');
            key.extend_from_slice(layer.key);
        }
        key.push(b'}');
        key
    }

    async fn connection(&self) -> Result<ConnectionManager, redis::RedisError> {
        if let Some(c) = self.connection.lock().clone() {
            return Ok(c);
        }
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(1)
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        let c = ConnectionManager::new_with_config(self.client.clone(), config).await?;
        *self.connection.lock() = Some(c.clone());
        Ok(c)
    }

    /// The `EVALSHA` of one decision.
    fn command(&self, layers: &[Layer<'_>], cost: u64, now: Timestamp) -> redis::Cmd {
        let mut keys: Vec<Vec<u8>> = Vec::with_capacity(layers.len() + 1);
        let mut args: Vec<String> = Vec::with_capacity(3 + 3 * layers.len());
        args.push(if self.local_clock {
            now.as_micros().to_string()
        } else {
            String::new()
        });
        args.push(cost.to_string());
        args.push(layers.len().to_string());
        for layer in layers {
            let key = self.key(layer);
            let quota = layer.quota;
            let (code, period) = match quota.algorithm() {
                Algorithm::FixedWindow => ("f", quota.period()),
                Algorithm::SlidingWindow => ("s", quota.period()),
                Algorithm::SlidingWindowCounter => ("c", quota.period()),
                Algorithm::TokenBucket => (
                    "b",
                    quota
                        .emission_interval()
                        .unwrap_or(Duration::from_micros(1)),
                ),
            };
            if code == "s" {
                let mut total = key.clone();
                total.extend_from_slice(b":total");
                keys.push(key);
                keys.push(total);
            } else {
                keys.push(key);
            }
            args.push(code.to_owned());
            args.push(quota.limit().to_string());
            args.push(period.as_micros().to_string());
        }
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(self.script.get_hash())
            .arg(keys.len())
            .arg(keys)
            .arg(args);
        cmd
    }

    /// Runs `commands` (one round trip: pipelined when several) within the deadline, loading
    /// the script and trying once more when Redis does not know it (`NOSCRIPT`).
    fn run(&self, commands: &[redis::Cmd]) -> Result<Vec<Vec<i64>>, StoreFailure> {
        self.runtime.block_on(async {
            let call = async {
                let mut connection = self.connection().await?;
                for attempt in 0..2 {
                    let result: redis::RedisResult<Vec<Vec<i64>>> = if let [one] = commands {
                        one.query_async(&mut connection).await.map(|r| vec![r])
                    } else {
                        let mut pipe = redis::pipe();
                        for c in commands {
                            pipe.add_command(c.clone());
                        }
                        pipe.query_async(&mut connection).await
                    };
                    match result {
                        Err(e)
                            if attempt == 0
                                && e.kind()
                                    == redis::ErrorKind::Server(
                                        redis::ServerErrorKind::NoScript,
                                    ) =>
                        {
                            self.script.load_async(&mut connection).await?;
                        }
                        other => return other,
                    }
                }
                unreachable!("the second attempt returns")
            };
            match tokio::time::timeout(self.timeout, call).await {
                Ok(Ok(replies)) => Ok(replies),
                Ok(Err(e)) => Err(StoreFailure::Redis(e.to_string())),
                Err(_) => Err(StoreFailure::Timeout),
            }
        })
    }

    /// Applies `layers` at `now` (or the server's time) in one script call; fills `outcomes`
    /// and returns whether all admitted.
    pub fn decide(
        &self,
        layers: &[Layer<'_>],
        cost: u64,
        now: Timestamp,
        outcomes: &mut [Outcome],
    ) -> Result<bool, StoreFailure> {
        let replies = self.run(&[self.command(layers, cost, now)])?;
        read_reply(&replies[0], outcomes)
    }

    /// Several decisions in one round trip (a pipeline of script calls, each atomic on its
    /// own): `(layers, cost, now)` each, their outcomes written to the matching slice.
    pub fn decide_many(
        &self,
        batch: &[(&[Layer<'_>], u64, Timestamp)],
        outcomes: &mut [&mut [Outcome]],
    ) -> Result<Vec<bool>, StoreFailure> {
        let commands: Vec<redis::Cmd> = batch
            .iter()
            .map(|&(layers, cost, now)| self.command(layers, cost, now))
            .collect();
        if commands.is_empty() {
            return Ok(Vec::new());
        }
        let replies = self.run(&commands)?;
        if replies.len() != batch.len() {
            return Err(StoreFailure::Redis(format!(
                "{} replies to {} decisions",
                replies.len(),
                batch.len()
            )));
        }
        replies
            .iter()
            .zip(outcomes.iter_mut())
            .map(|(reply, out)| read_reply(reply, out))
            .collect()
    }
}

/// One script reply: `[all, then allowed, remaining, reset_after, retry_after per layer]`.
fn read_reply(reply: &[i64], outcomes: &mut [Outcome]) -> Result<bool, StoreFailure> {
    if reply.len() != 1 + 4 * outcomes.len() {
        return Err(StoreFailure::Redis(format!(
            "the decision script answered {} values for {} layers",
            reply.len(),
            outcomes.len()
        )));
    }
    for (outcome, values) in outcomes.iter_mut().zip(reply[1..].chunks(4)) {
        let u = |v: i64| u64::try_from(v).unwrap_or(0);
        *outcome = Outcome::new(values[0] == 1, u(values[1]), u(values[2]), u(values[3]));
    }
    Ok(reply[0] == 1)
}
