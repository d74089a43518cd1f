//! Configuration errors name the field and the problem; TOML and JSON read the same schema.

use floodwall::{Config, Engine, ErrorKind, Request, Timestamp};

/// The error from building an engine out of `toml`, as (field, message).
fn toml_err(toml: &str) -> (String, String) {
    let err = Engine::from_toml(toml).expect_err("config should be rejected");
    assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{err}");
    (
        err.field().unwrap_or("").to_owned(),
        err.message().to_owned(),
    )
}

fn json_err(json: &str) -> (String, String) {
    let err = Engine::from_json(json).expect_err("config should be rejected");
    assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{err}");
    (
        err.field().unwrap_or("").to_owned(),
        err.message().to_owned(),
    )
}

const RULE: &str = r#"
[[rules]]
name = "per-user"
key = "subject"
algorithm = "fixed_window"
limit = 10
window = "1s"
"#;

#[test]
fn unknown_field_is_named() {
    let (field, message) = toml_err(&format!("{RULE}windw = \"1s\""));
    assert_eq!(field, "rules[0].windw");
    assert!(message.contains("unknown field `windw`"), "{message}");
    let (field, message) = toml_err("[store]\nkind = \"memory\"\nmax_key = 5");
    assert_eq!(field, "store.max_key");
    assert!(message.contains("unknown field"), "{message}");
    let (field, _) = json_err(r#"{"rule": []}"#);
    assert_eq!(field, "rule");
}

#[test]
fn zero_window_and_zero_limit() {
    let (field, message) = toml_err(&RULE.replace("\"1s\"", "\"0ms\""));
    assert_eq!(field, "rules[0].window");
    assert!(message.contains("greater than zero"), "{message}");
    let (field, message) = toml_err(&RULE.replace("limit = 10", "limit = 0"));
    assert_eq!(field, "rules[0].limit");
    assert!(message.contains("at least 1"), "{message}");
}

#[test]
fn negative_numbers() {
    let bucket = r#"
[[rules]]
name = "b"
key = "ip"
algorithm = "token_bucket"
capacity = 5
refill_rate = -2
"#;
    let (field, message) = toml_err(bucket);
    assert_eq!(field, "rules[0].refill_rate");
    assert!(message.contains("positive"), "{message}");
    // A sentence like refill_rate's, not serde's "expected u64".
    let (field, message) = toml_err(&RULE.replace("limit = 10", "limit = -5"));
    assert_eq!(field, "rules[0].limit");
    assert!(
        message.starts_with("must be a whole number of 0 or more, got -5"),
        "{message}"
    );
    assert!(!message.contains("u64"), "{message}");
    let (field, message) = json_err(
        r#"{"rules": [{"name": "r", "key": "ip", "algorithm": "fixed_window", "limit": -5, "window": "1s"}]}"#,
    );
    assert_eq!(field, "rules[0].limit");
    assert_eq!(message, "must be a whole number of 0 or more, got -5");
    let (_, message) = toml_err(&RULE.replace("limit = 10", "limit = 2.5"));
    assert!(
        message.starts_with("must be a whole number of 0 or more, got 2.5"),
        "{message}"
    );
    let (field, message) = toml_err(
        "[http]
ipv6_subnet = 300",
    );
    assert_eq!(field, "http.ipv6_subnet");
    assert!(
        message.starts_with("must be a whole number from 0 to 255, got 300"),
        "{message}"
    );
    let (field, _) = toml_err(&bucket.replace("-2", "0"));
    assert_eq!(field, "rules[0].refill_rate");
    let (field, message) = toml_err(&bucket.replace("-2", "2000000"));
    assert_eq!(field, "rules[0].refill_rate");
    assert!(message.contains("at most"), "{message}");
}

#[test]
fn unknown_algorithm() {
    let (field, message) = toml_err(&RULE.replace("fixed_window", "leaky_bucket"));
    assert_eq!(field, "rules[0].algorithm");
    assert!(
        message.contains("leaky_bucket") && message.contains("token_bucket"),
        "{message}"
    );
}

#[test]
fn duplicate_rule_name() {
    let (field, message) = toml_err(&format!("{RULE}{RULE}"));
    assert_eq!(field, "rules[1].name");
    assert!(
        message.contains("duplicate rule name \"per-user\""),
        "{message}"
    );
}

#[test]
fn parameters_must_fit_the_algorithm() {
    let (field, message) = toml_err(&RULE.replace("limit = 10", "capacity = 10"));
    assert_eq!(field, "rules[0].capacity");
    assert!(
        message.contains("fixed_window takes limit and window"),
        "{message}"
    );
    let (field, message) = toml_err(&RULE.replace("window = \"1s\"", ""));
    assert_eq!(field, "rules[0].window");
    assert!(message.contains("needs window"), "{message}");
    let (field, message) = toml_err(&format!("{RULE}roles.premium = {{ refill_rate = 5 }}"));
    assert_eq!(field, "rules[0].roles.premium.refill_rate");
    assert!(message.contains("takes limit and window"), "{message}");
    let (field, _) = toml_err(&format!("{RULE}roles.premium = {{ window = \"0s\" }}"));
    assert_eq!(field, "rules[0].roles.premium.window");
    let (field, _) = toml_err(&format!("{RULE}roles.premium = {{ limits = 5 }}"));
    assert_eq!(field, "rules[0].roles.premium.limits");
}

#[test]
fn durations() {
    for (text, ms) in [
        ("250ms", 250),
        ("1s", 1000),
        ("1m", 60_000),
        ("1.5s", 1500),
        ("2h", 7_200_000),
        ("1d", 86_400_000),
        ("1w", 604_800_000),
    ] {
        let config = Config::from_toml(&RULE.replace("\"1s\"", &format!("{text:?}"))).unwrap();
        let Some(floodwall::config::WindowLength::Length(window)) = config.rules[0].window else {
            panic!("{text} is a length");
        };
        assert_eq!(window.0.as_millis(), ms, "{text}");
    }
    for (text, fragment) in [
        ("1", "no unit"),
        ("1x", "unknown unit"),
        ("ms", "does not start with a number"),
        ("-1s", "negative"),
    ] {
        let (field, message) = toml_err(&RULE.replace("\"1s\"", &format!("{text:?}")));
        assert_eq!(field, "rules[0].window", "{text}");
        assert!(message.contains(fragment), "{text}: {message}");
    }
    let (field, message) = toml_err(&RULE.replace("\"1s\"", "1"));
    assert_eq!(field, "rules[0].window");
    assert!(message.contains("duration string"), "{message}");
    let (field, message) = toml_err(&RULE.replace("\"1s\"", "\"400d\""));
    assert_eq!(field, "rules[0].window");
    assert!(message.contains("366 days"), "{message}");
}

#[test]
fn keys_matches_and_names() {
    let (field, message) = toml_err(&RULE.replace("\"subject\"", "\"user\""));
    assert_eq!(field, "rules[0].key");
    assert!(message.contains("header:NAME"), "{message}");
    let (field, _) = toml_err(&RULE.replace("\"subject\"", "\"header:\""));
    assert_eq!(field, "rules[0].key");
    let (field, message) = toml_err(&format!("{RULE}match = {{ paths = [\"/ok\", \"api/*\"] }}"));
    assert_eq!(field, "rules[0].match.paths[1]");
    assert!(message.contains("start with '/'"), "{message}");
    let (field, _) = toml_err(&format!("{RULE}match = {{ methods = [\"GET\", \"G T\"] }}"));
    assert_eq!(field, "rules[0].match.methods[1]");
    let (field, message) = toml_err(&format!(
        "{RULE}match = {{ methods = [\"get\", \"FETCH\"] }}"
    ));
    assert_eq!(field, "rules[0].match.methods[1]");
    assert!(
        message.contains("\"FETCH\" is not an HTTP method; use one of GET, HEAD"),
        "{message}"
    );
    let (field, message) = toml_err(&RULE.replace("per-user", "per user"));
    assert_eq!(field, "rules[0].name");
    assert!(message.contains("letters, digits"), "{message}");
}

#[test]
fn each_store_kind_takes_only_its_own_fields() {
    use floodwall::config::{Config, StoreConfig, StoreKind};
    // A url without a kind is a forgotten kind, not a memory store that ignores it.
    let (field, message) = toml_err("[store]\nurl = \"redis://127.0.0.1:6379\"");
    assert_eq!(field, "store");
    assert!(
        message.contains("`url` is a field of kind = \"redis\"")
            && message.contains("kind is \"memory\""),
        "{message}"
    );
    // The shared stores' policy fields are read under every kind (one file, switched by kind).
    let memory =
        Config::from_toml("[store]\ntimeout = \"20ms\"\non_error = \"deny\"").expect("config");
    assert!(memory.store.shared().is_none());
    let (_, message) =
        toml_err("[store]\nkind = \"redis\"\nurl = \"redis://a:1\"\nurls = [\"redis://a:1\"]");
    assert!(
        message.contains("`urls` is a field of kind = \"redis_cluster\""),
        "{message}"
    );
    let (_, message) = toml_err("[store]\nkind = \"redis_cluster\"\nurl = \"redis://a:1\"");
    assert!(
        message.contains("`url` is a field of kind = \"redis\""),
        "{message}"
    );
    // Each kind's own fields, the rest defaults; max_keys is every kind's.
    let config = Config::from_toml(
        "[store]\nkind = \"redis_cluster\"\nurls = [\"redis://a:1\"]\nprefix = \"p:\"\nmax_keys = 7",
    )
    .expect("config");
    let StoreConfig::RedisCluster(cluster) = &config.store else {
        panic!("a cluster store: {:?}", config.store)
    };
    assert_eq!(cluster.urls, ["redis://a:1"]);
    assert_eq!(cluster.shared.prefix, "p:");
    assert_eq!(config.store.max_keys(), 7);
    assert_eq!(config.store.kind(), StoreKind::RedisCluster);
    let memory = Config::from_toml("[store]\nmax_keys = 9").expect("config");
    assert_eq!(memory.store.kind(), StoreKind::Memory);
    assert!(memory.store.shared().is_none());
    assert_eq!(memory.store.max_keys(), 9);
    // Sentinel: the sentinels and the monitored name, and nothing of the other kinds.
    let config = Config::from_toml(
        "[store]\nkind = \"redis_sentinel\"\nsentinels = [\"redis://a:26379\"]\nmaster = \"m\"",
    )
    .expect("config");
    let StoreConfig::RedisSentinel(sentinel) = &config.store else {
        panic!("a sentinel store: {:?}", config.store)
    };
    assert_eq!(
        (sentinel.sentinels.as_slice(), sentinel.master.as_str()),
        (["redis://a:26379".to_owned()].as_slice(), "m")
    );
    assert_eq!(config.store.kind().as_str(), "redis_sentinel");
    for (toml, named) in [
        (
            "kind = \"redis_sentinel\"\nurl = \"redis://a:1\"",
            "`url` is a field of kind = \"redis\"",
        ),
        (
            "kind = \"redis\"\nurl = \"redis://a:1\"\nmaster = \"m\"",
            "`master` is a field of kind = \"redis_sentinel\"",
        ),
        (
            "sentinels = [\"redis://a:1\"]",
            "`sentinels` is a field of kind = \"redis_sentinel\"",
        ),
    ] {
        let (_, message) = toml_err(&format!("[store]\n{toml}"));
        assert!(message.contains(named), "{toml}: {message}");
    }
    // The same from JSON.
    let json = Config::from_json(r#"{"store": {"kind": "memory", "url": "redis://x:1"}}"#)
        .map(|_| ())
        .unwrap_err();
    assert_eq!(json.field(), Some("store"));
}

#[test]
fn store_and_reserved_sections() {
    let (field, message) = toml_err("[store]\nkind = \"redis_cluster\"");
    assert_eq!(field, "store.urls");
    assert!(message.contains("seed nodes"), "{message}");
    let (field, message) = toml_err("[store]\nkind = \"redis\"");
    assert_eq!(field, "store.url");
    assert!(message.contains("needs a url"), "{message}");
    let (field, message) = toml_err("[store]\nkind = \"redis_sentinel\"\nmaster = \"m\"");
    assert_eq!(field, "store.sentinels");
    assert!(message.contains("needs the sentinels' URLs"), "{message}");
    let (field, message) =
        toml_err("[store]\nkind = \"redis_sentinel\"\nsentinels = [\"redis://a:26379\"]");
    assert_eq!(field, "store.master");
    assert!(
        message.contains("the name the sentinels monitor"),
        "{message}"
    );
    let (field, _) = toml_err(
        "[store]\nkind = \"redis_sentinel\"\nsentinels = [\"redis://a:1\", \"a:2\"]\nmaster = \"m\"",
    );
    assert_eq!(field, "store.sentinels[1]");
    // A bad Redis URL says what is wrong with it.
    for (url, why) in [
        (
            "http://x",
            "the scheme must be redis, redis+unix or unix, not \"http\"",
        ),
        ("rediss://host:6380", "TLS (rediss://) is not built in"),
        ("127.0.0.1:6379", "it has no scheme"),
        ("redis://:6379", "names no host"),
        (
            "redis://localhost:port",
            "the port must be a number from 1 to 65535, not \"port\"",
        ),
        (
            "redis://localhost:6379/cache",
            "the path names the database by number",
        ),
        ("redis+unix://run/redis.sock", "names an absolute path"),
    ] {
        let (field, message) = toml_err(&format!("[store]\nkind = \"redis\"\nurl = \"{url}\""));
        assert_eq!(field, "store.url", "{url}");
        assert!(message.contains(why), "{url}: {message}");
    }
    let (field, _) =
        toml_err("[store]\nkind = \"redis_cluster\"\nurls = [\"redis://a:1\", \"b:2\"]");
    assert_eq!(field, "store.urls[1]");
    for url in [
        "redis://127.0.0.1:6379/0",
        "redis://user:pw@[::1]:6380",
        "unix:///run/redis.sock",
    ] {
        Engine::from_toml(&format!("[store]\nkind = \"redis\"\nurl = \"{url}\"")).unwrap();
    }
    let (field, message) = toml_err("[store]\nkind = \"mongo\"");
    assert_eq!(field, "store.kind");
    assert!(message.contains("memory"), "{message}");
    let (field, _) = toml_err("[store]\nmax_keys = 0");
    assert_eq!(field, "store.max_keys");
    let (field, message) = toml_err("[monitor]\nstream = \"x\"");
    assert_eq!(field, "monitor.url");
    assert!(message.contains("needs a Redis server"), "{message}");
    let (field, message) = toml_err("[monitor]\nhorizon = \"90s\"");
    assert_eq!(field, "monitor.horizon");
    assert!(message.contains("whole minutes"), "{message}");
    let (field, _) = toml_err("[monitor]\nhorizon = \"25h\"");
    assert_eq!(field, "monitor.horizon");
    let (field, _) = toml_err("[monitor]\ntop = 0");
    assert_eq!(field, "monitor.top");
    let (field, _) = toml_err("[monitor]\ncolour = \"red\"");
    assert_eq!(field, "monitor.colour");
    // The reference shape's store fields are all accepted.
    Engine::from_toml(
        "[store]\nkind = \"memory\"\nprefix = \"fw:\"\ntimeout = \"50ms\"\non_error = \"fallback\"\nclock = \"redis\"\nmax_keys = 1000",
    )
    .unwrap();
}

#[test]
fn syntax_errors_say_where() {
    let (field, message) = toml_err("[[rules]]\nname = ");
    assert_eq!(field, "");
    assert!(message.contains("line 2"), "{message}");
    let (field, message) = json_err("{\"rules\": [}");
    assert_eq!(field, "");
    assert!(
        message.contains("invalid JSON") && message.contains("line 1"),
        "{message}"
    );
    let (field, message) = json_err(
        r#"{"rules": [{"name": "a", "key": "ip", "algorithm": "fixed_window", "limit": 1, "window": "1s"}]} x"#,
    );
    assert_eq!(field, "");
    assert!(message.contains("trailing"), "{message}");
}

const SAME_TOML: &str = r#"
[headers]
legacy = false

[[rules]]
name = "per-user"
match = { methods = ["GET"], paths = ["/api/**"] }
key = "subject"
algorithm = "token_bucket"
capacity = 2
refill_rate = 1
roles.premium = { capacity = 4 }
"#;

const SAME_JSON: &str = r#"{
  "headers": {"legacy": false},
  "rules": [{
    "name": "per-user",
    "match": {"methods": ["GET"], "paths": ["/api/**"]},
    "key": "subject",
    "algorithm": "token_bucket",
    "capacity": 2,
    "refill_rate": 1,
    "roles": {"premium": {"capacity": 4}}
  }]
}"#;

fn admitted(engine: &Engine, role: &str) -> usize {
    let t = Timestamp::from_millis(5_000);
    (0..10)
        .filter(|_| {
            let request = Request::new("GET", "/api/x").subject(role).role(role).at(t);
            engine.check(&request).unwrap().allowed()
        })
        .count()
}

#[test]
fn toml_json_and_files_read_the_same_schema() {
    let dir = std::env::temp_dir().join(format!("floodwall-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let toml_path = dir.join("floodwall.toml");
    let json_path = dir.join("floodwall.json");
    std::fs::write(&toml_path, SAME_TOML).unwrap();
    std::fs::write(&json_path, SAME_JSON).unwrap();
    let engines = [
        Engine::from_toml(SAME_TOML).unwrap(),
        Engine::from_json(SAME_JSON).unwrap(),
        Engine::from_file(&toml_path).unwrap(),
        Engine::from_file(&json_path).unwrap(),
        Engine::from_config(Config::from_value(serde_json::from_str(SAME_JSON).unwrap()).unwrap())
            .unwrap(),
    ];
    for engine in &engines {
        assert_eq!(
            (admitted(engine, "free"), admitted(engine, "premium")),
            (2, 4)
        );
        let d = engine
            .check(
                &Request::new("GET", "/api/x")
                    .subject("z")
                    .at(Timestamp::from_millis(5_000)),
            )
            .unwrap();
        assert_eq!(d.header("RateLimit-Limit"), None, "legacy headers are off");
        assert!(d.header("RateLimit").is_some());
    }

    std::fs::write(
        &toml_path,
        SAME_TOML.replace("capacity = 2", "capacity = 0"),
    )
    .unwrap();
    let err = Engine::from_file(&toml_path).unwrap_err();
    assert_eq!(err.field(), Some("rules[0].capacity"));
    assert!(err.to_string().contains("floodwall.toml"), "{err}");
    let err = Engine::from_file(dir.join("missing.toml")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidConfig);
    assert!(err.to_string().contains("missing.toml"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn too_many_rules() {
    let many: String = (0..257)
        .map(|i| RULE.replace("per-user", &format!("r{i}")))
        .collect();
    let (field, message) = toml_err(&many);
    assert_eq!(field, "rules");
    assert!(message.contains("at most 256"), "{message}");
    let at_cap: String = (0..256)
        .map(|i| RULE.replace("per-user", &format!("r{i}")))
        .collect();
    let engine = Engine::from_toml(&at_cap).unwrap();
    // All 256 layers apply to one request, atomically.
    let d = engine
        .check(
            &Request::new("GET", "/")
                .subject("a")
                .at(Timestamp::from_millis(1)),
        )
        .unwrap();
    assert!(d.allowed());
    assert_eq!(d.layers().len(), 256);
    assert_eq!(engine.key_count(), 256);
}

#[test]
fn a_json_configuration_must_be_an_object() {
    // serde would read a struct from an array field by field: `[]` must not pass for an
    // empty configuration, nor a positional array for a real one.
    for json in [
        "[]",
        "  [{\"kind\": \"memory\"}]",
        "42",
        "\"rules\"",
        "null",
    ] {
        let (field, message) = json_err(json);
        assert_eq!(field, "", "{json}");
        assert!(message.contains("must be an object"), "{json}: {message}");
    }
    let err = Config::from_value(serde_json::json!([])).expect_err("an array is refused");
    assert_eq!(err.kind(), ErrorKind::InvalidConfig);
    assert!(Config::from_json(" {} ").is_ok());
}

#[test]
fn role_overrides_are_bounded_per_rule() {
    let roles: serde_json::Map<String, serde_json::Value> = (0
        ..=floodwall::config::MAX_ROLE_OVERRIDES)
        .map(|i| (format!("r{i}"), serde_json::json!({ "limit": 2 })))
        .collect();
    let config = serde_json::json!({ "rules": [{ "name": "per-user", "key": "subject",
        "algorithm": "fixed_window", "limit": 1, "window": "1s", "roles": roles }] });
    let err = Engine::from_config(Config::from_value(config).expect("it parses"))
        .expect_err("one override too many");
    assert_eq!(err.kind(), ErrorKind::InvalidConfig);
    assert_eq!(err.field(), Some("rules[0].roles"));
}

#[test]
fn role_overrides_a_caller_can_never_have_are_refused() {
    let (field, message) = toml_err(&format!(
        "{RULE}match = {{ roles = [\"premium\"] }}\nroles.free = {{ limit = 2 }}"
    ));
    assert_eq!(field, "rules[0].roles.free");
    assert!(message.contains("only matches the roles"), "{message}");
    let auth = "[auth]\nalgorithms = [\"HS256\"]\nkeys = [{ secret = \"an example secret of at least 32 bytes!\" }]\nroles = [\"premium\", \"free\"]\ndefault_role = \"guest\"\n";
    let (field, message) = toml_err(&format!("{auth}{RULE}roles.gold = {{ limit = 2 }}"));
    assert_eq!(field, "rules[0].roles.gold");
    assert!(
        message
            .contains("auth.roles lists [\"premium\", \"free\"] and the default role is \"guest\""),
        "{message}"
    );
    // The roles a token can carry, and the default role, are fine.
    for role in ["premium", "guest"] {
        Engine::from_toml(&format!("{auth}{RULE}roles.{role} = {{ limit = 2 }}")).unwrap();
    }
    // Without auth.roles any role may come: every override is accepted.
    Engine::from_toml(&format!("{RULE}roles.gold = {{ limit = 2 }}")).unwrap();
}

#[test]
fn http_layer_fields() {
    let (field, message) =
        toml_err(&RULE.replace("subject", "subject\"\nbefore_auth = true\nx = \""));
    assert!(
        field == "rules[0].x" || field == "rules[0].before_auth",
        "{field}: {message}"
    );
    let (field, message) = toml_err(&format!("{RULE}before_auth = true"));
    assert_eq!(field, "rules[0].before_auth");
    assert!(message.contains("keyed on subject"), "{message}");
    let ip = RULE.replace("\"subject\"", "\"ip\"");
    let (field, message) = toml_err(&format!(
        "{ip}before_auth = true\nroles.premium = {{ limit = 5 }}"
    ));
    assert_eq!(field, "rules[0].before_auth");
    assert!(message.contains("roles"), "{message}");
    let (field, message) = toml_err(&format!("{ip}count_responses = \"sometimes\""));
    assert_eq!(field, "rules[0].count_responses");
    assert!(message.contains("failed"), "{message}");
    let (field, message) = toml_err(&format!(
        "{ip}count_responses = \"failed\"\nfailed_statuses = [401, \"6xx0\"]"
    ));
    assert_eq!(field, "rules[0].failed_statuses[1]");
    assert!(message.contains("\"6xx0\""), "{message}");
    let (field, message) = toml_err(&format!(
        "{ip}count_responses = \"failed\"\nfailed_statuses = [\"599-500\"]"
    ));
    assert_eq!(field, "rules[0].failed_statuses[0]");
    assert!(message.contains("backwards"), "{message}");
    let (field, message) = toml_err(&format!("{ip}failed_statuses = [500]"));
    assert_eq!(field, "rules[0].failed_statuses");
    assert!(message.contains("no effect"), "{message}");
    let (field, _) = toml_err(&format!("{ip}cost_header = \"x cost\""));
    assert_eq!(field, "rules[0].cost_header");
    let (field, message) = toml_err("[http]\ntrusted_proxies = [\"0.0.0.0/0\"]");
    assert_eq!(field, "http.trusted_proxies");
    assert!(message.contains("trust_all"), "{message}");
    let (field, _) = toml_err("[http]\nforwarded_header = \"x-real-ip\"");
    assert_eq!(field, "http.forwarded_header");
    let (field, _) = toml_err("[http.deny]\naddresses = [\"10.0.0.1/8\"]");
    assert_eq!(field, "http.deny.addresses[0]");
    let (field, _) = toml_err("[http]\npublic_path = [\"/x\"]");
    assert_eq!(field, "http.public_path");
}

#[test]
fn sync_is_for_counting_windows_shorter_than_every_window() {
    let synced = format!("{RULE}sync = \"100ms\"");
    Engine::from_toml(&synced).expect("a fixed window may sync");
    Engine::from_toml(&synced.replace("fixed_window", "sliding_window_counter"))
        .expect("a window counter may sync");
    let (field, message) = toml_err(&synced.replace("fixed_window", "sliding_window"));
    assert_eq!(field, "rules[0].sync");
    assert!(
        message.contains("sliding_window cannot count locally")
            && message.contains("use fixed_window or sliding_window_counter"),
        "{message}"
    );
    let bucket = "[[rules]]\nname = \"b\"\nkey = \"ip\"\nalgorithm = \"token_bucket\"\ncapacity = 5\nrefill_rate = 1.0\nsync = \"100ms\"";
    let (field, message) = toml_err(bucket);
    assert_eq!(field, "rules[0].sync");
    assert!(
        message.contains("token_bucket cannot count locally"),
        "{message}"
    );
    let (field, message) = toml_err(&format!("{RULE}sync = \"1s\""));
    assert_eq!(field, "rules[0].sync");
    assert!(
        message.contains("must be shorter than the window (1s)"),
        "{message}"
    );
    let (field, message) = toml_err(&format!(
        "{RULE}sync = \"200ms\"\nroles = {{ premium = {{ window = \"100ms\" }} }}"
    ));
    assert_eq!(field, "rules[0].sync");
    assert!(message.contains("for role \"premium\""), "{message}");
    let (field, message) = toml_err(&format!("{RULE}sync = \"500us\""));
    assert_eq!(field, "rules[0].sync");
    assert!(message.contains("at least 1ms"), "{message}");
}

#[test]
fn block_for_is_checked_and_block_after_needs_it() {
    let engine = Engine::from_toml(&format!("{RULE}block_for = \"15m\"\nblock_after = 3"))
        .expect("a rule may block");
    let quota = engine.rules()[0].policies()[0].quota();
    let block = quota.block().expect("the rule blocks");
    assert_eq!(block.duration(), std::time::Duration::from_secs(900));
    assert_eq!(block.after(), 3);

    let (field, message) = toml_err(&format!("{RULE}block_after = 3"));
    assert_eq!(field, "rules[0].block_after");
    assert!(message.contains("needs block_for"), "{message}");
    let (field, message) = toml_err(&format!("{RULE}block_for = \"1m\"\nblock_after = 0"));
    assert_eq!(field, "rules[0].block_after");
    assert!(message.contains("from 1 to"), "{message}");
    let (field, message) = toml_err(&format!("{RULE}block_for = \"500us\""));
    assert_eq!(field, "rules[0].block_for");
    assert!(message.contains("from 1ms to 366 days"), "{message}");
    let (field, message) = toml_err(&format!("{RULE}block_for = \"1m\"\nsync = \"100ms\""));
    assert_eq!(field, "rules[0].block_for");
    assert!(message.contains("cannot block"), "{message}");
    let (field, _) = toml_err(&format!("{RULE}block_for = \"soon\""));
    assert_eq!(field, "rules[0].block_for");
}

#[test]
fn calendar_windows_are_days_weeks_or_months_of_a_real_zone() {
    let rule =
        "[[rules]]\nname = \"q\"\nkey = \"subject\"\nalgorithm = \"fixed_window\"\nlimit = 10\n";
    for window in ["1d", "1w", "7d", "1mo"] {
        let engine = Engine::from_toml(&format!(
            "{rule}window = \"{window}\"\nalign = \"calendar\"\ntimezone = \"Europe/Berlin\""
        ))
        .unwrap_or_else(|e| panic!("{window}: {e}"));
        let calendar = engine.rules()[0].policies()[0].quota().calendar().copied();
        assert_eq!(
            calendar.map(|c| c.zone().to_owned()).as_deref(),
            Some("Europe/Berlin")
        );
    }
    let (field, message) = toml_err(&format!("{rule}window = \"1mo\""));
    assert_eq!(field, "rules[0].window");
    assert!(message.contains("align = \"calendar\""), "{message}");
    let (field, message) = toml_err(&format!("{rule}window = \"2d\"\nalign = \"calendar\""));
    assert_eq!(field, "rules[0].window");
    assert!(message.contains("\"1d\", \"1w\" or \"1mo\""), "{message}");
    let (field, message) = toml_err(&format!(
        "{rule}window = \"1d\"\nalign = \"calendar\"\ntimezone = \"Mars/Olympus\""
    ));
    assert_eq!(field, "rules[0].timezone");
    assert!(message.contains("not an IANA time zone"), "{message}");
    let (field, message) = toml_err(&format!("{rule}window = \"1d\"\ntimezone = \"UTC\""));
    assert_eq!(field, "rules[0].timezone");
    assert!(message.contains("needs align"), "{message}");
    let (field, message) = toml_err(&format!(
        "{rule}window = \"1d\"\nalign = \"calendar\"\nsync = \"1s\""
    ));
    assert_eq!(field, "rules[0].sync");
    assert!(message.contains("calendar"), "{message}");
    let (field, message) = toml_err(
        &format!("{rule}window = \"1d\"\nalign = \"calendar\"")
            .replace("fixed_window", "sliding_window"),
    );
    assert_eq!(field, "rules[0].align");
    assert!(message.contains("sliding_window cannot align"), "{message}");
    let (field, _) = toml_err(&format!("{rule}window = \"1d\"\nalign = \"sideways\""));
    assert_eq!(field, "rules[0].align");
    let (field, message) = toml_err(&format!("{rule}window = \"1y\""));
    assert_eq!(field, "rules[0].window");
    assert!(message.contains("no fixed length"), "{message}");
}
