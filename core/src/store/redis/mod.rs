//! The Redis store: decisions are made by a Lua script ([`decide.lua`]) that applies each
//! one's layers all-or-nothing, with the same algorithms as the memory store, ported step for
//! step, so that gateway processes sharing a Redis make the decisions one process would.
//! Decisions waiting at the same time go to Redis in one call (the `batch` module).
//!
//! - **Where**: one server (`redis`), a cluster (`redis_cluster`), or the primary Redis
//!   Sentinel names (`redis_sentinel`, asked again on every connection: after a failover the
//!   probe's connection finds the promoted replica, and the store connects to it).
//!
//! - **Scripts** are sent by SHA (`EVALSHA`); after a Redis restart, failover or `SCRIPT
//!   FLUSH` the `NOSCRIPT` reply makes the client load the script and call again, transparently.
//! - **Time** is the server's (`TIME`) unless `store.clock = "local"`: then the caller's clock,
//!   or a request's explicit time, is passed in (the conformance vectors run that way).
//! - **Keys** are `PREFIX{RULE/VARIANT/=KEY}ALG` (a `-` instead of `=KEY` for requests lacking
//!   the keyed part; `ALG` is `f`, `s`, `c` or `b` — `k` for a fixed window aligned to the
//!   calendar, whose boundaries the caller sends, `q` for a concurrency limit, whose holds
//!   the script keeps as a sliding log — so that a rule whose algorithm changes
//!   starts afresh; a sliding log adds a `:total` key next to its list). A value that cannot be
//!   read as the algorithm's state is taken for a fresh state. Every key is written with
//!   a TTL (`PX`, relative to the script's time, rounded up to the millisecond, at least one
//!   second) after which its state equals a fresh one; keys whose state is fresh are deleted
//!   rather than written. A sliding log is trimmed on every call, so it holds at most `limit`
//!   entries. Rules with `sync` keep a hash per key and window instead (the `sync` module).
//!   A rule that blocks keys after denials (`block_for`) keeps each key's blocking in
//!   `PREFIX{RULE/VARIANT/=KEY}!`, beside its state and in its slot.
//! - **Connections**: one multiplexed connection (`ConnectionManager`, which reconnects by
//!   itself; a cluster connection, which follows `MOVED`/`ASK`, for `redis_cluster`) shared by
//!   every caller, so that concurrent decisions pipeline on it. The process's Redis I/O
//!   runtime (the `link` module, shared with the stream sink and reader) drives it, run by
//!   whichever caller is waiting — no hand-off to an I/O
//!   thread (measured: against one worker thread, 10% more decisions per second at 64 callers
//!   and a lower p99 at one; against a pool of blocking connections, which was 7% faster for
//!   one caller but half as fast at 64). Each call has the configured deadline.
//! - **Cluster**: each layer's key carries its own hash tag, so a per-user layer and a global
//!   layer usually live on different nodes, and no script ever touches two slots (no
//!   `CROSSSLOT`). A decision whose layers all share a slot is one atomic script call, as on a
//!   single node. Otherwise it takes two steps: every slot's layers are *evaluated* (nothing
//!   consumed) — if one denies, that is the decision and nothing was consumed anywhere; if all
//!   admit, each slot *decides* in turn (evaluate and consume, atomically per slot), and if one
//!   denies after all (another caller consumed in between), the slots that consumed are
//!   *refunded*. A decision never admits more than every layer's limit allows; under a race
//!   it may deny a request a single node would have admitted.
//! - **Numbers**: Lua computes in doubles, exact below 2^53. The engine refuses, for this store,
//!   a `sliding_window_counter` whose `limit × window` (in µs) reaches 2^53, the only product
//!   that could (every other value is bounded by the 366-day cap on periods).
//! - **Redis 6.2** or later: a fixed window's bare count expires at its window's end (`PXAT`;
//!   see `decide.lua`), and other writes within a window keep their key's expiry (`KEEPTTL`).
//!
//! [`decide.lua`]: https://github.com/floodwall/floodwall/blob/main/core/src/store/redis/decide.lua

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use super::{ABSENT, Adjustment, Layer};
use crate::clock::{Clock, SystemClock, Timestamp};
use crate::error::Error;
use crate::limit::{Algorithm, Outcome};
use crate::link::{Client, Connection, RedisLocation};
use crate::store::{StoreClock, StoreConfig};

