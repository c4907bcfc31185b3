//! `persisting-fuzz`: crash-recovery fuzzing of the whole stack (`cargo xtask
//! crash-fuzz` runs it).
//!
//! Modes:
//! - `kill`: a worker process runs the seeded workload on a real directory and reports
//!   every acknowledged offset on its stdout; it is killed with SIGKILL at a random
//!   moment, the directory is checked (every acknowledged record at its offset, intact,
//!   no duplicate, dense offsets), and a new worker continues, several kills per run;
//! - `power`: the same workload in-process with the whole bucket on simulated disks
//!   (the WAL's and Lance's files), crashed by dropping, cutting or tearing unsynced
//!   bytes and forgetting unsynced directory entries; `--without-fsync KIND` leaves
//!   one kind of Lance fsync out (a mutation check, expected to fail);
//! - `object-store`: the `kill` mode with the bucket's data behind Lance's
//!   object-store code path (`file-object-store://`, what a bucket on S3 runs: no
//!   fsync, commits by conditional put, the writer lease) and its WAL and lock in a
//!   local `wal_dir`;
//! - `s3`: the same with the data on a real S3-compatible server (the bucket URI in
//!   `PERSISTING_TEST_S3`, endpoint and credentials in `AWS_*`: what
//!   `scripts/s3-server.sh start` prints); not part of `all`, which needs no server.
//!   Workers reach the server through a relay that, in two rounds of three, has an
//!   outage (it hangs, or refuses connections) for a while before the kill, sometimes
//!   ending before it: the worker rides it out (its refused puts and failed flushes
//!   are expected then, and retried), and the check finds every acknowledged record;
//! - `corrupt`: damage WAL segments or Lance files of a closed bucket, then open it: it
//!   must recover a prefix of intact records or fail with an error, never panic, hang
//!   or return a damaged record.
//!
//! Every iteration prints its seed; `--seed S` replays it; `--minutes M` stops starting
//! new iterations of a mode after M minutes (the summary counts those run). A failing
//! iteration keeps its directory and prints it. The last lines are a summary, each
//! failed iteration again with what it found (`failed: kill seed 3: round 2: …`), and
//! `N passed, M failed`.

mod check;
mod corrupt;
mod kill;
mod power;
mod workload;

use std::path::PathBuf;
use std::process::ExitCode;

use check::Totals;

/// The command line (`--help` prints it).
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "persisting-fuzz",
    about = "Crash-recovery fuzzing of the whole Persisting stack",
    after_help = "The kill modes start `persisting-fuzz worker --dir D --seed S --round R [--ops N] [--data kill|object-store|s3] [--outages]` themselves."
)]
pub struct Args {
    /// What to run: `all` is kill, object-store, power and corrupt (s3 needs a server).
    #[arg(default_value = "all", value_parser = ["kill", "object-store", "s3", "power", "corrupt", "all", "worker"])]
    mode: String,
    /// Iterations of each mode.
    #[arg(long, default_value_t = 10)]
    iterations: u64,
    /// Replays one iteration.
    #[arg(long)]
    seed: Option<u64>,
    /// The first seed of a fixed run (default: one taken from the clock).
    #[arg(long)]
    from: Option<u64>,
    /// Kills per iteration of a kill mode.
    #[arg(long, default_value_t = 3)]
    kills: u64,
    /// Stops starting new iterations of a mode after this many minutes.
    #[arg(long)]
    minutes: Option<f64>,
    /// Where the runs' directories go (default: `$TMPDIR/persisting-fuzz`).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// A worker's operations (default: until killed).
    #[arg(long)]
    ops: Option<u64>,
    /// A worker's round within its iteration (seeds its operations with the count it
    /// opened at, so a worker reopened at its predecessor's count runs other ones).
    #[arg(long, default_value_t = 0)]
    round: u64,
    /// The power mode leaves one kind of Lance fsync out (a mutation check: expected
    /// to fail): data-files, manifest-dir or seals.
    #[arg(long)]
    without_fsync: Option<persisting::lance::SyncKind>,
    /// Where the worker's data is (the kill mode it runs for).
    #[arg(long, default_value = "kill", value_parser = parse_data)]
    data: kill::Data,
    /// The worker's store may be away: an error of an operation is reported
    /// (`OUTAGE …`) and the operation retried, instead of ending the worker.
    #[arg(long)]
    outages: bool,
}

