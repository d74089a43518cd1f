//! The Redis store on a three-primary Redis Cluster: the conformance vectors decision by
//! decision (multi-layer decisions span slots and take the evaluate / decide / refund path),
//! exact admission from many threads across slots, and never a CROSSSLOT; a primary killed
//! and restarted, a primary killed whose replica takes over, and a rule counting locally
//! between syncs whose counts reach every node exactly.

use std::sync::Arc;

use floodwall::{Engine, Request, StoreUsed};
use floodwall_tests::redis_server::{RedisCluster, RedisServer};
use floodwall_tests::{run_vectors_on, stored_name};

#[test]
fn redis_cluster_conforms_and_stays_exact() {
    let cluster = RedisCluster::start();
    run_vectors_on(
        |case| {
            serde_json::json!({
                "kind": "redis_cluster",
                "urls": cluster.urls(),
                "clock": "local",
                "prefix": format!("c{case}:"),
                "on_error": "deny",
                "timeout": "3s",
                "deny_cache": false,
            })
        },
        StoreUsed::Redis,
    );
    assert!(
        cluster.evalsha_calls() >= 300,
        "{}",
        cluster.evalsha_calls()
    );

    // Three layers in three slots, eight threads: exactly the tightest limit is admitted.
    let toml = format!(
        r#"
[store]
kind = "redis_cluster"
urls = {urls:?}
timeout = "3s"
on_error = "deny"

[[rules]]
name = "per-user"
key = "subject"
algorithm = "sliding_window"
limit = 1000
window = "1h"

[[rules]]
name = "per-endpoint"
key = "endpoint"
algorithm = "token_bucket"
capacity = 500
refill_rate = 0.0001

[[rules]]
name = "global"
key = "global"
algorithm = "fixed_window"
limit = 100
window = "1h"
"#,
        urls = cluster.urls()
    );
    let engine = Arc::new(Engine::from_toml(&toml).expect("config"));
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let engine = Arc::clone(&engine);
            std::thread::spawn(move || {
                let subject = format!("user-{t}");
                let request = Request::new("GET", "/api/orders").subject(&subject);
                (0..40)
                    .filter(|_| {
                        let d = engine.check(&request).expect("decision");
                        // Redis's, or a denial of Redis's repeated by the deny cache.
                        let from_redis = d.store() == StoreUsed::Redis
                            || (d.store() == StoreUsed::DenyCache && !d.allowed());
                        assert!(from_redis, "{}: {:?}", d.store(), engine.store_failure());
                        d.allowed()
                    })
                    .count()
            })
        })
        .collect();
    let admitted: usize = handles.into_iter().map(|h| h.join().expect("thread")).sum();
    assert_eq!(admitted, 100, "320 requests, global limit 100");
    assert_eq!(cluster.crossslot_errors(), 0);
}

/// The id of `node` and the slot ranges it serves, from `CLUSTER NODES`.
fn myself(node: &RedisServer) -> (String, Vec<(u16, u16)>) {
    let nodes = node.command("CLUSTER NODES");
    let line = nodes
        .lines()
        .find(|l| l.contains("myself"))
        .expect("a myself line");
    let fields: Vec<&str> = line.split_whitespace().collect();
    let ranges = fields[8..]
        .iter()
        .filter(|f| !f.starts_with('['))
        .map(|r| match r.split_once('-') {
            Some((a, b)) => (a.parse().expect("slot"), b.parse().expect("slot")),
            None => {
                let s = r.parse().expect("slot");
                (s, s)
            }
        })
        .collect();
    (fields[0].to_owned(), ranges)
}

/// The slot of `key`, from `CLUSTER KEYSLOT`.
fn key_slot(node: &RedisServer, key: &str) -> u16 {
    node.command(&format!("CLUSTER KEYSLOT {key}"))
        .trim()
        .trim_start_matches(':')
        .parse()
        .expect("slot")
}

/// Which of `nodes` serves `key`.
fn owner(nodes: &[RedisServer], key: &str) -> usize {
    let slot = key_slot(&nodes[0], key);
    nodes
        .iter()
        .position(|n| myself(n).1.iter().any(|&(a, b)| a <= slot && slot <= b))
        .expect("an owner")
}