mod alone;
mod batch;
mod connection;
mod failure;
mod slots;
mod sync;

use batch::{Combiner, Encoded};
pub use connection::ShardMap;
pub use failure::{Failed, StoreFailure};
pub use sync::SYNC_LUA;
pub(crate) use sync::{SyncItem, SyncedCount};

/// The decision script.
pub const DECIDE_LUA: &str = include_str!("decide.lua");

/// The administration script (forget a key, block it, give it a limit of its own).
pub const ADMIN_LUA: &str = include_str!("admin.lua");

/// A script call's mode (the decision script's `ARGV[1]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Evaluate every layer; consume only if all admit.
    Decide,
    /// Evaluate only.
    Evaluate,
    /// Give back what a `Decide` at the given time consumed.
    Refund,
    /// Take the cost without asking.
    Charge,
    /// Give back the cost at the given time (an administrator's reward).
    Reward,
}

/// Limiter state in one Redis server or cluster.
pub struct RedisStore {
    client: Client,
    /// The shared connection, once made.
    connection: Mutex<Option<Connection>>,
    script: Arc<redis::Script>,
    /// The sync script of rules that count locally (`sync.lua`).
    sync_script: redis::Script,
    /// The administration script (`admin.lua`).
    admin_script: redis::Script,
    prefix: String,
    timeout: Duration,
    local_clock: bool,
    /// When it was made (its health, on its own, is `ok` since then).
    since: Timestamp,
    /// Concurrent callers' decisions, sent together.
    combiner: Combiner,
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

impl Drop for RedisStore {
    fn drop(&mut self) {
        // Its connection's socket closes now, not when another part next waits on Redis.
        self.connection.get_mut().take();
        crate::link::settle();
    }
}

impl RedisStore {
    /// A store for `config` (kind `redis`, `redis_cluster` or `redis_sentinel`, its values
    /// checked as the engine checks them); it connects on first use, and again by itself
    /// whenever the connection is lost.
    pub fn new(config: &StoreConfig) -> Result<Self, Error> {
        config.check()?;
        let (location, field, shared) = match config {
            StoreConfig::RedisCluster(cluster) => (
                RedisLocation::Cluster(cluster.urls.clone()),
                "store.urls",
                &cluster.shared,
            ),
            StoreConfig::Redis(redis) => (
                RedisLocation::Node(redis.url.clone()),
                "store.url",
                &redis.shared,
            ),
            StoreConfig::RedisSentinel(sentinel) => (
                RedisLocation::Sentinel {
                    sentinels: sentinel.sentinels.clone(),
                    master: sentinel.master.clone(),
                },
                "store.sentinels",
                &sentinel.shared,
            ),
            StoreConfig::Memory(_) => {
                return Err(Error::config(
                    "store.kind",
                    "a Redis store needs kind = \"redis\", \"redis_cluster\" or \"redis_sentinel\"",
                ));
            }
        };
        let client = location.client(field, shared.timeout.0, None)?;
        crate::link::start()?;
        Ok(RedisStore {
            client,
            connection: Mutex::new(None),
            script: Arc::new(redis::Script::new(DECIDE_LUA)),
            sync_script: redis::Script::new(SYNC_LUA),
            admin_script: redis::Script::new(ADMIN_LUA),
            prefix: shared.prefix.clone(),
            timeout: shared.timeout.0,
            local_clock: shared.clock == StoreClock::Local,
            since: SystemClock.now(),
            combiner: Combiner::default(),
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

    /// One decision's part of a script call (see [`Encoded`]).
    fn encode(&self, mode: Mode, layers: &[Layer<'_>], cost: u64, now: Timestamp) -> Encoded {
        let mut keys: Vec<Vec<u8>> = Vec::with_capacity(layers.len() + 1);
        let mut shape: Vec<String> = Vec::with_capacity(2 + 3 * layers.len());
        shape.push(
            match mode {
                Mode::Decide => "d",
                Mode::Evaluate => "e",
                Mode::Refund => "r",
                Mode::Charge => "a",
                Mode::Reward => "w",
            }
            .to_owned(),
        );
        shape.push(layers.len().to_string());
        let time = (self.local_clock || matches!(mode, Mode::Refund | Mode::Reward))
            .then(|| now.as_micros().to_string());
        for layer in layers {
            let quota = layer.quota;
            let code = if quota.calendar().is_some() {
                b'k'
            } else {
                code_of(quota.algorithm())
            };
            let period = match quota.algorithm() {
                Algorithm::TokenBucket => quota
                    .emission_interval()
                    .unwrap_or(Duration::from_micros(1)),
                _ => quota.period(),
            };
            // The algorithm is part of the key: a rule whose algorithm changes starts afresh
            // instead of reading another algorithm's state.
            let mut key = self.key(layer);
            let block = quota.block().map(|block| {
                let mut blocks = key.clone();
                blocks.push(b'!');
                (block, blocks)
            });
            key.push(code);
            // A concurrency limit is a log of holds: the script keeps it as sliding_window's.
            let code = if code == b'q' { b's' } else { code };
            if code == b's' {
                let mut total = key.clone();
                total.extend_from_slice(b":total");
                keys.push(key);
                keys.push(total);
            } else {
                keys.push(key);
            }
            // Upper case marks a shadow layer: its denial denies nothing.
            let code = char::from(if layer.shadow {
                code.to_ascii_uppercase()
            } else {
                code
            });
            let own = quota.key_limits();
            shape.push(match (block.is_some(), own) {
                (false, false) => code.to_string(),
                (true, false) => format!("{code}!"),
                (false, true) => format!("{code}~"),
                (true, true) => format!("{code}!~"),
            });
            shape.push(quota.limit().to_string());
            shape.push(period.as_micros().to_string());
            if let Some(calendar) = quota.calendar() {
                // The windows around the caller's clock; the script's time picks one.
                let index = calendar.index(now.as_micros());
                let ends = [
                    calendar.start(index),
                    calendar.end(index),
                    calendar.end(index + 1),
                ];
                shape.push(index.to_string());
                shape.extend(ends.iter().map(u64::to_string));
            }
            if let Some((block, blocks)) = block {
                keys.push(blocks);
                shape.push(block.duration().as_micros().to_string());
                shape.push(block.after().to_string());
                shape.push(quota.block_window().to_string());
            }
            if own {
                keys.push(self.own_key(layer));
            }
        }
        Encoded {
            keys,
            shape,
            cost: cost.to_string(),
            time,
            layers: layers.len(),
            owns: layers.iter().filter(|l| l.quota.key_limits()).count(),
        }
    }

    /// The `EVALSHA` of `decisions`, decided in order in one script call: their keys, the
    /// shapes they have (each sent once), then each decision's shape, cost and time.
    fn call_of<'e>(&self, decisions: impl IntoIterator<Item = &'e Encoded> + Clone) -> redis::Cmd {
        let mut count = 0;
        let mut timed = false;
        let mut shapes: Vec<&[String]> = Vec::new();
        let mut which: Vec<usize> = Vec::new();
        for d in decisions.clone() {
            count += d.keys.len();
            timed |= d.time.is_some();
            let at = match shapes.iter().position(|s| *s == d.shape.as_slice()) {
                Some(at) => at,
                None => {
                    shapes.push(&d.shape);
                    shapes.len() - 1
                }
            };
            which.push(at + 1);
        }
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(self.script.get_hash()).arg(count);
        for d in decisions.clone() {
            cmd.arg(&d.keys);
        }
        cmd.arg(if timed { "t" } else { "" }).arg(shapes.len());
        for shape in &shapes {
            cmd.arg(*shape);
        }
        for (d, shape) in decisions.into_iter().zip(which) {
            cmd.arg(shape).arg(&d.cost);
            if timed {
                cmd.arg(d.time.as_deref().unwrap_or(""));
            }
        }
        cmd
    }

    /// The `EVALSHA` of one decision.
    fn command(&self, mode: Mode, layers: &[Layer<'_>], cost: u64, now: Timestamp) -> redis::Cmd {
        self.call_of([&self.encode(mode, layers, cost, now)])
    }

    /// Each call's deadline (`store.timeout`).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Applies `layers` at `now` (or the server's time) all-or-nothing; fills `outcomes`, and
    /// `times` with the time each layer was decided at (what a refund names), and returns
    /// whether the request is admitted. One script call, unless the layers of a cluster
    /// decision live in several slots (see the module docs).
    pub fn decide(
        &self,
        layers: &[Layer<'_>],
        cost: u64,
        now: Timestamp,
        outcomes: &mut [Outcome],
        times: &mut [Timestamp],
    ) -> Result<bool, Failed> {
        let groups = if self.is_cluster() {
            self.slot_groups(layers)
        } else {
            Vec::new()
        };
        if groups.len() <= 1 {
            let encoded = self.encode(Mode::Decide, layers, cost, now);
            let reply = self.decide_combined(vec![encoded], None).pop();
            let reply = reply.unwrap_or_else(|| Err(no_reply()))?;
            let (all, used) = read_reply(&reply, layers, outcomes)?;
            times.fill(Timestamp::from_micros(used));
            return Ok(all);
        }
        let subset = |g: &[usize]| -> Vec<Layer<'_>> { g.iter().map(|&i| layers[i]).collect() };
        // Step 1: evaluate every slot; a denial there is the decision, with nothing consumed.
        let evaluations: Vec<redis::Cmd> = groups
            .iter()
            .map(|g| self.command(Mode::Evaluate, &subset(g), cost, now))
            .collect();
        let replies = self.run(&evaluations)?;
        let mut all = true;
        for (g, reply) in groups.iter().zip(&replies) {
            let mut out = vec![Outcome::default(); g.len()];
            all &= read_reply(reply, &subset(g), &mut out)?.0;
            for (&i, o) in g.iter().zip(out) {
                outcomes[i] = o;
            }
        }
        if !all {
            return Ok(false);
        }
        // Step 2: decide slot by slot; refund the slots that consumed if a later one denies.
        let mut consumed: Vec<(usize, u64)> = Vec::new();
        for (k, g) in groups.iter().enumerate() {
            let reply = self.run(&[self.command(Mode::Decide, &subset(g), cost, now)]);
            let mut out = vec![Outcome::default(); g.len()];
            let admitted = match reply.and_then(|r| Ok(read_reply(&r[0], &subset(g), &mut out)?)) {
                Ok((admitted, used)) => {
                    for (&i, o) in g.iter().zip(out) {
                        outcomes[i] = o;
                        times[i] = Timestamp::from_micros(used);
                    }
                    if admitted {
                        consumed.push((k, used));
                    }
                    Ok(admitted)
                }
                Err(e) => Err(e),
            };
            if !matches!(admitted, Ok(true)) {
                let refunds: Vec<redis::Cmd> = consumed
                    .iter()
                    .map(|&(k, used)| {
                        self.command(
                            Mode::Refund,
                            &subset(&groups[k]),
                            cost,
                            Timestamp::from_micros(used),
                        )
                    })
                    .collect();
                if !refunds.is_empty() {
                    self.run(&refunds)?;
                }
                return admitted;
            }
        }
        Ok(true)
    }

    /// Applies refunds and charges: one script call on a single node, one per slot on a
    /// cluster, all in one round trip.
    pub fn adjust(&self, ops: &[(Layer<'_>, Adjustment)]) -> Result<(), Failed> {
        let encoded: Vec<Encoded> = ops
            .iter()
            .map(|(layer, adjustment)| {
                let (mode, cost, at) = match *adjustment {
                    Adjustment::Refund { cost, at } => (Mode::Refund, cost, at),
                    Adjustment::Charge { cost, at } => (Mode::Charge, cost, at),
                };
                self.encode(mode, std::slice::from_ref(layer), cost, at)
            })
            .collect();
        if encoded.is_empty() {
            return Ok(());
        }
        let all: Vec<&Encoded> = encoded.iter().collect();
        let failed: Vec<Failed> = self
            .run_batched(&all, self.timeout)
            .into_iter()
            .filter_map(Result::err)
            .collect();
        Failed::merge(failed).map_or(Ok(()), Err)
    }

    /// Several decisions in one round trip, in as few script calls as the store allows (one
    /// on a single node, one per slot on a cluster; see the `batch` module), each
    /// all-or-nothing on its own: `(layers, cost, now)` each, their outcomes written to the
    /// matching slice, each with its own result (on a cluster, a node down fails only the
    /// decisions it holds). On a cluster, decisions spanning several slots are taken one by
    /// one ([`decide`](Self::decide)).
    ///
    /// `queued`: when the batch's oldest request began waiting; the deadline counts from then.
    pub fn decide_many(
        &self,
        batch: &[(&[Layer<'_>], u64, Timestamp)],
        outcomes: &mut [&mut [Outcome]],
        queued: Option<std::time::Instant>,
    ) -> Vec<Result<bool, Failed>> {
        let mut verdicts: Vec<Result<bool, Failed>> = vec![Ok(false); batch.len()];
        let mut simple: Vec<usize> = Vec::with_capacity(batch.len());
        for (i, &(layers, cost, now)) in batch.iter().enumerate() {
            if self.is_cluster() && self.slot_groups(layers).len() > 1 {
                let mut times = vec![Timestamp::EPOCH; layers.len()];
                verdicts[i] = self.decide(layers, cost, now, outcomes[i], &mut times);
            } else {
                simple.push(i);
            }
        }
        if simple.is_empty() {
            return verdicts;
        }
        let encoded: Vec<Encoded> = simple
            .iter()
            .map(|&i| {
                let (layers, cost, now) = batch[i];
                self.encode(Mode::Decide, layers, cost, now)
            })
            .collect();
        let replies = self.decide_combined(encoded, queued);
        for (&i, reply) in simple.iter().zip(replies) {
            verdicts[i] = reply.and_then(|r| Ok(read_reply(&r, batch[i].0, outcomes[i])?.0));
        }
        verdicts
    }

    /// Applies `op` to `layer`'s key at `now` (the caller's clock; Redis's own unless
    /// `store.clock = "local"`, except for a reward, which names its time).
    pub fn administer(
        &self,
        layer: &Layer<'_>,
        op: crate::store::KeyOp,
        now: Timestamp,
    ) -> Result<(), Failed> {
        use crate::store::KeyOp;
        let command = match op {
            KeyOp::Charge { cost } => {
                self.command(Mode::Charge, std::slice::from_ref(layer), cost, now)
            }
            KeyOp::Reward { cost } => {
                self.command(Mode::Reward, std::slice::from_ref(layer), cost, now)
            }
            KeyOp::SetLimit { .. } | KeyOp::ClearLimit => {
                let mut cmd = redis::cmd("EVALSHA");
                cmd.arg(self.admin_script.get_hash())
                    .arg(1)
                    .arg(self.own_key(layer));
                if let KeyOp::SetLimit {
                    limit,
                    period,
                    lifetime,
                } = op
                {
                    cmd.arg("l")
                        .arg(format!("{limit}:{period}"))
                        .arg(crate::clock::duration_micros(lifetime).max(1))
                        .arg(self.time_arg(now));
                } else {
                    cmd.arg("c");
                }
                return self
                    .run_script(&self.admin_script, ADMIN_LUA, &[cmd], self.timeout)
                    .pop()
                    .unwrap_or_else(|| Err(no_reply()))
                    .map(|_| ());
            }
            KeyOp::Forget | KeyOp::Block { .. } => {
                let base = self.key(layer);
                let quota = layer.quota;
                let code = if quota.calendar().is_some() {
                    b'k'
                } else {
                    code_of(quota.algorithm())
                };
                let mut keys: Vec<Vec<u8>> = Vec::with_capacity(3);
                let mut state = base.clone();
                state.push(code);
                if matches!(code, b's' | b'q') {
                    let mut total = state.clone();
                    total.extend_from_slice(b":total");
                    keys.push(total);
                }
                keys.push(state);
                let mut blocks = base;
                blocks.push(b'!');
                keys.push(blocks);
                let mut cmd = redis::cmd("EVALSHA");
                cmd.arg(self.admin_script.get_hash())
                    .arg(keys.len())
                    .arg(&keys);
                match op {
                    KeyOp::Block { length } => {
                        cmd.arg("b")
                            .arg(crate::clock::duration_micros(length).max(1))
                            .arg(self.time_arg(now));
                    }
                    _ => {
                        cmd.arg("f");
                    }
                }
                return self
                    .run_script(&self.admin_script, ADMIN_LUA, &[cmd], self.timeout)
                    .pop()
                    .unwrap_or_else(|| Err(no_reply()))
                    .map(|_| ());
            }
        };
        self.run(&[command]).map(|_| ())
    }

    /// The time argument of an administration at `now`: its µs on the caller's clock
    /// (`store.clock = "local"`), or empty for Redis's `TIME`.
    fn time_arg(&self, now: Timestamp) -> String {
        if self.local_clock {
            now.as_micros().to_string()
        } else {
            String::new()
        }
    }

    /// The own limit of `layer`'s key and how long from `now` it stays in force, if it has one.
    pub fn key_limit(
        &self,
        layer: &Layer<'_>,
        now: Timestamp,
    ) -> Result<Option<(u64, Duration)>, Failed> {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(self.admin_script.get_hash())
            .arg(1)
            .arg(self.own_key(layer))
            .arg("q")
            .arg(self.time_arg(now));
        let reply = self
            .run_script(&self.admin_script, ADMIN_LUA, &[cmd], self.timeout)
            .pop()
            .unwrap_or_else(|| Err(no_reply()))?;
        Ok(match reply[..] {
            [limit, left] if limit > 0 && left > 0 => Some((
                limit.unsigned_abs(),
                Duration::from_micros(left.unsigned_abs()),
            )),
            _ => None,
        })
    }

    /// The key of `layer`'s key's own limit, `PREFIX{RULE/VARIANT/=KEY}~`, beside its state
    /// and in its slot.
    fn own_key(&self, layer: &Layer<'_>) -> Vec<u8> {
        let mut key = self.key(layer);
        key.push(b'~');
        key
    }

    /// The hash slot `layer`'s state lives in (on a cluster).
    pub(crate) fn slot(&self, layer: &Layer<'_>) -> u16 {
        slots::hash_slot(&self.key(layer))
    }

    /// Whether the store is on a cluster.
    pub(crate) fn is_cluster(&self) -> bool {
        self.client.is_cluster()
    }
}

/// The letter of `algorithm` in key names and in the decision script's shapes.
fn code_of(algorithm: Algorithm) -> u8 {
    match algorithm {
        Algorithm::FixedWindow => b'f',
        Algorithm::SlidingWindow => b's',
        Algorithm::SlidingWindowCounter => b'c',
        Algorithm::TokenBucket => b'b',
        Algorithm::Concurrency => b'q',
    }
}

/// The failure of a decision the store answered nothing for.
fn no_reply() -> Failed {
    StoreFailure::Redis("no reply to a decision".into()).into()
}

/// One script reply for `layers`: `[all, then allowed, remaining, reset_after, retry_after
/// per layer — and the key's own limit for a layer whose quota takes key limits —, the time
/// used]`; returns (all, time used).
fn read_reply(
    reply: &[i64],
    layers: &[Layer<'_>],
    outcomes: &mut [Outcome],
) -> Result<(bool, u64), StoreFailure> {
    let owns = layers.iter().filter(|l| l.quota.key_limits()).count();
    if reply.len() != 2 + 4 * outcomes.len() + owns || layers.len() != outcomes.len() {
        return Err(StoreFailure::Redis(format!(
            "the decision script answered {} values for {} layers",
            reply.len(),
            outcomes.len()
        )));
    }
    let u = |v: i64| u64::try_from(v).unwrap_or(0);
    let mut at = 1;
    for (outcome, layer) in outcomes.iter_mut().zip(layers) {
        let values = &reply[at..at + 4];
        *outcome = Outcome::new(values[0] == 1, u(values[1]), u(values[2]), u(values[3]));
        if values[0] == 2 {
            *outcome = outcome.block(u(values[3]));
        }
        at += 4;
        if layer.quota.key_limits() {
            if reply[at] > 0 {
                *outcome = outcome.under_own(u(reply[at]));
            }
            at += 1;
        }
    }
    let used = u64::try_from(reply[reply.len() - 1]).unwrap_or(0);
    Ok((reply[0] == 1, used))
}
