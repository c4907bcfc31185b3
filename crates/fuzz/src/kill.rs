//! Process-kill mode: real files, a real process, SIGKILL at random moments.
//!
//! The worker prints `READY n` once open (n records recovered), `ACK n` after every
//! acknowledged `put`/`put_batch` (offsets below n acknowledged), and `FLUSHED n`
//! after a flush. An `ACK` line is printed only after the call returned, so the highest
//! one read from the pipe is a lower bound of what the bucket owes.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use persisting::outage::{Outage, Relay};
use persisting::wal::SimRng;
use persisting::{PersistingBackend, PersistingOptions, StorageBackend};

use crate::check::{Totals, below_log_start, verify, verify_groups, verify_snapshot};
use crate::workload::{Applied, GROUPS, Op, Pinned, RunConfig, apply, matches, next_op};
use crate::{Args, runtime};

/// Longest a worker may take to open its bucket.
const OPEN_TIMEOUT: Duration = Duration::from_secs(120);

/// Where a kill mode's bucket keeps its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Data {
    /// The run's directory (`kill`).
    Local,
    /// Lance's object-store code path over local files, `file-object-store://`
    /// (`object-store`).
    ObjectStore,
    /// A real S3-compatible server, under the bucket URI `PERSISTING_TEST_S3` with
    /// the endpoint and credentials in `AWS_*` (`s3`; `scripts/s3-server.sh` starts
    /// one and prints them).
    S3,
}

impl Data {
    /// The mode's name, as on the command line.
    pub fn mode(self) -> &'static str {
        match self {
            Data::Local => "kill",
            Data::ObjectStore => "object-store",
            Data::S3 => "s3",
        }
    }

    /// The kill mode named `mode`.
    pub fn of_mode(mode: &str) -> Option<Self> {
        [Data::Local, Data::ObjectStore, Data::S3]
            .into_iter()
            .find(|d| d.mode() == mode)
    }
}

/// The file in a run's directory naming its data's URI on S3: one prefix per run,
/// read by every worker and check of the run (the server outlives runs).
const S3_URI_FILE: &str = "s3-uri";

/// Where a run's bucket lives under `dir`: the directory itself, or data at a URI
/// (`file-object-store://{dir}/data`, or the run's prefix on S3) with the WAL and
/// lock in `{dir}/local`.
fn location(
    dir: &Path,
    cfg: &RunConfig,
    data: Data,
) -> Result<(String, PersistingOptions), String> {
    let mut opts = cfg.options.clone();
    let uri = match data {
        Data::Local => return Ok((dir.to_string_lossy().into_owned(), opts)),
        Data::ObjectStore => format!("file-object-store://{}", dir.join("data").display()),
        Data::S3 => {
            let file = dir.join(S3_URI_FILE);
            std::fs::read_to_string(&file)
                .map_err(|e| format!("cannot read {}: {e}", file.display()))?
        }
    };
    opts.wal_dir = Some(dir.join("local"));
    if data == Data::S3 {
        // outages of a few seconds: requests give up within them, and the lease
        // lapses (suspending acknowledgements) and is taken back
        for (k, v) in [
            ("timeout", "1s"),
            ("connect_timeout", "1s"),
            ("client_max_retries", "1"),
            ("client_retry_timeout", "2"),
        ] {
            opts.storage_options.insert(k.to_owned(), v.to_owned());
        }
        opts.lease_term = Duration::from_secs(3);
    }
    Ok((uri, opts))
}

/// Gives the run in `dir` a prefix of its own under `PERSISTING_TEST_S3`.
fn new_s3_prefix(dir: &Path, seed: u64) -> Result<(), String> {
    let root = std::env::var("PERSISTING_TEST_S3").map_err(|_| {
        "the s3 mode needs PERSISTING_TEST_S3 (a bucket URI) and the server's AWS_* \
         variables: eval \"$(scripts/s3-server.sh start DIR)\""
            .to_owned()
    })?;
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let uri = format!(
        "{}/fuzz-{}-{ms}/seed-{seed}/bucket_0",
        root.trim_end_matches('/'),
        std::process::id()
    );
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    std::fs::write(dir.join(S3_URI_FILE), uri)
        .map_err(|e| format!("cannot write in {}: {e}", dir.display()))
}