#[test]
fn decisions_follow_a_slot_migrating_between_nodes() {
    let cluster = RedisCluster::start();
    let toml = format!(
        r#"
[store]
kind = "redis_cluster"
urls = {urls:?}
prefix = "mig:"
timeout = "3s"
on_error = "deny"
deny_cache = false

[[rules]]
name = "global"
key = "global"
algorithm = "fixed_window"
limit = 200
window = "1h"
"#,
        urls = cluster.urls()
    );
    let engine = Engine::from_toml(&toml).expect("config");
    let request = Request::new("GET", "/");
    let mut admitted = 0;
    let mut decide = |n: usize| {
        for _ in 0..n {
            let d = engine.check(&request).expect("decision");
            assert_eq!(d.store(), StoreUsed::Redis, "{:?}", engine.store_failure());
            admitted += usize::from(d.allowed());
        }
    };
    decide(100);

    // Move the global counter's slot to another node, key and all, as `redis-cli --cluster
    // reshard` does: IMPORTING / MIGRATING, MIGRATE the keys, then assign the slot.
    let key = &format!("mig:{{{}/0/=}}f", stored_name(&engine, "global"));
    let nodes = cluster.nodes();
    let slot = key_slot(&nodes[0], key);
    let owners: Vec<(String, Vec<(u16, u16)>)> = nodes.iter().map(myself).collect();
    let from = owner(nodes, key);
    let to = (from + 1) % nodes.len();
    let (from_id, to_id) = (&owners[from].0, &owners[to].0);
    assert!(
        nodes[to]
            .command(&format!("CLUSTER SETSLOT {slot} IMPORTING {from_id}"))
            .starts_with("+OK")
    );
    assert!(
        nodes[from]
            .command(&format!("CLUSTER SETSLOT {slot} MIGRATING {to_id}"))
            .starts_with("+OK")
    );
    // Mid-migration: the key is still on the source, which answers ASK for keys it lacks.
    decide(50);
    let migrated = nodes[from].command(&format!(
        "MIGRATE 127.0.0.1 {} \"\" 0 5000 KEYS {key}",
        nodes[to].port()
    ));
    assert!(
        migrated.starts_with("+OK") || migrated.starts_with("+NOKEY"),
        "{migrated}"
    );
    // The key has moved, the slot not yet: the source answers ASK and the client follows it.
    decide(20);
    for node in nodes {
        assert!(
            node.command(&format!("CLUSTER SETSLOT {slot} NODE {to_id}"))
                .starts_with("+OK")
        );
    }
    // After: the client is told MOVED and follows; the count carried over with the key.
    decide(130);
    assert_eq!(
        admitted, 200,
        "300 requests across the migration, limit 200"
    );
    assert_eq!(cluster.crossslot_errors(), 0);
}

/// An engine on `cluster` with one per-user fixed window (1000 an hour), keys under `prefix`,
/// a 250 ms deadline and the fallback.
fn per_user_engine(cluster: &RedisCluster, prefix: &str) -> Engine {
    let toml = format!(
        r#"
[store]
kind = "redis_cluster"
urls = {urls:?}
prefix = "{prefix}"
timeout = "250ms"
on_error = "fallback"
deny_cache = false

[[rules]]
name = "per-user"
key = "subject"
algorithm = "fixed_window"
limit = 1000
window = "1h"
"#,
        urls = cluster.urls()
    );
    Engine::from_toml(&toml).expect("config")
}

/// Sixty subjects and the node each one's per-user key lives on.
fn subjects_and_homes(cluster: &RedisCluster, prefix: &str) -> (Vec<String>, Vec<usize>) {
    let subjects: Vec<String> = (0..60).map(|i| format!("u{i}")).collect();
    let rule = stored_name(&per_user_engine(cluster, prefix), "per-user");
    let homes = subjects
        .iter()
        .map(|s| owner(cluster.nodes(), &format!("{prefix}{{{rule}/0/={s}}}f")))
        .collect();
    (subjects, homes)
}

/// Who decided a request of `subject` (a decision, never an error).
fn store_of(engine: &Engine, subject: &str) -> StoreUsed {
    engine
        .check(&Request::new("GET", "/").subject(subject))
        .expect("a decision, never an error")
        .store()
}

