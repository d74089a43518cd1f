//! `floodwall-stats`: the report of what floodwall gateways wrote to a Redis stream
//! (`[monitor] stream`), built by a separate process — the same JSON shape as
//! `Engine::report`, with `"source": "stream"`, or the Prometheus text format.
//!
//! It reads through a consumer group (`--group`, created from the stream's beginning unless
//! `--start new`), so a second run with the same group reports only what was written since;
//! another group reads everything again. With `--follow SECONDS` it keeps reading for that
//! long and prints the report of everything it read. A summary of what was read goes to
//! standard error; the report alone to standard output.
//!
//! Exit status: 0, a report was printed; 1, Redis failed; 2, the command line is wrong (the
//! message names the argument).

use std::ffi::OsString;
use std::fmt;
use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use floodwall::config::HumanDuration;
use floodwall::monitor::stream::DEFAULT_GROUP;
use floodwall::monitor::{GroupStart, ReaderOptions, StreamLocation, StreamReader, prometheus};
use floodwall::{Clock, ErrorKind, SystemClock};

const USAGE: &str = "\
floodwall-stats: report on the events floodwall gateways wrote to a Redis stream

USAGE:
    floodwall-stats [OPTIONS]

OPTIONS:
    --url URL              the Redis server [default: redis://127.0.0.1:6379]
    --cluster URL,URL,...  a Redis Cluster, by seed nodes (instead of --url)
    --stream KEY           the stream the gateways write ([monitor] stream) [default: fw:events]
    --group NAME           the consumer group [default: floodwall-stats]; a group sees each
                           entry once, so a second run reports what was written since
    --consumer NAME        this reader's name in the group [default: the host name]
    --start WHERE          where a new group starts: beginning | new [default: beginning]
    --horizon DURATION     the per-minute series, in whole minutes (1m to 24h) [default: 60m]
    --top N                entries in each top list (1 to 1000) [default: 10]
    --follow SECONDS       keep reading this long (at most a day), then print the report
    --format FORMAT        json (pretty) | prometheus [default: json]
    -h, --help             print this help
    -V, --version          print the version

EXIT STATUS:
    0 a report was printed; 1 Redis failed; 2 the command line is wrong
";

/// The longest `--follow`.
const MAX_FOLLOW_SECS: f64 = 86_400.0;

/// What to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Prometheus,
}

/// A checked command line.
#[derive(Debug)]
struct Args {
    location: StreamLocation,
    stream: String,
    group: String,
    consumer: Option<String>,
    start: GroupStart,
    horizon_minutes: u64,
    top: usize,
    follow: Option<Duration>,
    format: Format,
}

/// What the command line asks for.
#[derive(Debug)]
enum Command {
    Report(Box<Args>),
    Help,
    Version,
}

/// A wrong command line: the argument at fault and what is wrong with it.
#[derive(Debug, PartialEq, Eq)]
struct UsageError {
    argument: String,
    problem: String,
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.argument, self.problem)
    }
}

fn usage(argument: &str, problem: impl Into<String>) -> UsageError {
    UsageError {
        argument: argument.to_owned(),
        problem: problem.into(),
    }
}

