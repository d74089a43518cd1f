//! The store's connections (made through [`crate::link`]): one shared connection — a node
//! connection that reconnects by itself, or a cluster connection — made on first use or at
//! build, each call within its deadline on the process's Redis I/O runtime; the probe's
//! connection of its own; and the `NOSCRIPT` reload.

use std::sync::Arc;
use std::time::Duration;

use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};

use super::slots::{hash_slot, tag_of_slot};
use super::{Failed, RedisStore, StoreFailure};
use crate::link::{self, Connection};

impl RedisStore {
    pub(super) async fn connection(&self) -> Result<Connection, redis::RedisError> {
        self.connection_within(self.timeout).await
    }

    /// The shared connection, made within `deadline` when there is none.
    pub(super) async fn connection_within(
        &self,
        deadline: Duration,
    ) -> Result<Connection, redis::RedisError> {
        if let Some(c) = self.connection.lock().clone() {
            return Ok(c);
        }
        let c = self.client.connect_lasting(deadline, self.timeout).await?;
        *self.connection.lock() = Some(c.clone());
        Ok(c)
    }

    /// Runs `commands` (one round trip: pipelined on one node, concurrent across a cluster)
    /// within the deadline, loading the script and trying once more when Redis does not know
    /// it (`NOSCRIPT`).
    pub(super) fn run(&self, commands: &[redis::Cmd]) -> Result<Vec<Vec<i64>>, Failed> {
        let mut replies = Vec::with_capacity(commands.len());
        let mut failed = Vec::new();
        for reply in self.run_each(commands) {
            match reply {
                Ok(r) => replies.push(r),
                Err(f) => failed.push(f),
            }
        }
        match Failed::merge(failed) {
            Some(f) => Err(f),
            None => Ok(replies),
        }
    }

    /// [`run`](Self::run), with each command's own result: on a cluster some commands can
    /// fail (a node down) while the others are decided, and each failure names its slot.
    pub(super) fn run_each(&self, commands: &[redis::Cmd]) -> Vec<Result<Vec<i64>, Failed>> {
        self.run_each_within(commands, self.timeout)
    }

    /// [`run_each`](Self::run_each) within `budget` instead of the store's deadline.
    pub(super) fn run_each_within(
        &self,
        commands: &[redis::Cmd],
        budget: Duration,
    ) -> Vec<Result<Vec<i64>, Failed>> {
        self.run_script(&self.script, super::DECIDE_LUA, commands, budget)
    }

    /// [`run_each_within`](Self::run_each_within) for `EVALSHA`s of `script` (whose text is
    /// `text`, sent as `EVAL` to a cluster node that does not know it).
    pub(super) fn run_script(
        &self,
        script: &redis::Script,
        text: &str,
        commands: &[redis::Cmd],
        budget: Duration,
    ) -> Vec<Result<Vec<i64>, Failed>> {
        let deadline = tokio::time::Instant::now() + budget;
        let all_failed = |f: StoreFailure| commands.iter().map(|_| Err(f.clone().into())).collect();
        let result = self.within(budget, async {
            let mut c = self.connection().await?;
            Ok(if self.is_cluster() {
                run_concurrent(&c, text, commands, deadline).await
            } else {
                match run_pipeline(&mut c, script, commands).await {
                    Ok(replies) => replies.into_iter().map(Ok).collect(),
                    Err(e) => all_failed(StoreFailure::of(&e)),
                }
            })
        });
        result.unwrap_or_else(all_failed)
    }