#[test]
fn a_dead_primary_sends_only_its_slots_to_the_fallback() {
    // Without full coverage required, the live primaries keep serving their slots while one
    // is down (the default, `yes`, makes the whole cluster refuse once the node is marked
    // failed).
    let mut cluster = RedisCluster::start_with(&["--cluster-require-full-coverage", "no"]);
    let engine = per_user_engine(&cluster, "node:");
    let (subjects, homes) = subjects_and_homes(&cluster, "node:");
    let dead = 1;
    assert!(homes.contains(&dead) && homes.iter().any(|&h| h != dead));
    let decide = |subject: &str| store_of(&engine, subject);
    for s in &subjects {
        assert_eq!(decide(s), StoreUsed::Redis, "{:?}", engine.store_failure());
    }

    let dead_port = cluster.nodes()[dead].port();
    cluster.nodes_mut()[dead].kill();
    let killed = std::time::Instant::now();
    // Rounds over every subject, for at most 10 s: the live primaries' subjects are decided
    // on Redis every time; the dead one's go to the fallback once its breaker opens.
    let mut on_fallback_after = None;
    for _ in 0..200 {
        let mut dead_on_fallback = 0;
        for (s, &home) in subjects.iter().zip(&homes) {
            let used = decide(s);
            if home == dead {
                dead_on_fallback += usize::from(used == StoreUsed::Fallback);
            } else {
                assert_eq!(
                    used,
                    StoreUsed::Redis,
                    "{s} lives on a live primary; {:?}",
                    engine.store_failure()
                );
            }
        }
        if dead_on_fallback == homes.iter().filter(|&&h| h == dead).count() {
            on_fallback_after = Some(killed.elapsed());
            break;
        }
        assert!(killed.elapsed() < std::time::Duration::from_secs(10));
    }
    let on_fallback_after = on_fallback_after.expect("the dead primary's subjects on the fallback");
    let health = engine.store_health();
    assert_eq!(health.state, floodwall::StoreState::Degraded);
    assert_eq!(health.reason_kind, Some("cluster_down"));
    let reason = health.reason.clone().unwrap_or_default();
    assert!(reason.contains(&format!(":{dead_port}")), "{reason}");

    cluster.nodes_mut()[dead].restart();
    let restarted = std::time::Instant::now();
    let mut back_after = None;
    // Redis itself refuses writes for a while after a cluster node starts; when it accepts
    // one again is the return the store is measured from.
    let dead_subject = &subjects[homes.iter().position(|&h| h == dead).expect("one")];
    let mut writable_after = None;
    while restarted.elapsed() < std::time::Duration::from_secs(20) {
        if writable_after.is_none()
            && cluster.nodes()[dead]
                .command(&format!(
                    "SET node:{{{}/0/={dead_subject}}}w 1",
                    stored_name(&engine, "per-user")
                ))
                .starts_with("+OK")
        {
            writable_after = Some(restarted.elapsed());
        }
        let all_redis = subjects.iter().all(|s| decide(s) == StoreUsed::Redis);
        if all_redis && engine.store_health().state == floodwall::StoreState::Ok {
            back_after = Some(restarted.elapsed());
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let back_after = back_after.unwrap_or_else(|| {
        panic!(
            "not back on Redis 20 s after the primary's restart: {:?}",
            engine.store_health()
        )
    });
    eprintln!(
        "dead primary: its subjects on the fallback {on_fallback_after:?} after the kill; \
         after the restart, the node writable at {writable_after:?}, its subjects back on \
         Redis at {back_after:?}"
    );
}

/// The id of the primary `node` replicates, if it is a replica.
fn primary_of(node: &RedisServer) -> Option<String> {
    let nodes = node.command("CLUSTER NODES");
    let line = nodes.lines().find(|l| l.contains("myself"))?;
    let fields: Vec<&str> = line.split_whitespace().collect();
    fields[2].contains("slave").then(|| fields[3].to_owned())
}

#[test]
fn a_killed_primary_s_slots_are_on_the_fallback_only_until_its_replica_is_promoted() {
    let mut cluster = RedisCluster::start_nodes(&["--cluster-require-full-coverage", "no"], 1);
    let engine = per_user_engine(&cluster, "promote:");
    let primaries: Vec<usize> = (0..cluster.nodes().len())
        .filter(|&i| primary_of(&cluster.nodes()[i]).is_none())
        .collect();
    assert_eq!(primaries.len(), 3);
    let (subjects, homes) = subjects_and_homes(&cluster, "promote:");
    let dead = homes[0];
    let dead_id = myself(&cluster.nodes()[dead]).0;
    let replica = (0..cluster.nodes().len())
        .find(|&i| primary_of(&cluster.nodes()[i]).as_deref() == Some(dead_id.as_str()))
        .expect("the dead primary's replica");
    let decide = |subject: &str| store_of(&engine, subject);
    for s in &subjects {
        assert_eq!(decide(s), StoreUsed::Redis, "{:?}", engine.store_failure());
    }
    // What the primary holds is on its replica before it dies.
    assert!(
        cluster.nodes()[dead]
            .command("WAIT 1 5000")
            .starts_with(":1")
    );

    cluster.nodes_mut()[dead].kill();
    let killed = std::time::Instant::now();
    let mut promoted = None;
    let mut first_fallback = None;
    let mut back = None;
    // Rounds over every subject for at most 30 s: the live primaries' subjects on Redis every
    // time; the dead one's on the fallback, then on Redis again once its replica serves them.
    while killed.elapsed() < std::time::Duration::from_secs(30) {
        if promoted.is_none() && primary_of(&cluster.nodes()[replica]).is_none() {
            promoted = Some(killed.elapsed());
        }
        let mut dead_on_redis = true;
        for (s, &home) in subjects.iter().zip(&homes) {
            let used = decide(s);
            if home == dead {
                if used == StoreUsed::Fallback && first_fallback.is_none() {
                    first_fallback = Some(killed.elapsed());
                }
                dead_on_redis &= used == StoreUsed::Redis;
            } else {
                assert_eq!(used, StoreUsed::Redis, "{s}: {:?}", engine.store_failure());
            }
        }
        if first_fallback.is_some() && dead_on_redis {
            back = Some(killed.elapsed());
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let promoted = promoted.expect("the replica promoted within 30 s");
    let back = back.unwrap_or_else(|| {
        panic!(
            "the dead primary's slots not back on Redis 30 s after the kill: {:?}",
            engine.store_health()
        )
    });
    eprintln!(
        "cluster failover: the dead primary's subjects on the fallback from {first_fallback:?}; \
         its replica promoted at {promoted:?}; the subjects back on Redis at {back:?} after \
         the kill (a gap of {:?} after the promotion)",
        back.saturating_sub(promoted)
    );
    assert!(
        back <= promoted + std::time::Duration::from_secs(1),
        "back {back:?}, promoted {promoted:?}"
    );
    // The promoted replica holds the counts: each subject was admitted once before the kill,
    // and at least once on it since.
    let state = cluster.nodes()[replica].command(&format!(
        "GET promote:{{{}/0/={}}}f",
        stored_name(&engine, "per-user"),
        subjects[0]
    ));
    let count: u64 = state
        .lines()
        .nth(1)
        .and_then(|v| v.rsplit(':').next()?.parse().ok())
        .unwrap_or(0);
    assert!(count >= 2, "{state:?}");
}

/// A rule that counts locally between syncs, on the cluster: each key's window hash lives on
/// its own node, a second engine reads what the first sent before deciding, and every node's
/// hashes hold exactly what was admitted.
#[test]
fn synced_counts_reach_every_node_exactly() {
    let cluster = RedisCluster::start();
    let toml = format!(
        r#"
[store]
kind = "redis_cluster"
urls = {urls:?}
prefix = "sync:"
timeout = "2s"
on_error = "deny"

[[rules]]
name = "per-user"
key = "subject"
algorithm = "fixed_window"
limit = 50
window = "1h"
sync = "20ms"
"#,
        urls = cluster.urls()
    );
    let subjects: Vec<String> = (0..12).map(|i| format!("user-{i}")).collect();
    let admitted = |engine: &Engine, subject: &str, n: usize| {
        let request = Request::new("GET", "/api").subject(subject);
        (0..n)
            .filter(|_| {
                let d = engine.check(&request).expect("decision");
                assert_eq!(d.store(), StoreUsed::Redis, "{:?}", engine.store_failure());
                d.allowed()
            })
            .count()
    };
    let first = Engine::from_toml(&toml).expect("config");
    for subject in &subjects {
        assert_eq!(admitted(&first, subject, 30), 30, "{subject}");
    }
    drop(first);
    let second = Engine::from_toml(&toml).expect("config");
    let rule = stored_name(&second, "per-user");
    for subject in &subjects {
        assert_eq!(
            admitted(&second, subject, 40),
            20,
            "{subject}: the other 20"
        );
    }
    drop(second);
    let nodes = cluster.nodes();
    let mut homes = Vec::new();
    for subject in &subjects {
        let pattern = format!("sync:{{{rule}/0/={subject}}}f#*");
        let home = owner(nodes, &pattern.replace('*', "0"));
        homes.push(home);
        let keys = nodes[home].command(&format!("KEYS {pattern}"));
        let key = keys
            .lines()
            .find(|l| l.starts_with("sync:"))
            .unwrap_or_else(|| panic!("{subject}'s window hash on node {home}: {keys:?}"));
        let total = nodes[home].command(&format!("HGET {key} ="));
        assert_eq!(total.lines().nth(1), Some("50"), "{subject}: {total:?}");
    }
    homes.sort_unstable();
    homes.dedup();
    assert!(
        homes.len() > 1,
        "the subjects' hashes live on several nodes"
    );
}

#[test]
fn keys_are_administered_on_whichever_node_holds_them() {
    use floodwall::KeyRef;
    let cluster = RedisCluster::start();
    let toml = format!(
        r#"
[store]
kind = "redis_cluster"
urls = {urls:?}
prefix = "admin:"
timeout = "2s"
on_error = "deny"
deny_cache = false

[[rules]]
name = "per-user"
key = "subject"
algorithm = "sliding_window"
limit = 5
window = "1h"
block_for = "1m"
key_limits = true
"#,
        urls = cluster.urls()
    );
    let engine = Engine::from_toml(&toml).unwrap();
    let (subjects, homes) = subjects_and_homes(&cluster, "admin:");
    // One subject on each node.
    for node in 0..3 {
        let subject = &subjects[homes
            .iter()
            .position(|&h| h == node)
            .expect("a subject per node")];
        let key = KeyRef::new("per-user", subject);
        assert!(
            engine
                .check(&Request::new("GET", "/").subject(subject))
                .unwrap()
                .allowed()
        );
        engine.penalize(&key, 3).unwrap();
        assert_eq!(engine.inspect(&key).unwrap().remaining, 1, "node {node}");
        engine.reward(&key, 2).unwrap();
        assert_eq!(engine.inspect(&key).unwrap().remaining, 3, "node {node}");
        engine
            .block_key(&key, std::time::Duration::from_secs(60))
            .unwrap();
        let denied = engine
            .check(&Request::new("GET", "/").subject(subject))
            .unwrap();
        assert!(!denied.allowed() && denied.blocked(), "node {node}");
        engine.reset_key(&key).unwrap();
        let status = engine.inspect(&key).unwrap();
        assert_eq!(
            (status.remaining, status.blocked_for),
            (5, None),
            "node {node}"
        );
        // A limit of its own, read by the decision script on the node that holds the key.
        engine
            .set_key_limit(&key, 2, std::time::Duration::from_secs(60))
            .unwrap();
        let status = engine.inspect(&key).unwrap();
        assert_eq!((status.limit, status.remaining), (2, 2), "node {node}");
        let limits: Vec<Option<u64>> = (0..3)
            .map(|_| {
                let d = engine
                    .check(&Request::new("GET", "/").subject(subject))
                    .unwrap();
                d.allowed().then(|| d.limit()).flatten()
            })
            .collect();
        assert_eq!(limits, [Some(2), Some(2), None], "node {node}");
        engine.clear_key_limit(&key).unwrap();
        assert_eq!(engine.inspect(&key).unwrap().limit, 5, "node {node}");
    }
}
