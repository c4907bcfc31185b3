//! `persisting`: use and operate Persisting buckets and topics from the shell.
//!
//! Every command takes a PATH: a bucket's storage directory, or with `--topic T` the
//! storage root of a queue whose buckets are `PATH/T/bucket_{id}`. Errors are one line
//! on stderr and a non-zero exit status.

mod demo;
mod lifetime;
mod open;
mod wal;

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use persisting::Record;

use crate::open::{BackendArgs, Opened};

/// The error of a command: printed as one line.
type CliResult<T = ()> = Result<T, String>;

#[derive(Parser, Debug)]
#[command(
    name = "persisting",
    version,
    about = "Durable storage for bucketed record queues: write, read, inspect and verify buckets.",
    after_help = "Example:\n  persisting demo --records 100000\n  echo '{\"id\": \"1\", \"n\": 1}' | persisting put /tmp/q --topic events"
)]
struct Cli {
    /// Serve Prometheus metrics on this address while the command runs (and enable
    /// metrics on the buckets it opens).
    #[arg(long, global = true, value_name = "ADDR")]
    metrics_addr: Option<SocketAddr>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Write records into a topic (WAL on, zstd), reopen it, read everything back,
    /// verify it and print a summary.
    #[command(
        after_help = "Example:\n  persisting demo\n  persisting demo --dir /tmp/demo --records 1000000"
    )]
    Demo(demo::DemoArgs),
    /// Store JSON lines from stdin, one record per line.
    #[command(
        after_help = "Example:\n  printf '{\"id\": \"a\", \"n\": 1}\\n{\"id\": \"b\", \"n\": 2}\\n' | persisting put /tmp/bucket\n  persisting put /tmp/queue --topic events --option compression=zstd < events.jsonl"
    )]
    Put {
        #[command(flatten)]
        target: BackendArgs,
        /// Lines stored as one batch (all or none of a batch is stored).
        #[arg(long, default_value_t = 1000)]
        batch: usize,
    },
    /// Print records as JSON lines.
    #[command(after_help = "Example:\n  persisting get /tmp/bucket --offset 100 --limit 10")]
    Get {
        #[command(flatten)]
        target: BackendArgs,
        /// First offset (in a topic: of every bucket).
        #[arg(long, default_value_t = 0)]
        offset: u64,
        /// Records to print at most.
        #[arg(long)]
        limit: Option<usize>,
        /// Read in this consumer group: each bucket from the group's committed offset
        /// (instead of --offset), and commit what was printed once it is printed.
        #[arg(long, conflicts_with = "snapshot")]
        group: Option<String>,
        /// Read the snapshot of this name (the bucket as it was when it was taken).
        #[arg(long)]
        snapshot: Option<String>,
    },
    /// Remove a bucket's records below an offset, by whole Lance fragments (the one
    /// holding it stays); the records left keep their offsets, reads below the new log
    /// start fail naming it. Consumer groups do not hold back an explicit trim.
    #[command(after_help = "Example:\n  persisting trim /tmp/bucket --before 1000000")]
    Trim {
        #[command(flatten)]
        target: BackendArgs,
        /// The first offset to keep (at least: a fragment holding it stays whole).
        #[arg(long)]
        before: u64,
    },
    /// Snapshots: pin a bucket's records under a name (pylance opens it as
    /// lance.dataset(uri, version=NAME)), list them, delete one.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Consumer groups: list each group's committed offset, the bucket's end and the
    /// lag; or seek, commit or delete a group. Works on a bucket another process writes.
    #[command(
        after_help = "Example:\n  persisting groups /tmp/bucket\n  persisting groups /tmp/queue --topic events --json\n  persisting groups /tmp/bucket seek trainer 0\n  persisting groups /tmp/bucket delete trainer"
    )]
    Groups {
        #[command(flatten)]
        target: BackendArgs,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        action: Option<GroupAction>,
    },
    /// Print the last records, and with --follow wait for new ones (as the writer
    /// flushes them to Lance).
    #[command(
        after_help = "Example:\n  persisting tail /tmp/bucket --follow\n  persisting tail /tmp/queue --topic events --offset 0"
    )]
    Tail {
        #[command(flatten)]
        target: BackendArgs,
        /// First offset (default: the last 10 records).
        #[arg(long)]
        offset: Option<u64>,
        /// Keep waiting for new records, like tail -f.
        #[arg(long, short)]
        follow: bool,
    },
    /// Print a bucket's (or each bucket of a topic's) statistics.
    #[command(after_help = "Example:\n  persisting stats /tmp/bucket --json")]
    Stats {
        #[command(flatten)]
        target: BackendArgs,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Inspect or verify a bucket's write-ahead log (read-only).
    #[command(subcommand)]
    Wal(WalCommand),
    /// Merge a bucket's small Lance fragments and remove old versions (offsets kept).
    #[command(after_help = "Example:\n  persisting compact /tmp/bucket")]
    Compact {
        /// The bucket's storage directory.
        path: PathBuf,
    },
    /// Check every Lance data file of a bucket against the seal written with it.
    #[command(after_help = "Example:\n  persisting verify /tmp/bucket")]
    Verify {
        /// The bucket's storage directory.
        path: PathBuf,
    },
    /// Run a steady write workload with metrics served over HTTP, until Ctrl-C.
    #[command(
        after_help = "Example:\n  persisting serve-metrics --addr 127.0.0.1:9464 &\n  curl -s http://127.0.0.1:9464/metrics | grep persisting_"
    )]
    ServeMetrics(ServeArgs),
}

