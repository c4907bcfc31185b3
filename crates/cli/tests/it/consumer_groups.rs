//! `get --group` and `groups`: consumer group offsets from the shell, across
//! processes: readers beside a writer, two committers at once, commits killed.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::{live, p, persisting, text};

fn put_lines(target: &[&str], from: usize, to: usize) {
    let lines: String = (from..to)
        .map(|i| format!("{{\"id\": \"{i}\", \"n\": {i}}}\n"))
        .collect();
    let mut args = vec!["put"];
    args.extend_from_slice(target);
    let out = persisting(&args, &lines);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

fn numbers(stdout: &[u8]) -> Vec<i64> {
    text(stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["n"]
                .as_i64()
                .unwrap()
        })
        .collect()
}

fn groups_json(target: &[&str]) -> Vec<serde_json::Value> {
    let mut args = vec!["groups"];
    args.extend_from_slice(target);
    args.push("--json");
    let out = persisting(&args, "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).unwrap()
}

#[test]
fn get_in_a_group_twice_prints_each_record_once_and_groups_shows_the_lag() {
    let dir = tempfile::tempdir().unwrap();
    let b = dir.path().join("b");
    put_lines(&[p(&b), "-o", "enable_wal=true"], 0, 30);
    let first = persisting(&["get", p(&b), "--group", "etl", "--limit", "20"], "");
    assert!(first.status.success(), "{}", text(&first.stderr));
    assert_eq!(numbers(&first.stdout), (0..20).collect::<Vec<_>>());
    let rows = groups_json(&[p(&b)]);
    assert_eq!(rows[0]["committed"], 20);
    assert_eq!(rows[0]["lag"], 10);
    let second = persisting(&["get", p(&b), "--group", "etl"], "");
    assert_eq!(numbers(&second.stdout), (20..30).collect::<Vec<_>>());
    let third = persisting(&["get", p(&b), "--group", "etl"], "");
    assert!(third.stdout.is_empty());
    let rows = groups_json(&[p(&b)]);
    assert_eq!(
        (rows[0]["group"].as_str(), rows[0]["lag"].as_u64()),
        (Some("etl"), Some(0))
    );
    // the table
    let table = persisting(&["groups", p(&b)], "");
    let t = text(&table.stdout);
    assert!(
        t.contains("bucket") && t.contains("lag") && t.contains("etl"),
        "{t}"
    );
    // seek back, read again; delete
    let seek = persisting(&["groups", p(&b), "seek", "etl", "25"], "");
    assert!(seek.status.success(), "{}", text(&seek.stderr));
    let again = persisting(&["get", p(&b), "--group", "etl"], "");
    assert_eq!(numbers(&again.stdout), (25..30).collect::<Vec<_>>());
    let past = persisting(&["groups", p(&b), "seek", "etl", "31"], "");
    assert!(!past.status.success());
    assert!(
        text(&past.stderr).contains("its end is 30"),
        "{}",
        text(&past.stderr)
    );
    let bad = persisting(&["get", p(&b), "--group", "../x"], "");
    assert!(!bad.status.success());
    assert!(text(&bad.stderr).contains("invalid consumer group name"));
    let del = persisting(&["groups", p(&b), "delete", "etl"], "");
    assert!(del.status.success());
    assert!(groups_json(&[p(&b)]).is_empty());
}

#[test]
fn a_topic_is_read_in_a_group_bucket_by_bucket() {
    let dir = tempfile::tempdir().unwrap();
    let root = p(dir.path());
    put_lines(&[root, "--topic", "events"], 0, 100);
    let mut seen = Vec::new();
    for _ in 0..4 {
        let out = persisting(
            &[
                "get", root, "--topic", "events", "--group", "g", "--limit", "30",
            ],
            "",
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        seen.extend(numbers(&out.stdout));
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..100).collect::<Vec<_>>());
    let rows = groups_json(&[root, "--topic", "events"]);
    assert_eq!(rows.len(), 4);
    assert!(rows.iter().all(|r| r["lag"] == 0), "{rows:?}");
}

/// A reader process commits while a writer process writes (it holds the bucket's
/// lock): it reads the writer's flushed records, and every record is read once.
#[test]
fn a_reader_process_commits_while_a_writer_process_writes() {
    let dir = tempfile::tempdir().unwrap();
    let b = dir.path().join("b");
    put_lines(&[p(&b)], 0, 1); // the bucket exists before the reader looks
    let mut writer = live(&["put", p(&b), "--batch", "10", "-o", "flush_threshold=10"]);
    let mut stdin = writer.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        for i in 1..200 {
            writeln!(stdin, "{{\"id\": \"{i}\", \"n\": {i}}}").unwrap();
            if i % 10 == 0 {
                stdin.flush().unwrap();
                std::thread::sleep(Duration::from_millis(150));
            }
        }
    });
    // the writer holds the bucket (its LOCK) before the first read
    let lock = b.join("LOCK");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let file = std::fs::OpenOptions::new().write(true).open(&lock).unwrap();
        match file.try_lock() {
            Err(std::fs::TryLockError::WouldBlock) => break,
            _ => drop(file),
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the writer never took the bucket"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut seen = Vec::new();
    let mut reads_beside_the_writer = 0;
    for _ in 0..4 {
        let out = persisting(&["get", p(&b), "--group", "g"], "");
        assert!(out.status.success(), "{}", text(&out.stderr));
        if text(&out.stderr).contains("open for writing elsewhere") {
            reads_beside_the_writer += 1;
        }
        seen.extend(numbers(&out.stdout));
        std::thread::sleep(Duration::from_millis(50));
    }
    feeder.join().unwrap();
    let status = writer.wait_with_output().unwrap();
    assert!(status.status.success(), "{}", text(&status.stderr));
    let rest = persisting(&["get", p(&b), "--group", "g"], "");
    seen.extend(numbers(&rest.stdout));
    assert!(
        reads_beside_the_writer > 0,
        "no read ran while the writer held the bucket"
    );
    assert_eq!(seen, (0..200).collect::<Vec<_>>());
}