/// The worker: opens the bucket and runs the workload until killed (or `--ops`).
pub fn worker(args: &Args) -> Result<(), String> {
    let dir = args.dir.clone().ok_or("the worker needs --dir")?;
    let seed = args.seed.ok_or("the worker needs --seed")?;
    let cfg = RunConfig::from_seed(seed);
    let (path, mut opts) = location(&dir, &cfg, args.data)?;
    if args.outages {
        // puts at the bound give up within an outage, and are retried
        opts.put_timeout = Duration::from_secs(1);
    }
    runtime()?.block_on(async move {
        let b = PersistingBackend::open(0, &path, opts)
            .await
            .map_err(|e| format!("open: {e}"))?;
        let mut next = b.total_count();
        println!("READY {next}");
        // seeded by the round too: a worker killed before any put was acknowledged is
        // followed by one that opens at the same count, which runs other operations
        let mut rng =
            SimRng::new(seed ^ next.rotate_left(32) ^ args.round.rotate_left(16) ^ 0xabcd);
        let mut done = 0;
        while args.ops.is_none_or(|n| done < n) {
            done += 1;
            let op = next_op(&mut rng);
            if matches!(op, Op::Snapshot(_)) {
                // it may delete the last snapshot acknowledged: owed no more from here
                println!("SNAPPING");
            }
            let applied = match apply(&b, &cfg, op, next).await {
                Err(e) if args.outages => {
                    // the store may be away: nothing of a refused operation was
                    // acknowledged, and the workload goes on from where it was
                    println!("OUTAGE {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                other => other?,
            };
            match applied {
                Applied::Acked(n) => {
                    next = n;
                    println!("ACK {next}");
                }
                Applied::Flushed => println!("FLUSHED {next}"),
                Applied::Committed(g, offset) => println!("COMMIT {g} {offset}"),
                Applied::Trimmed(log_start) => println!("TRIM {log_start}"),
                Applied::Snapshot(p) => println!("SNAP {} {} {}", p.name, p.start, p.end),
                Applied::Read => {
                    let start = b.log_start().await;
                    let from = start + rng.below(next.saturating_sub(start).max(1));
                    let got = match b.get(from, Some(1 + rng.below(300) as usize)).await {
                        // retention trimmed past it meanwhile
                        Err(e) if below_log_start(&e).is_some() => continue,
                        Err(e) if args.outages => {
                            println!("OUTAGE get {from}: {e}");
                            continue;
                        }
                        got => got.map_err(|e| format!("get {from}: {e}"))?,
                    };
                    for (k, r) in got.iter().enumerate() {
                        let at = from + k as u64;
                        if !matches(&cfg, at, r) {
                            return Err(format!("read at offset {at} returned {r}"));
                        }
                    }
                }
            }
        }
        b.close().await.map_err(|e| format!("close: {e}"))?;
        println!("DONE {next}");
        Ok(())
    })
}

enum Line {
    Ready(u64),
    Ack(u64),
    Commit(usize, u64),
    Trim(u64),
    Snap(Pinned),
    /// A snapshot operation starts (it may delete the last one acknowledged).
    Snapping,
    /// An operation the worker saw fail while its store may be away.
    Outage,
    Other(String),
}

/// How a worker reaches its store: the relay of the `s3` mode (its endpoint), and
/// whether an outage may come (the worker then rides errors out).
struct Route<'a> {
    relay: Option<&'a Relay>,
    outages: bool,
}

fn spawn_worker(
    dir: &Path,
    seed: u64,
    round: u64,
    ops: Option<u64>,
    data: Data,
    route: &Route<'_>,
) -> Result<(Child, Receiver<Line>), String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let mut cmd = Command::new(exe);
    cmd.arg("worker")
        .arg("--dir")
        .arg(dir)
        .arg("--seed")
        .arg(seed.to_string())
        .arg("--round")
        .arg(round.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(n) = ops {
        cmd.arg("--ops").arg(n.to_string());
    }
    cmd.arg("--data").arg(data.mode());
    if let Some(relay) = route.relay {
        cmd.env("AWS_ENDPOINT", relay.endpoint());
    }
    if route.outages {
        cmd.arg("--outages");
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start the worker: {e}"))?;
    let stdout = child.stdout.take().ok_or("the worker has no stdout")?;
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let parsed = match line.split_once(' ') {
                Some(("READY", n)) => n.parse().map(Line::Ready).unwrap_or(Line::Other(line)),
                Some(("ACK", n)) => n.parse().map(Line::Ack).unwrap_or(Line::Other(line)),
                Some(("OUTAGE", _)) => Line::Outage,
                None if line == "SNAPPING" => Line::Snapping,
                Some(("TRIM", n)) => n.parse().map(Line::Trim).unwrap_or(Line::Other(line)),
                Some(("SNAP", rest)) => {
                    let parts: Vec<&str> = rest.split(' ').collect();
                    match parts[..] {
                        [name, start, end] => match (start.parse(), end.parse()) {
                            (Ok(start), Ok(end)) => Line::Snap(Pinned {
                                name: name.to_owned(),
                                start,
                                end,
                            }),
                            _ => Line::Other(line),
                        },
                        _ => Line::Other(line),
                    }
                }
                Some(("COMMIT", rest)) => rest
                    .split_once(' ')
                    .and_then(|(g, o)| Some(Line::Commit(g.parse().ok()?, o.parse().ok()?)))
                    .unwrap_or(Line::Other(line)),
                _ => Line::Other(line),
            };
            if tx.send(parsed).is_err() {
                break;
            }
        }
    });
    Ok((child, rx))
}