    /// Runs `call` on the Redis I/O runtime, failing with [`StoreFailure::Timeout`] past
    /// `deadline`.
    pub(super) fn within<T>(
        &self,
        deadline: Duration,
        call: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreFailure> {
        match link::within(deadline, call) {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(StoreFailure::of(&e)),
            Err(link::Elapsed) => Err(StoreFailure::Timeout),
        }
    }

    /// Asks Redis, on a connection of its own rather than the shared one, whether it can decide
    /// again: it must accept a write (an out-of-memory server refuses them) and know the
    /// decision script, which is loaded when it does not. On success the shared connection is
    /// dropped, so that the next decision connects afresh instead of waiting out the old
    /// connection's reconnection backoff. Takes at most `deadline`. On a cluster, `slot`
    /// names the node asked: the one serving that slot (any node without one).
    pub fn probe(&self, deadline: Duration, slot: Option<u16>) -> Result<(), StoreFailure> {
        let key = match slot {
            Some(slot) => format!("{}health{{{}}}", self.prefix, tag_of_slot(slot)),
            None => format!("{}health", self.prefix),
        };
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
            let mut c = self.client.connect(deadline, Some(deadline)).await?;
            if self.is_cluster() {
                // Each primary: the script is loaded where a call first needs it.
                let mut write = redis::cmd("SET");
                write.arg(&key).arg(1).arg("PX").arg(1000);
                write.query_async::<()>(&mut c).await?;
            } else {
                let (known,): (Vec<bool>,) = check.query_async(&mut c).await?;
                if !known.first().copied().unwrap_or(false) {
                    script.load_async(&mut c).await?;
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
            let mut c = self.connection_within(deadline).await?;
            if self.is_cluster() {
                // Each primary: the script is loaded where a call first needs it.
                redis::cmd("PING").query_async::<()>(&mut c).await?;
            } else {
                self.script.load_async(&mut c).await?;
            }
            Ok(())
        })
    }

    /// On a cluster, its primaries and the slot ranges each serves (`CLUSTER SLOTS`), by
    /// address; `None` on a single node.
    pub fn shard_map(&self, deadline: Duration) -> Result<Option<ShardMap>, StoreFailure> {
        if !self.is_cluster() {
            return Ok(None);
        }
        self.within(deadline, async {
            let Connection::Cluster(mut c) = self.connection_within(deadline).await? else {
                unreachable!("a cluster store has a cluster connection")
            };
            // Any node answers; one that is down is passed over.
            let mut last = None;
            for _ in 0..3 {
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random);
                match c
                    .route_command(redis::cmd("CLUSTER").arg("SLOTS").clone(), routing)
                    .await
                {
                    Ok(reply) => return Ok(Some(read_slots(&reply))),
                    Err(e) => last = Some(e),
                }
            }
            Err(last.expect("three tries"))
        })
    }

    /// Forgets the shared connection; the next call makes a new one.
    pub(super) fn drop_connection(&self) {
        *self.connection.lock() = None;
    }
}

/// Runs `commands` on one node as a pipeline (one command alone), reloading the script once on
/// `NOSCRIPT` (which Redis answers before running anything).
async fn run_pipeline(
    connection: &mut Connection,
    script: &redis::Script,
    commands: &[redis::Cmd],
) -> redis::RedisResult<Vec<Vec<i64>>> {
    for attempt in 0..2 {
        let result: redis::RedisResult<Vec<Vec<i64>>> = match commands {
            [one] => one.query_async(connection).await.map(|r| vec![r]),
            many => {
                let mut pipe = redis::pipe();
                for c in many {
                    pipe.add_command(c.clone());
                }
                pipe.query_async(connection).await
            }
        };
        match result {
            Err(e) if attempt == 0 && is_noscript(&e) => {
                script.load_async(connection).await?;
            }
            other => return other,
        }
    }
    unreachable!("the second attempt returns")
}

/// Runs `commands` on a cluster concurrently, each routed by its first key and given until
/// `deadline`, so that one node's silence fails only its own commands. A command whose node
/// does not know the script is sent again as `EVAL` with the script's text (which that node
/// then keeps); only those, so that nothing is applied twice.
async fn run_concurrent(
    connection: &Connection,
    text: &str,
    commands: &[redis::Cmd],
    deadline: tokio::time::Instant,
) -> Vec<Result<Vec<i64>, Failed>> {
    // `None`: no answer by the deadline.
    let send = |command: redis::Cmd| {
        let mut connection = connection.clone();
        async move {
            tokio::time::timeout_at(deadline, command.query_async::<Vec<i64>>(&mut connection))
                .await
                .map_err(|_| None)?
                .map_err(Some)
        }
    };
    let mut replies =
        futures_util::future::join_all(commands.iter().map(|c| send(c.clone()))).await;
    let again: Vec<usize> = (0..replies.len())
        .filter(|&i| matches!(&replies[i], Err(Some(e)) if is_noscript(e)))
        .collect();
    if !again.is_empty() {
        let retried = futures_util::future::join_all(
            again.iter().map(|&i| send(as_eval(text, &commands[i]))),
        )
        .await;
        for (i, reply) in again.into_iter().zip(retried) {
            replies[i] = reply;
        }
    }
    replies
        .into_iter()
        .zip(commands)
        .map(|(reply, command)| {
            reply.map_err(|e| Failed {
                failure: e.map_or(StoreFailure::Timeout, |e| StoreFailure::of(&e)),
                slots: command_slot(command).into_iter().collect(),
            })
        })
        .collect()
}