fn parse_data(v: &str) -> Result<kill::Data, String> {
    kill::Data::of_mode(v).ok_or_else(|| format!("takes kill, object-store or s3, not {v:?}"))
}

/// Seeds of the iterations: the one given (`--seed`), or `iterations` seeds from
/// `--from` (a fixed run) or from a base taken from the clock.
fn seeds(args: &Args) -> Vec<u64> {
    if let Some(s) = args.seed {
        return vec![s];
    }
    let base = args.from.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_secs() % 1_000_000)
            * 1000
    });
    (0..args.iterations).map(|i| base + i).collect()
}

fn base_dir(args: &Args) -> PathBuf {
    args.dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("persisting-fuzz"))
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))
}

fn summary(mode: &str, t: &Totals, secs: f64) {
    println!(
        "crash-fuzz {mode}: iterations={} kills={} acknowledged={} lost={} duplicated={} corrupted-returned={} errors-detected={} group-commits={} trims={} snapshots={} fsync-failures={} ({secs:.1} s)",
        t.iterations,
        t.kills,
        t.acknowledged,
        t.lost,
        t.duplicated,
        t.corrupted,
        t.errors_detected,
        t.group_commits,
        t.trims,
        t.snapshots,
        t.sync_failures
    );
}

/// The start of the panic message of Lance's scan helper when the runtime it runs on
/// shuts down under it.
const CANCELLED_BY_SHUTDOWN: &str = "Background task failed: JoinError::Cancelled";

/// Keeps the one expected panic out of the output: the corrupt mode drops a bucket
/// and its runtime with a flush commit running (an unclean stop), and Lance's scan
/// helper then panics, on a runtime worker that is going away, that its background
/// task was cancelled. Every other panic is printed as before (and the runs that
/// catch panics still report them).
fn quiet_expected_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if !message.starts_with(CANCELLED_BY_SHUTDOWN) {
            default(info);
        }
    }));
}

fn main() -> ExitCode {
    quiet_expected_panics();
    persisting::log_to_stderr();
    let args = <Args as clap::Parser>::parse();
    if args.mode == "worker" {
        return match kill::worker(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                println!("ERROR {e}");
                ExitCode::from(2)
            }
        };
    }
    let modes: Vec<&str> = match args.mode.as_str() {
        "all" => vec!["kill", "object-store", "power", "corrupt"],
        m => vec![m],
    };
    let base = base_dir(&args);
    let started = std::time::Instant::now();
    let mut all = Totals::default();
    for mode in &modes {
        let mode_started = std::time::Instant::now();
        let mut totals = Totals::default();
        let deadline = args
            .minutes
            .map(|m| mode_started + std::time::Duration::from_secs_f64(m.max(0.0) * 60.0));
        for seed in seeds(&args) {
            if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                println!("{mode}: --minutes reached, stopping before seed {seed}");
                break;
            }
            let result = match *mode {
                "power" => power::iteration(seed, args.without_fsync),
                "corrupt" => corrupt::iteration(&base, seed),
                kill_mode => match kill::Data::of_mode(kill_mode) {
                    Some(data) => kill::iteration(&args, &base, seed, data),
                    None => Err(format!("no mode {kill_mode}")),
                },
            };
            let t = match result {
                Ok(t) => t,
                Err(e) => {
                    let line = format!("{mode} seed {seed}: ERROR {e}");
                    println!("{line}");
                    Totals {
                        iterations: 1,
                        failures: vec![line],
                        ..Totals::default()
                    }
                }
            };
            totals.add(&t);
        }
        summary(mode, &totals, mode_started.elapsed().as_secs_f64());
        all.add(&totals);
    }
    if modes.len() > 1 {
        summary("all", &all, started.elapsed().as_secs_f64());
    }
    // the failures again, last: a log's tail is what a reader sees first
    for f in &all.failures {
        println!("failed: {f}");
    }
    let failed = all.failures.len() as u64;
    println!("{} passed, {failed} failed", all.iterations - failed);
    let violated = all.lost + all.duplicated + all.corrupted > 0;
    if violated || failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
