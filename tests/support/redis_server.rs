//! `redis-server` processes for tests: a single node on a free loopback port, started with
//! no persistence and stopped (killed) when dropped. A test that needs Redis fails — it does
//! not skip — when `redis-server` cannot be started (`make test` installs it when missing).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `redis-server`.
pub struct RedisServer {
    child: Child,
    port: u16,
    dir: PathBuf,
    extra: Vec<String>,
}

/// A free TCP port on 127.0.0.1 (free when asked; the server binds it right after).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A free port for a cluster node: its cluster bus (the port + 10000) must be free too, and
/// a valid port.
pub fn free_cluster_port() -> u16 {
    for _ in 0..200 {
        let port = free_port();
        if port <= 55_535 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port whose cluster bus port (+10000) is free too")
}

impl RedisServer {
    /// Starts a single node and waits (at most 10 s) until it answers `PING`.
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    /// Starts a single node on `port` (e.g. to restart one that was stopped).
    pub fn start_on(port: u16) -> Self {
        Self::start_with(port, &[])
    }

    /// Starts a node on `port` with `extra` arguments.
    pub fn start_with(port: u16, extra: &[&str]) -> Self {
        let dir =
            std::env::temp_dir().join(format!("floodwall-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a directory for redis-server");
        let extra: Vec<String> = extra.iter().map(|&a| a.to_owned()).collect();
        let child = Self::spawn(port, &dir, &extra);
        let server = RedisServer {
            child,
            port,
            dir,
            extra,
        };
        server.wait_for_ping();
        server
    }

    /// Starts it again after a [`kill`](Self::kill), on the same port, with the same
    /// arguments and directory (a cluster node rejoins its cluster from its config file).
    pub fn restart(&mut self) {
        self.kill();
        self.child = Self::spawn(self.port, &self.dir, &self.extra);
        self.wait_for_ping();
    }

    fn spawn(port: u16, dir: &std::path::Path, extra: &[String]) -> Child {
        Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                dir.to_str().expect("utf-8 temp dir"),
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start redis-server ({e}): install it (apt-get install redis-server); `make test` does")
            })
    }

    fn wait_for_ping(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.answers_ping() {
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} did not answer PING within 10 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Sends one command (inline protocol) and returns the raw reply.
    pub fn command(&self, command: &str) -> String {
        command_on(self.port, command)
    }

    /// The `PTTL` of `key` in ms (-2: no such key, -1: no expiry).
    pub fn pttl(&self, key: &str) -> i64 {
        let reply = self.command(&format!("PTTL \"{key}\""));
        reply
            .trim()
            .trim_start_matches(':')
            .parse()
            .unwrap_or_else(|_| panic!("PTTL reply {reply:?}"))
    }

    /// How many `EVALSHA` calls this server has answered.
    pub fn evalsha_calls(&self) -> u64 {
        self.command("INFO commandstats")
            .lines()
            .find(|l| l.starts_with("cmdstat_evalsha:"))
            .and_then(|l| l.split("calls=").nth(1))
            .and_then(|v| v.split(',').next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    }

    fn answers_ping(&self) -> bool {
        TcpStream::connect(("127.0.0.1", self.port)).is_ok_and(|mut s| {
            s.set_read_timeout(Some(Duration::from_millis(500))).ok();
            let mut buf = [0u8; 16];
            s.write_all(b"PING\r\n").is_ok()
                && s.read(&mut buf)
                    .is_ok_and(|n| buf[..n].starts_with(b"+PONG"))
        })
    }

    /// Stops the server now (kills it), as a crash would.
    pub fn kill(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

/// Sends one command (inline protocol) to the server on `port` and returns the raw reply.
pub fn command_on(port: u16, command: &str) -> String {
    try_command_on(port, command).expect("connect to redis")
}

/// [`command_on`], `None` when nothing answers on `port`.
pub fn try_command_on(port: u16, command: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream.write_all(format!("{command}\r\n").as_bytes()).ok()?;
    let mut reply = Vec::new();
    let mut buf = [0u8; 65536];
    // Read until the reply is a whole RESP value: a busy machine may hand it over in parts.
    while parsed(&reply).is_none() {
        let n = stream.read(&mut buf).unwrap_or(0);
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&buf[..n]);
    }
    Some(String::from_utf8_lossy(&reply).into_owned())
}

/// The length of the whole RESP value at the start of `reply`, if it is all there.
fn parsed(reply: &[u8]) -> Option<usize> {
    let line = reply.windows(2).position(|w| w == b"\r\n")?;
    let head = std::str::from_utf8(&reply[1..line]).ok()?;
    let after = line + 2;
    match reply.first()? {
        b'$' => {
            let n: i64 = head.parse().ok()?;
            if n < 0 {
                return Some(after);
            }
            let end = after + n as usize + 2;
            (reply.len() >= end).then_some(end)
        }
        b'*' => {
            let n: i64 = head.parse().ok()?;
            let mut at = after;
            for _ in 0..n.max(0) {
                at += parsed(&reply[at..])?;
            }
            Some(at)
        }
        _ => Some(after),
    }
}

/// A Redis Cluster of three primaries (no replicas) on free loopback ports.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts three cluster-enabled nodes, joins them with `redis-cli --cluster create`, and
    /// waits (at most 20 s) until every node reports `cluster_state:ok` and every replica is
    /// in sync.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// [`start`](Self::start), each node with `extra` arguments too.
    pub fn start_with(extra: &[&str]) -> Self {
        Self::start_nodes(extra, 0)
    }

    /// Three primaries with `replicas` replicas each (all in [`nodes`](Self::nodes), as
    /// `redis-cli --cluster create` assigns them), each node with `extra` arguments too.
    pub fn start_nodes(extra: &[&str], replicas: usize) -> Self {
        let nodes: Vec<RedisServer> = (0..3 * (1 + replicas))
            .map(|_| {
                let port = free_cluster_port();
                let config = format!("nodes-{port}.conf");
                let mut args = vec![
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    &config,
                    "--cluster-node-timeout",
                    "2000",
                ];
                args.extend_from_slice(extra);
                RedisServer::start_with(port, &args)
            })
            .collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .expect("redis-cli (Debian package redis-tools) runs");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while !nodes
            .iter()
            .all(|n| n.command("CLUSTER INFO").contains("cluster_state:ok"))
        {
            assert!(
                Instant::now() < deadline,
                "the cluster did not become ok within 20 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        // Every replica in sync with its primary.
        while !nodes.iter().all(|n| {
            let info = n.command("INFO replication");
            info.contains("role:master") || info.contains("master_link_status:up")
        }) {
            assert!(
                Instant::now() < deadline,
                "the replicas did not sync within 20 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        RedisCluster { nodes }
    }

    /// The seed URLs of its nodes.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// Its nodes.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// Its nodes, to stop and restart.
    pub fn nodes_mut(&mut self) -> &mut [RedisServer] {
        &mut self.nodes
    }

    /// How many CROSSSLOT errors its nodes have answered.
    pub fn crossslot_errors(&self) -> u64 {
        self.nodes
            .iter()
            .map(|n| {
                n.command("INFO errorstats")
                    .lines()
                    .find(|l| l.starts_with("errorstat_CROSSSLOT:"))
                    .and_then(|l| l.split("count=").nth(1))
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .unwrap_or(0)
            })
            .sum()
    }

    /// `EVALSHA` calls its nodes have answered.
    pub fn evalsha_calls(&self) -> u64 {
        self.nodes.iter().map(RedisServer::evalsha_calls).sum()
    }
}

/// A primary, one replica of it, and three sentinels watching them (quorum 2; a primary
/// silent for 1 s is down), on free loopback ports.
pub struct RedisSentinels {
    /// The primary the group starts with.
    pub primary: RedisServer,
    /// Its replica (promoted when the primary is killed).
    pub replica: RedisServer,
    sentinels: Vec<(Child, u16, PathBuf)>,
}

/// The name the sentinels monitor the primary by.
pub const SENTINEL_MASTER: &str = "fwprimary";

impl RedisSentinels {
    /// Starts the group and waits (at most 30 s) until the replica is in sync and every
    /// sentinel knows the replica and the two other sentinels.
    pub fn start() -> Self {
        let primary = RedisServer::start();
        let replica = RedisServer::start_with(
            free_port(),
            &["--replicaof", "127.0.0.1", &primary.port().to_string()],
        );
        let sentinels = (0..3)
            .map(|_| {
                let port = free_port();
                let dir = std::env::temp_dir()
                    .join(format!("floodwall-sentinel-{}-{port}", std::process::id()));
                std::fs::create_dir_all(&dir).expect("a directory for the sentinel");
                let config = dir.join("sentinel.conf");
                std::fs::write(
                    &config,
                    format!(
                        "port {port}\nbind 127.0.0.1\ndir {dir}\n\
                         sentinel monitor {SENTINEL_MASTER} 127.0.0.1 {primary} 2\n\
                         sentinel down-after-milliseconds {SENTINEL_MASTER} 1000\n\
                         sentinel failover-timeout {SENTINEL_MASTER} 10000\n",
                        dir = dir.display(),
                        primary = primary.port()
                    ),
                )
                .expect("the sentinel's config");
                let child = Command::new("redis-server")
                    .arg(&config)
                    .arg("--sentinel")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap_or_else(|e| {
                        panic!("cannot start redis-server --sentinel ({e}): install redis-server; `make test` does")
                    });
                (child, port, dir)
            })
            .collect();
        let group = RedisSentinels {
            primary,
            replica,
            sentinels,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !group.ready() {
            assert!(
                Instant::now() < deadline,
                "the sentinels did not see the replica and each other within 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        group
    }

    fn ready(&self) -> bool {
        self.replica
            .command("INFO replication")
            .contains("master_link_status:up")
            && self.sentinels.iter().all(|(_, port, _)| {
                let ask = |what: &str| {
                    try_command_on(*port, &format!("SENTINEL {what} {SENTINEL_MASTER}"))
                        .unwrap_or_default()
                };
                // Each entry of these replies is a flat map that names its port.
                ask("replicas").matches("\r\nport\r\n").count() == 1
                    && ask("sentinels").matches("\r\nport\r\n").count() == 2
            })
    }

    /// The sentinels' URLs.
    pub fn urls(&self) -> Vec<String> {
        self.sentinels
            .iter()
            .map(|(_, port, _)| format!("redis://127.0.0.1:{port}"))
            .collect()
    }

    /// The port of the primary the first sentinel names now.
    pub fn named_primary(&self) -> Option<u16> {
        let reply = try_command_on(
            self.sentinels[0].1,
            &format!("SENTINEL get-master-addr-by-name {SENTINEL_MASTER}"),
        )?;
        reply
            .lines()
            .filter(|l| !l.starts_with(['*', '$']))
            .nth(1)?
            .trim()
            .parse()
            .ok()
    }
}

impl Drop for RedisSentinels {
    fn drop(&mut self) {
        for (child, _, dir) in &mut self.sentinels {
            child.kill().ok();
            child.wait().ok();
            std::fs::remove_dir_all(dir).ok();
        }
    }
}