/// A cluster's primaries by address (`host:port`), with the slot ranges each serves.
pub type ShardMap = Vec<(String, Vec<(u16, u16)>)>;

/// The primaries of a `CLUSTER SLOTS` reply: `[start, end, [host, port, id], replicas…]` each.
fn read_slots(reply: &redis::Value) -> ShardMap {
    use redis::Value;
    let mut map: ShardMap = Vec::new();
    let Value::Array(ranges) = reply else {
        return map;
    };
    for range in ranges {
        let Value::Array(fields) = range else {
            continue;
        };
        let (Some(Value::Int(start)), Some(Value::Int(end)), Some(Value::Array(primary))) =
            (fields.first(), fields.get(1), fields.get(2))
        else {
            continue;
        };
        let host = match primary.first() {
            Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
            Some(Value::SimpleString(s)) => s.clone(),
            _ => continue,
        };
        let Some(Value::Int(port)) = primary.get(1) else {
            continue;
        };
        let (Ok(start), Ok(end)) = (u16::try_from(*start), u16::try_from(*end)) else {
            continue;
        };
        let address = format!("{host}:{port}");
        match map.iter_mut().find(|(a, _)| *a == address) {
            Some((_, r)) => r.push((start, end)),
            None => map.push((address, vec![(start, end)])),
        }
    }
    map.sort();
    map
}

fn is_noscript(e: &redis::RedisError) -> bool {
    e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
}

/// The `EVAL` of an `EVALSHA` of the script whose text is `text`: the same keys and
/// arguments.
fn as_eval(text: &str, command: &redis::Cmd) -> redis::Cmd {
    let mut eval = redis::cmd("EVAL");
    eval.arg(text);
    for arg in command.args_iter().skip(2) {
        if let redis::Arg::Simple(bytes) = arg {
            eval.arg(bytes);
        }
    }
    eval
}

/// The hash slot of an `EVALSHA`'s first key.
fn command_slot(command: &redis::Cmd) -> Option<u16> {
    match command.args_iter().nth(3)? {
        redis::Arg::Simple(key) => Some(hash_slot(key)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use redis::Value;

    use super::read_slots;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn cluster_slots_give_each_primary_its_ranges() {
        // `[start, end, [host, port, id], replica…]`, a primary with two ranges, one with a
        // replica, and an entry that is not a range (skipped).
        let range = |a: i64, b: i64, port: i64, replica: bool| {
            let mut fields = vec![
                Value::Int(a),
                Value::Int(b),
                Value::Array(vec![bulk("127.0.0.1"), Value::Int(port), bulk("id")]),
            ];
            if replica {
                fields.push(Value::Array(vec![
                    bulk("127.0.0.1"),
                    Value::Int(port + 100),
                    bulk("r"),
                ]));
            }
            Value::Array(fields)
        };
        let reply = Value::Array(vec![
            range(5461, 10922, 7001, true),
            range(0, 5460, 7000, false),
            range(10923, 16000, 7002, false),
            range(16001, 16383, 7000, false),
            Value::Int(3),
        ]);
        assert_eq!(
            read_slots(&reply),
            vec![
                ("127.0.0.1:7000".to_owned(), vec![(0, 5460), (16001, 16383)]),
                ("127.0.0.1:7001".to_owned(), vec![(5461, 10922)]),
                ("127.0.0.1:7002".to_owned(), vec![(10923, 16000)]),
            ]
        );
        assert!(read_slots(&Value::Nil).is_empty());
    }
}