/// Reads the arguments (without the program name). Options take their value as the next
/// argument or after `=` (`--top 5`, `--top=5`); each may be given once.
fn parse(arguments: impl IntoIterator<Item = OsString>) -> Result<Command, UsageError> {
    let mut seen: Vec<String> = Vec::new();
    let mut url = None;
    let mut cluster = None;
    let mut stream = None;
    let mut group = None;
    let mut consumer = None;
    let mut start = None;
    let mut horizon = None;
    let mut top = None;
    let mut follow = None;
    let mut format = None;

    let mut arguments = arguments.into_iter();
    while let Some(argument) = arguments.next() {
        let argument = argument
            .into_string()
            .map_err(|raw| usage(&raw.to_string_lossy(), "is not valid UTF-8"))?;
        let (name, inline) = match argument.split_once('=') {
            Some((name, value)) if name.starts_with("--") => {
                (name.to_owned(), Some(value.to_owned()))
            }
            _ => (argument.clone(), None),
        };
        match name.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            "--url" | "--cluster" | "--stream" | "--group" | "--consumer" | "--start"
            | "--horizon" | "--top" | "--follow" | "--format" => {}
            other if other.starts_with('-') => {
                return Err(usage(other, "unknown option (see --help)"));
            }
            other => return Err(usage(other, "unexpected argument (see --help)")),
        }
        if seen.contains(&name) {
            return Err(usage(&name, "given more than once"));
        }
        seen.push(name.clone());
        let value = match inline {
            Some(value) => value,
            None => match arguments.next().map(OsString::into_string) {
                Some(Ok(value)) if !value.starts_with("--") => value,
                Some(Err(raw)) => {
                    return Err(usage(&name, format!("{raw:?} is not valid UTF-8")));
                }
                _ => return Err(usage(&name, "needs a value")),
            },
        };
        if value.trim().is_empty() {
            return Err(usage(&name, "must not be empty"));
        }
        match name.as_str() {
            "--url" => url = Some(check_url(&name, &value)?),
            "--cluster" => {
                let urls = value
                    .split(',')
                    .map(|u| check_url(&name, u.trim()))
                    .collect::<Result<Vec<_>, _>>()?;
                cluster = Some(urls);
            }
            "--stream" => stream = Some(value),
            "--group" => group = Some(value),
            "--consumer" => consumer = Some(value),
            "--start" => {
                start = Some(match value.as_str() {
                    "beginning" => GroupStart::Beginning,
                    "new" => GroupStart::New,
                    _ => {
                        return Err(usage(
                            &name,
                            format!("must be beginning or new, not {value:?}"),
                        ));
                    }
                });
            }
            "--horizon" => {
                let d = HumanDuration::parse(&value).map_err(|e| usage(&name, e))?;
                let micros = d.0.as_micros();
                let minutes = micros / 60_000_000;
                if !micros.is_multiple_of(60_000_000) || !(1..=24 * 60).contains(&minutes) {
                    return Err(usage(
                        &name,
                        format!("must be whole minutes from 1m to 24h, not {value:?}"),
                    ));
                }
                horizon = Some(minutes as u64);
            }
            "--top" => {
                top = Some(
                    value
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=1000).contains(n))
                        .ok_or_else(|| {
                            usage(&name, format!("must be from 1 to 1000, not {value:?}"))
                        })?,
                );
            }
            "--follow" => {
                let seconds = value
                    .parse::<f64>()
                    .ok()
                    .filter(|s| s.is_finite() && (0.0..=MAX_FOLLOW_SECS).contains(s))
                    .ok_or_else(|| {
                        usage(
                            &name,
                            format!("must be a number of seconds from 0 to 86400, not {value:?}"),
                        )
                    })?;
                follow = Some(Duration::from_secs_f64(seconds));
            }
            "--format" => {
                format = Some(match value.as_str() {
                    "json" => Format::Json,
                    "prometheus" => Format::Prometheus,
                    _ => {
                        return Err(usage(
                            &name,
                            format!("must be json or prometheus, not {value:?}"),
                        ));
                    }
                });
            }
            _ => unreachable!("every option is matched above"),
        }
    }
    let location = match (url, cluster) {
        (Some(_), Some(_)) => return Err(usage("--cluster", "cannot be given with --url")),
        (_, Some(urls)) => StreamLocation::Cluster(urls),
        (Some(url), None) => StreamLocation::Node(url),
        (None, None) => StreamLocation::Node("redis://127.0.0.1:6379".to_owned()),
    };
    Ok(Command::Report(Box::new(Args {
        location,
        stream: stream.unwrap_or_else(|| "fw:events".to_owned()),
        group: group.unwrap_or_else(|| DEFAULT_GROUP.to_owned()),
        consumer,
        start: start.unwrap_or_default(),
        horizon_minutes: horizon.unwrap_or(60),
        top: top.unwrap_or(10),
        follow,
        format: format.unwrap_or(Format::Json),
    })))
}

/// A URL the Redis client takes: `redis://`, `rediss://`, `unix://` or `redis+unix://`.
fn check_url(option: &str, url: &str) -> Result<String, UsageError> {
    let schemes = ["redis://", "rediss://", "unix://", "redis+unix://"];
    if url.is_empty() || !schemes.iter().any(|s| url.starts_with(s)) {
        return Err(usage(
            option,
            format!("{url:?} is not a Redis URL (e.g. redis://127.0.0.1:6379)"),
        ));
    }
    Ok(url.to_owned())
}

/// Why a run failed: the command line (a bad URL found by the client), or Redis.
enum Failure {
    Usage(UsageError),
    Redis(String),
}

fn failure(error: floodwall::Error) -> Failure {
    match (error.kind(), error.field()) {
        (ErrorKind::InvalidConfig, Some("url")) => Failure::Usage(usage("--url", error.message())),
        (ErrorKind::InvalidConfig, Some("urls")) => {
            Failure::Usage(usage("--cluster", error.message()))
        }
        (ErrorKind::InvalidConfig, Some(field)) => {
            Failure::Usage(usage(&format!("--{field}"), error.message()))
        }
        _ => Failure::Redis(error.to_string()),
    }
}

/// Reads the stream and renders the report.
fn run(args: &Args) -> Result<String, Failure> {
    let mut options = ReaderOptions::default()
        .group(args.group.as_str())
        .start(args.start)
        .horizon_minutes(args.horizon_minutes)
        .top(args.top);
    if let Some(consumer) = &args.consumer {
        options = options.consumer(consumer.as_str());
    }
    let mut reader = StreamReader::open(&args.location, &args.stream, options).map_err(failure)?;
    reader.read_available().map_err(failure)?;
    if let Some(duration) = args.follow {
        reader.follow(duration).map_err(failure)?;
    }
    let report = reader.report(SystemClock.now());
    let stats = reader.stats();
    eprintln!(
        "floodwall-stats: {} on {}: {} entries read, {} recorded, {} malformed, from {} gateway(s)",
        args.stream,
        args.location,
        stats.entries,
        stats.recorded,
        stats.malformed,
        stats.sources.len()
    );
    if let Some(last) = &stats.last_malformed {
        eprintln!("floodwall-stats: last malformed entry: {last}");
    }
    Ok(match args.format {
        Format::Json => {
            let mut text = serde_json::to_string_pretty(&report)
                .map_err(|e| Failure::Redis(format!("cannot render the report: {e}")))?;
            text.push('\n');
            text
        }
        Format::Prometheus => prometheus::render(&report, None, &[]),
    })
}