/// What the worker acknowledged: records below `records`, and per consumer group
/// the highest commit.
#[derive(Debug, Default)]
struct Acked {
    records: u64,
    commits: [u64; GROUPS.len()],
    /// Commit lines read.
    commit_lines: u64,
    /// Operations the worker saw fail during outages.
    outage_errors: u64,
    /// The log start of the last trim acknowledged.
    trimmed: u64,
    /// The last snapshot acknowledged.
    pinned: Option<Pinned>,
    /// Trim and snapshot lines read.
    trim_lines: u64,
    snapshot_lines: u64,
}

/// Reads the worker's lines until `deadline` (or the pipe closes), raising `acked`.
/// Returns false when the pipe closed.
fn pump(
    rx: &Receiver<Line>,
    deadline: Instant,
    acked: &mut Acked,
    errors: &mut Vec<String>,
) -> bool {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(Line::Ack(n)) => acked.records = acked.records.max(n),
            Ok(Line::Commit(g, o)) if g < GROUPS.len() => {
                acked.commit_lines += 1;
                acked.commits[g] = acked.commits[g].max(o);
            }
            Ok(Line::Commit(..)) => {}
            Ok(Line::Outage) => acked.outage_errors += 1,
            Ok(Line::Trim(n)) => {
                acked.trim_lines += 1;
                acked.trimmed = acked.trimmed.max(n);
            }
            Ok(Line::Snapping) => acked.pinned = None,
            Ok(Line::Snap(p)) => {
                acked.snapshot_lines += 1;
                acked.pinned = Some(p);
            }
            Ok(Line::Ready(_)) => {}
            Ok(Line::Other(l)) => {
                if l.starts_with("ERROR") || l.starts_with("BAD") {
                    errors.push(l);
                }
            }
            Err(RecvTimeoutError::Timeout) => return true,
            Err(RecvTimeoutError::Disconnected) => return false,
        }
    }
}

/// Opens the directory in this process (the worker is dead, its lock released) and
/// checks it against what was acknowledged.
fn check(
    dir: &Path,
    cfg: &RunConfig,
    data: Data,
    acked: &Acked,
    t: &mut Totals,
) -> Result<Vec<String>, String> {
    let (path, mut opts) = location(dir, cfg, data)?;
    // the check reads what the crash left: no retention of its own meanwhile
    opts.retention_records = None;
    let (v, mut bad) = runtime()?.block_on(async {
        let b = PersistingBackend::open(0, &path, opts)
            .await
            .map_err(|e| format!("reopening after the kill: {e}"))?;
        let v = verify(&b, cfg, acked.records, acked.trimmed).await?;
        let mut bad = verify_groups(&b, &acked.commits).await?;
        bad.extend(verify_snapshot(&b, cfg, acked.pinned.as_ref()).await?);
        Ok::<_, String>((v, bad))
    })?;
    let acked = acked.records;
    t.judge(&v);
    if !v.clean() {
        bad.push(format!(
            "acknowledged {acked}, present {}: lost {} duplicated {} corrupted {}",
            v.present, v.lost, v.duplicated, v.corrupted
        ));
    }
    for b in &bad {
        println!("  {b}");
    }
    Ok(bad)
}