#[derive(Subcommand, Debug)]
enum GroupAction {
    /// Move a group to OFFSET (back or forward) in every bucket PATH names.
    Seek {
        /// The group.
        group: String,
        /// Its new committed offset.
        offset: u64,
    },
    /// Commit OFFSET for a group (forward only) in every bucket PATH names.
    Commit {
        /// The group.
        group: String,
        /// Its new committed offset.
        offset: u64,
    },
    /// Delete a group from every bucket PATH names.
    Delete {
        /// The group.
        group: String,
    },
}

#[derive(Subcommand, Debug)]
enum SnapshotCommand {
    /// Pin every acknowledged record of the bucket under NAME.
    #[command(after_help = "Example:\n  persisting snapshot create /tmp/bucket epoch-3")]
    Create {
        #[command(flatten)]
        target: BackendArgs,
        /// Letters, digits, '.', '-' and '_'.
        name: String,
    },
    /// The bucket's snapshots: name, version, offsets, creation time.
    #[command(after_help = "Example:\n  persisting snapshot list /tmp/bucket --json")]
    List {
        #[command(flatten)]
        target: BackendArgs,
        /// JSON instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Delete the snapshot NAME (what only it kept is removed once its versions are
    /// older than version_retention).
    #[command(after_help = "Example:\n  persisting snapshot delete /tmp/bucket epoch-3")]
    Delete {
        #[command(flatten)]
        target: BackendArgs,
        /// The snapshot.
        name: String,
    },
}

#[derive(Subcommand, Debug)]
enum WalCommand {
    /// Segments, LSN ranges, sizes and checksum status.
    #[command(after_help = "Example:\n  persisting wal inspect /tmp/bucket")]
    Inspect {
        /// A bucket directory or its `wal` directory.
        path: PathBuf,
    },
    /// Verify every frame; exit non-zero naming file and offset on corruption.
    #[command(after_help = "Example:\n  persisting wal verify /tmp/bucket && echo intact")]
    Verify {
        /// A bucket directory or its `wal` directory.
        path: PathBuf,
    },
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// Address of the metrics endpoint.
    #[arg(long, default_value = "127.0.0.1:9464")]
    addr: SocketAddr,
    /// Storage root of the workload's topic (default: the demo directory).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Records per second to write.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    duration: Option<f64>,
}

fn main() -> ExitCode {
    persisting::log_to_stderr();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("persisting: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("persisting: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> CliResult {
    let metrics = match cli.metrics_addr {
        Some(addr) => {
            let endpoint = persisting::serve_metrics(addr).map_err(|e| e.to_string())?;
            eprintln!("metrics: http://{}/metrics", endpoint.addr());
            true
        }
        None => false,
    };
    match cli.command {
        Command::Demo(args) => demo::run(args, metrics).await,
        Command::Put { target, batch } => put(target, batch, metrics).await,
        Command::Get {
            target,
            offset,
            limit,
            snapshot: Some(name),
            ..
        } => lifetime::get(target, &name, offset, limit).await,
        Command::Get {
            target,
            offset,
            limit,
            group: None,
            ..
        } => get(target, offset, limit, metrics).await,
        Command::Get {
            target,
            limit,
            group: Some(group),
            ..
        } => get_in_group(target, &group, limit, metrics).await,
        Command::Groups {
            target,
            json,
            action,
        } => groups(target, json, action).await,
        Command::Tail {
            target,
            offset,
            follow,
        } => tail(target, offset, follow, metrics).await,
        Command::Stats { target, json } => stats(target, json, metrics).await,
        Command::Trim { target, before } => lifetime::trim(target, before).await,
        Command::Snapshot(SnapshotCommand::Create { target, name }) => {
            lifetime::create(target, &name).await
        }
        Command::Snapshot(SnapshotCommand::List { target, json }) => {
            lifetime::list(target, json).await
        }
        Command::Snapshot(SnapshotCommand::Delete { target, name }) => {
            lifetime::delete(target, &name).await
        }
        Command::Wal(WalCommand::Inspect { path }) => wal::inspect(&path),
        Command::Wal(WalCommand::Verify { path }) => wal::verify(&path),
        Command::Compact { path } => open::compact(&path).await,
        Command::Verify { path } => open::verify(&path).await,
        Command::ServeMetrics(args) => serve_metrics(args, metrics).await,
    }
}

/// Prints one line on stdout; when the reader has gone (for example `| head`), exits
/// quietly as other Unix tools do.
fn emit(line: impl std::fmt::Display) {
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{line}").is_err() {
        std::process::exit(0);
    }
}

fn print_records(records: &[Record]) -> CliResult {
    let mut out = std::io::stdout().lock();
    for r in records {
        let line = r.to_json_lossy().to_string();
        if writeln!(out, "{line}").is_err() {
            // the reader went away (for example `| head`): stop quietly
            return Ok(());
        }
    }
    out.flush().ok();
    Ok(())
}

async fn put(target: BackendArgs, batch: usize, metrics: bool) -> CliResult {
    if batch == 0 {
        return Err("--batch must be at least 1".to_owned());
    }
    let opened = target.open_for_write(metrics).await?;
    let result = put_lines(&opened, batch).await;
    // what was stored before an error is kept: close (flush) in every case
    let closed = opened.close().await;
    let stored = result?;
    closed?;
    eprintln!("stored {stored} records");
    Ok(())
}

/// Stores stdin's JSON lines in batches; returns the number stored.
async fn put_lines(opened: &Opened, batch: usize) -> CliResult<u64> {
    let stdin = std::io::stdin().lock();
    let mut pending: Vec<Record> = Vec::with_capacity(batch);
    let mut stored = 0u64;
    let mut first_line = 1;
    let mut last_line = 0;
    for (i, line) in stdin.lines().enumerate() {
        let number = i + 1;
        let line = line.map_err(|e| format!("reading line {number} of stdin: {e}"))?;
        if line.trim().is_empty() {
            continue;
        }
        let record = Record::from_json_str(&line).map_err(|e| {
            format!(
                "line {number}: {e}; {stored} records stored before it, lines {first_line}..={number} not stored"
            )
        })?;
        pending.push(record);
        last_line = number;
        if pending.len() == batch {
            let n = pending.len() as u64;
            opened
                .put_batch(std::mem::take(&mut pending))
                .await
                .map_err(|e| {
                    format!("lines {first_line}..={number} not stored: {e}; {stored} records stored before them")
                })?;
            stored += n;
            first_line = number + 1;
        }
    }
    if !pending.is_empty() {
        let n = pending.len() as u64;
        opened.put_batch(pending).await.map_err(|e| {
            format!("lines {first_line}..={last_line} not stored: {e}; {stored} records stored before them")
        })?;
        stored += n;
    }
    Ok(stored)
}

async fn get(target: BackendArgs, offset: u64, limit: Option<usize>, metrics: bool) -> CliResult {
    let opened = target.open_for_read(metrics).await?;
    let records = opened.get(offset, limit).await?;
    print_records(&records)
}

/// `get --group`: each bucket from the group's committed offset, up to `limit`
/// records in all; each bucket's offset committed once its records are printed.
async fn get_in_group(
    target: BackendArgs,
    group: &str,
    limit: Option<usize>,
    metrics: bool,
) -> CliResult {
    persisting::validate_group(group).map_err(|e| e.to_string())?;
    let opened = target.open_for_read(metrics).await?;
    let groups = opened.groups(&target).await?;
    let mut left = limit.unwrap_or(usize::MAX);
    for (index, g) in groups.iter().enumerate() {
        if left == 0 {
            break;
        }
        let seen = g.committed(group).await.map_err(|e| e.to_string())?;
        let from = seen.as_ref().map_or(0, |c| c.offset);
        let records = opened.get_bucket(index, from, left).await?;
        print_records(&records)?;
        std::io::stdout().flush().map_err(|e| e.to_string())?;
        left -= records.len();
        if !records.is_empty() {
            g.commit_from(group, seen.as_ref(), from + records.len() as u64)
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// `groups`: the table (or JSON) of every group of every bucket PATH names, or one
/// change of a group in each of them.
async fn groups(target: BackendArgs, json: bool, action: Option<GroupAction>) -> CliResult {
    let buckets = target.standalone_groups().await?;
    let failed = |e: persisting::StorageError| e.to_string();
    if let Some(action) = action {
        for (bucket, g) in &buckets {
            match &action {
                GroupAction::Seek { group, offset } => {
                    g.seek(group, *offset).await.map_err(failed)?;
                    eprintln!("bucket {bucket}: group {group} at {offset}");
                }
                GroupAction::Commit { group, offset } => {
                    g.commit(group, *offset).await.map_err(failed)?;
                    eprintln!("bucket {bucket}: group {group} committed {offset}");
                }
                GroupAction::Delete { group } => {
                    let had = g.delete(group).await.map_err(failed)?;
                    eprintln!(
                        "bucket {bucket}: group {group} {}",
                        if had {
                            "deleted"
                        } else {
                            "had no committed offset"
                        }
                    );
                }
            }
        }
        return Ok(());
    }
    let mut rows = Vec::new();
    for (bucket, g) in &buckets {
        for lag in g.list().await.map_err(failed)? {
            rows.push((*bucket, lag));
        }
    }
    if json {
        let all: Vec<_> = rows
            .iter()
            .map(|(bucket, l)| {
                serde_json::json!({"bucket": bucket, "group": l.group, "committed": l.committed, "end": l.end, "lag": l.lag})
            })
            .collect();
        emit(serde_json::Value::Array(all));
        return Ok(());
    }
    emit(format!(
        "{:>6}  {:<24} {:>12} {:>12} {:>12}",
        "bucket", "group", "committed", "end", "lag"
    ));
    for (bucket, l) in &rows {
        emit(format!(
            "{bucket:>6}  {:<24} {:>12} {:>12} {:>12}",
            l.group, l.committed, l.end, l.lag
        ));
    }
    if rows.is_empty() {
        eprintln!("no consumer groups");
    }
    Ok(())
}

async fn tail(target: BackendArgs, offset: Option<u64>, follow: bool, metrics: bool) -> CliResult {
    if follow {
        // never hold the writer's lock while waiting: follow the committed data
        return follow_committed(&target, offset).await;
    }
    let opened = target.open_for_read(metrics).await?;
    let from = |count: u64| offset.unwrap_or_else(|| count.saturating_sub(10));
    match opened {
        Opened::Bucket(b) => {
            let records = b
                .get(from(b.total_count()), None)
                .await
                .map_err(|e| e.to_string())?;
            print_records(&records)
        }
        Opened::ReadOnly(buckets) => {
            for r in &buckets {
                let records = r
                    .read(from(r.total_count()), usize::MAX)
                    .await
                    .map_err(|e| e.to_string())?;
                print_records(&records)?;
            }
            Ok(())
        }
        Opened::Topic(writer) => {
            for b in writer.buckets() {
                let records = b
                    .get(from(b.total_count()), None)
                    .await
                    .map_err(|e| e.to_string())?;
                print_records(&records)?;
            }
            Ok(())
        }
    }
}

/// `tail --follow`: polls the committed Lance data of the bucket (or of every bucket
/// of the topic) and prints new records as writers flush them.
async fn follow_committed(target: &BackendArgs, offset: Option<u64>) -> CliResult {
    let mut readers = Vec::new();
    let opts = target.lance_options()?;
    for dir in target.bucket_dirs().await? {
        let r = open::read_only(&dir, &opts).await?;
        let at = offset.unwrap_or_else(|| r.total_count().saturating_sub(10));
        readers.push((r, at));
    }
    loop {
        let mut idle = true;
        for (r, at) in readers.iter_mut() {
            let got = r.read(*at, 1000).await.map_err(|e| e.to_string())?;
            *at += got.len() as u64;
            idle &= got.is_empty();
            print_records(&got)?;
        }
        if idle {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return Ok(()),
                _ = tokio::time::sleep(std::time::Duration::from_millis(200)) => {}
            }
            for (r, _) in readers.iter_mut() {
                r.refresh().await.map_err(|e| e.to_string())?;
            }
        }
    }
}

async fn stats(target: BackendArgs, json: bool, metrics: bool) -> CliResult {
    let opened = target.open_for_read(metrics).await?;
    let all = opened.stats().await?;
    if json {
        let text = if all.len() == 1 {
            serde_json::to_string_pretty(&all[0])
        } else {
            serde_json::to_string_pretty(&all)
        }
        .map_err(|e| e.to_string())?;
        crate::emit(text);
        return Ok(());
    }
    let one_bucket = target.topic.is_none() && all.len() == 1;
    for s in all {
        let value = serde_json::to_value(&s).map_err(|e| e.to_string())?;
        if let Some(map) = value.as_object() {
            let width = map.keys().map(String::len).max().unwrap_or(0);
            for (k, v) in map {
                let shown = match v {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Null => "-".to_owned(),
                    other => other.to_string(),
                };
                crate::emit(format!("{k:<width$}  {shown}"));
            }
            if one_bucket {
                // the bucket's snapshots, read without its writer (none before a flush)
                let names: Vec<String> = lifetime::snapshots(&target)
                    .await
                    .unwrap_or_default()
                    .iter()
                    .map(|s| format!("{} ({}..{})", s.name, s.log_start, s.end_offset))
                    .collect();
                let shown = match names.is_empty() {
                    true => "-".to_owned(),
                    false => names.join(", "),
                };
                crate::emit(format!("{:<width$}  {shown}", "snapshots"));
            }
            crate::emit("");
        }
    }
    Ok(())
}

async fn serve_metrics(args: ServeArgs, already_serving: bool) -> CliResult {
    if already_serving {
        return Err("serve-metrics starts its own endpoint: use --addr, not --metrics-addr".into());
    }
    let endpoint = persisting::serve_metrics(args.addr).map_err(|e| e.to_string())?;
    eprintln!(
        "metrics: http://{}/metrics (writing {} records/s; Ctrl-C stops)",
        endpoint.addr(),
        args.rate
    );
    demo::steady_workload(args.dir, args.rate.max(1), args.duration).await
}