fn main() -> ExitCode {
    let args = match parse(std::env::args_os().skip(1)) {
        Ok(Command::Help) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            println!("floodwall-stats {}", floodwall::VERSION);
            return ExitCode::SUCCESS;
        }
        Ok(Command::Report(args)) => args,
        Err(e) => {
            eprintln!("floodwall-stats: {e}\n(floodwall-stats --help lists the options)");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(text) => {
            let mut out = std::io::stdout().lock();
            if out
                .write_all(text.as_bytes())
                .and_then(|()| out.flush())
                .is_err()
            {
                return ExitCode::from(1);
            }
            ExitCode::SUCCESS
        }
        Err(Failure::Usage(e)) => {
            eprintln!("floodwall-stats: {e}\n(floodwall-stats --help lists the options)");
            ExitCode::from(2)
        }
        Err(Failure::Redis(message)) => {
            eprintln!("floodwall-stats: {message}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(args: &[&str]) -> Result<Command, UsageError> {
        parse(args.iter().map(OsString::from))
    }

    fn error(args: &[&str]) -> UsageError {
        parse_str(args).expect_err("refused")
    }

    #[test]
    fn defaults_and_every_option() {
        let Command::Report(args) = parse_str(&[]).expect("ok") else {
            panic!("a report")
        };
        assert_eq!(
            args.location,
            StreamLocation::Node("redis://127.0.0.1:6379".into())
        );
        assert_eq!(
            (
                args.stream.as_str(),
                args.group.as_str(),
                args.top,
                args.horizon_minutes
            ),
            ("fw:events", "floodwall-stats", 10, 60)
        );
        assert_eq!(
            (args.format, args.follow, args.start),
            (Format::Json, None, GroupStart::Beginning)
        );

        let Command::Report(args) = parse_str(&[
            "--cluster=redis://127.0.0.1:7000, redis://127.0.0.1:7001",
            "--stream",
            "s",
            "--group",
            "g",
            "--consumer=c",
            "--start",
            "new",
            "--horizon",
            "2h",
            "--top",
            "3",
            "--follow",
            "1.5",
            "--format",
            "prometheus",
        ])
        .expect("ok") else {
            panic!("a report")
        };
        assert_eq!(
            args.location,
            StreamLocation::Cluster(vec![
                "redis://127.0.0.1:7000".into(),
                "redis://127.0.0.1:7001".into()
            ])
        );
        assert_eq!(args.consumer.as_deref(), Some("c"));
        assert_eq!((args.horizon_minutes, args.top), (120, 3));
        assert_eq!(args.follow, Some(Duration::from_millis(1500)));
        assert_eq!(
            (args.format, args.start),
            (Format::Prometheus, GroupStart::New)
        );
        assert!(matches!(
            parse_str(&["--top", "1", "-h"]),
            Ok(Command::Help)
        ));
        assert!(matches!(parse_str(&["-V"]), Ok(Command::Version)));
    }

    #[test]
    fn every_error_names_the_argument() {
        for (args, argument, words) in [
            (&["--bogus"][..], "--bogus", "unknown option"),
            (&["stray"], "stray", "unexpected argument"),
            (&["--url"], "--url", "needs a value"),
            (&["--url", "--top", "1"], "--url", "needs a value"),
            (&["--url", "http://x"], "--url", "not a Redis URL"),
            (&["--cluster", "redis://a,"], "--cluster", "not a Redis URL"),
            (
                &["--url", "redis://a", "--cluster", "redis://b"],
                "--cluster",
                "with --url",
            ),
            (&["--top", "0"], "--top", "from 1 to 1000"),
            (&["--top", "x"], "--top", "from 1 to 1000"),
            (&["--horizon", "90s"], "--horizon", "whole minutes"),
            (&["--horizon", "2d"], "--horizon", "whole minutes"),
            (&["--horizon", "5"], "--horizon", "no unit"),
            (&["--follow", "-1"], "--follow", "seconds"),
            (&["--follow", "inf"], "--follow", "seconds"),
            (&["--format", "xml"], "--format", "json or prometheus"),
            (&["--start", "end"], "--start", "beginning or new"),
            (&["--stream", ""], "--stream", "empty"),
            (&["--top", "1", "--top", "2"], "--top", "more than once"),
        ] {
            let e = error(args);
            assert_eq!(e.argument, argument, "{args:?}: {e}");
            assert!(e.problem.contains(words), "{args:?}: {e}");
        }
    }
}