/// Two processes commit one group at once: each commit lands (and is counted in the
/// group's file) or is refused as going back; none is lost silently.
#[test]
fn two_processes_committing_one_group_lose_no_commit() {
    let dir = tempfile::tempdir().unwrap();
    let b = dir.path().join("b");
    put_lines(&[p(&b)], 0, 100);
    let run = |offsets: Vec<u64>| {
        let b = b.clone();
        std::thread::spawn(move || {
            let mut landed = Vec::new();
            for o in offsets {
                let out = persisting(&["groups", p(&b), "commit", "g", &o.to_string()], "");
                if out.status.success() {
                    landed.push(o);
                } else {
                    let e = text(&out.stderr);
                    assert!(e.contains("never moves it back"), "{e}");
                }
            }
            landed
        })
    };
    let a = run((1..=40).map(|i| i * 2).collect());
    let c = run((1..=40).map(|i| i * 2 + 1).collect());
    let (a, c) = (a.join().unwrap(), c.join().unwrap());
    let landed = a.len() + c.len();
    let max = a.iter().chain(&c).max().copied().unwrap();
    let rows = groups_json(&[p(&b)]);
    assert_eq!(rows[0]["committed"].as_u64(), Some(max));
    // one record per landed commit in the group's file (40 bytes each, then zeros):
    // none overwritten or lost
    let bytes = std::fs::read(b.join("groups").join("g.offsets")).unwrap();
    let records = bytes
        .chunks(40)
        .take_while(|r| r.iter().any(|b| *b != 0))
        .count();
    assert_eq!(records, landed);
}

/// Commit processes killed with SIGKILL at moments spread over a commit's run: after
/// each, the group holds the last acknowledged commit or the one in flight, never less.
#[test]
fn a_commit_killed_keeps_the_last_acknowledged_one() {
    let dir = tempfile::tempdir().unwrap();
    let b = dir.path().join("b");
    put_lines(&[p(&b)], 0, 100);
    let commit = |i: u64| {
        Command::new(env!("CARGO_BIN_EXE_persisting"))
            .args(["groups", p(&b), "commit", "g", &i.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    // one commit run whole: how long a commit process takes on this machine now
    let started = std::time::Instant::now();
    assert!(commit(1).wait().unwrap().success());
    let whole = started.elapsed();
    let mut acked = 1u64;
    let (mut killed, mut finished) = (0, 0);
    for i in 2..=25u64 {
        let mut child = commit(i);
        // from the start of the process to past its end
        std::thread::sleep(whole * ((i * 7) % 12) as u32 / 8);
        let _ = child.kill(); // SIGKILL, unless it has exited
        if child.wait().unwrap().success() {
            acked = i;
            finished += 1;
        } else {
            killed += 1;
        }
        let rows = groups_json(&[p(&b)]);
        let now = rows.first().map_or(0, |r| r["committed"].as_u64().unwrap());
        assert!(
            now >= acked && now <= i,
            "after commit {i}: at {now}, acknowledged {acked}"
        );
    }
    assert!(
        killed > 0,
        "every commit finished before its kill: nothing was tested"
    );
    eprintln!("{killed} commits killed, {finished} finished");
}

#[test]
fn on_s3_get_in_a_group_resumes_across_processes() {
    let Some(uri) = crate::s3_bucket_uri("cli-groups") else {
        return;
    };
    let wal = tempfile::tempdir().unwrap();
    let wal_opt = format!("wal_dir={}", p(wal.path()));
    put_lines(&[&uri, "-o", "enable_wal=true", "-o", &wal_opt], 0, 20);
    let first = persisting(
        &["get", &uri, "-o", &wal_opt, "--group", "g", "--limit", "12"],
        "",
    );
    assert!(first.status.success(), "{}", text(&first.stderr));
    assert_eq!(numbers(&first.stdout), (0..12).collect::<Vec<_>>());
    let second = persisting(&["get", &uri, "-o", &wal_opt, "--group", "g"], "");
    assert_eq!(numbers(&second.stdout), (12..20).collect::<Vec<_>>());
    let rows = groups_json(&[&uri, "-o", &wal_opt]);
    assert_eq!(
        (rows[0]["committed"].as_u64(), rows[0]["lag"].as_u64()),
        (Some(20), Some(0))
    );
}