/// One run: `kills` kills at random moments, a check after each, then a clean finish.
pub fn iteration(args: &Args, base: &Path, seed: u64, data: Data) -> Result<Totals, String> {
    let cfg = RunConfig::from_seed(seed);
    let mode = data.mode();
    let dir = base.join(format!("{mode}-{seed}"));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .map_err(|e| format!("cannot clear {}: {e}", dir.display()))?;
    }
    if data == Data::S3 {
        new_s3_prefix(&dir, seed)?;
    }
    println!("{mode} seed {seed}: {}", cfg.describe());
    let mut rng = SimRng::new(seed ^ 0x4b11);
    let mut t = Totals {
        iterations: 1,
        ..Totals::default()
    };
    let mut acked = Acked::default();
    let mut problems = Vec::new();
    let mut errors = Vec::new();
    // the s3 mode's relay and its outages (a generator of their own: the kill times
    // of a seed stay what they were)
    let relay = match data {
        Data::S3 => Some(Relay::start(s3_server()?).map_err(|e| format!("relay: {e}"))?),
        _ => None,
    };
    let mut outages = SimRng::new(seed ^ 0x0a7a);
    for round in 0..=args.kills {
        let last = round == args.kills;
        let outage = relay
            .as_ref()
            .filter(|_| !last)
            .and_then(|_| plan(&mut outages));
        let route = Route {
            relay: relay.as_ref(),
            outages: outage.is_some(),
        };
        let (mut child, rx) = spawn_worker(&dir, seed, round, last.then_some(50), data, &route)?;
        // wait for READY
        let ready = match rx.recv_timeout(OPEN_TIMEOUT) {
            Ok(Line::Ready(n)) => n,
            Ok(Line::Other(l)) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("worker did not open {}: {l}", dir.display()));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("worker did not open {} in time", dir.display()));
            }
        };
        if ready < acked.records {
            println!(
                "  reopened with {ready} records, {} acknowledged",
                acked.records
            );
        }
        if last {
            pump(&rx, Instant::now() + OPEN_TIMEOUT, &mut acked, &mut errors);
            let status = child.wait().map_err(|e| e.to_string())?;
            if !status.success() {
                errors.push(format!("final worker exited with {status}"));
            }
        } else {
            let delay = Duration::from_millis(rng.below(1500));
            let mut alive = pump(&rx, Instant::now() + delay, &mut acked, &mut errors);
            if let (Some(plan), Some(relay)) = (outage, &relay) {
                let before = acked.outage_errors;
                relay.set(plan.kind);
                let during = plan.length.min(plan.kill_after);
                alive = alive && pump(&rx, Instant::now() + during, &mut acked, &mut errors);
                relay.set(Outage::None);
                if plan.kill_after > plan.length {
                    let after = plan.kill_after - plan.length;
                    alive = alive && pump(&rx, Instant::now() + after, &mut acked, &mut errors);
                }
                println!(
                    "  outage: {:?} for {} ms, killed {} ms into it; {} operations failed meanwhile",
                    plan.kind,
                    plan.length.as_millis(),
                    plan.kill_after.as_millis(),
                    acked.outage_errors - before
                );
            }
            if alive {
                let _ = child.kill(); // SIGKILL
                t.kills += 1;
            }
            let _ = child.wait();
            // ACK lines written before the kill are still in the pipe
            pump(
                &rx,
                Instant::now() + Duration::from_secs(5),
                &mut acked,
                &mut errors,
            );
        }
        let mut found =
            check(&dir, &cfg, data, &acked, &mut t).map_err(|e| format!("round {round}: {e}"))?;
        for e in errors.drain(..) {
            println!("  worker: {e}");
            found.push(format!("worker: {e}"));
        }
        if !found.is_empty() {
            problems.push(format!("round {round}: {}", found.join("; ")));
            break;
        }
    }
    t.acknowledged = acked.records;
    t.group_commits = acked.commit_lines;
    t.trims = acked.trim_lines;
    t.snapshots = acked.snapshot_lines;
    if problems.is_empty() {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        t.failures.push(format!(
            "{mode} seed {seed}: {} (directory kept at {})",
            problems.join("; "),
            dir.display()
        ));
        println!(
            "{mode} seed {seed}: FAILED; directory kept at {} (replay: --seed {seed})",
            dir.display()
        );
    }
    Ok(t)
}

/// An outage of a round of the `s3` mode: what the relay does, for how long, and when
/// (from its start) the worker is killed.
#[derive(Debug, Clone, Copy)]
struct Plan {
    kind: Outage,
    length: Duration,
    kill_after: Duration,
}

/// Two rounds in three have an outage of 0.5 to 4 s (a hang or a refusal); the kill
/// comes within it or up to 2 s after it ended (the worker then recovers first).
fn plan(rng: &mut SimRng) -> Option<Plan> {
    let kind = match rng.below(3) {
        0 => return None,
        1 => Outage::Hang,
        _ => Outage::Refuse,
    };
    let length = Duration::from_millis(500 + rng.below(3500));
    let kill_after = Duration::from_millis(rng.below(length.as_millis() as u64 + 2000));
    Some(Plan {
        kind,
        length,
        kill_after,
    })
}

/// The S3 server's address, from `AWS_ENDPOINT` (`http://host:port`).
fn s3_server() -> Result<std::net::SocketAddr, String> {
    let endpoint = std::env::var("AWS_ENDPOINT")
        .map_err(|_| "the s3 mode needs AWS_ENDPOINT (scripts/s3-server.sh start)".to_owned())?;
    let hostport = endpoint.trim_start_matches("http://").trim_end_matches('/');
    std::net::ToSocketAddrs::to_socket_addrs(hostport)
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| format!("AWS_ENDPOINT {endpoint:?} is not http://host:port"))
}
