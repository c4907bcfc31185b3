//! put, get, tail, stats, wal inspect/verify, compact, verify, demo: what they print and how
//! they fail.

use crate::{p, persisting, text};

#[test]
fn put_then_get_round_trips_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path().join("b");
    let lines = "{\"id\": \"a\", \"n\": 1}\n\n{\"id\": \"b\", \"n\": 2, \"tags\": [\"x\"]}\n";
    let out = persisting(&["put", p(&bucket), "-o", "enable_wal=true"], lines);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("stored 2 records"));

    let out = persisting(&["get", p(&bucket), "--offset", "1", "--limit", "5"], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "{\"id\":\"b\",\"n\":2,\"tags\":[\"x\"]}\n"
    );

    let out = persisting(&["tail", p(&bucket)], "");
    assert_eq!(text(&out.stdout).lines().count(), 2);

    let out = persisting(&["stats", p(&bucket), "--json"], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stats["total_count"], 2);
    assert_eq!(stats["wal_enabled"], true);
}

#[test]
fn a_bad_line_is_named_and_its_batch_is_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path().join("b");
    let lines = "{\"id\": \"a\"}\n{\"id\": \"b\"}\n{\"id\": \"c\"}\n{\"id\": \n{\"id\": \"e\"}\n";
    let out = persisting(&["put", p(&bucket), "--batch", "2"], lines);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("line 4"), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    // the first batch (lines 1-2) was stored and flushed, line 3 was not
    let out = persisting(&["get", p(&bucket)], "");
    assert_eq!(
        text(&out.stdout).lines().count(),
        2,
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_schema_conflict_fails_with_one_line_and_stores_nothing_of_its_batch() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path().join("b");
    let out = persisting(&["put", p(&bucket)], "{\"n\": 1}\n{\"n\": \"one\"}\n");
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains('n'), "{}", text(&out.stderr));
    assert!(
        !bucket.join("data.lance").exists() || {
            let out = persisting(&["get", p(&bucket)], "");
            text(&out.stdout).is_empty()
        }
    );
}

#[test]
fn wal_verify_names_the_file_and_offset_of_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path().join("b");
    let lines: String = (0..50)
        .map(|i| format!("{{\"id\": \"{i}\", \"pad\": \"{}\"}}\n", "x".repeat(50)))
        .collect();
    // flush_threshold above the count: everything stays in the WAL
    let out = persisting(
        &[
            "put",
            p(&bucket),
            "-o",
            "enable_wal=true",
            "-o",
            "flush_threshold=1000",
            "--batch",
            "1",
        ],
        &lines,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let wal_dir = bucket.join("wal");
    let out = persisting(&["wal", "verify", p(&bucket)], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = persisting(&["wal", "inspect", p(&bucket)], "");
    assert!(
        text(&out.stdout).contains("segments"),
        "{}",
        text(&out.stdout)
    );

    let segment = std::fs::read_dir(&wal_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "wal"))
        .unwrap();
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[0] ^= 0xff; // the segment header's magic
    std::fs::write(&segment, &bytes).unwrap();
    let out = persisting(&["wal", "verify", p(&bucket)], "");
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains(segment.file_name().unwrap().to_str().unwrap()),
        "{err}"
    );
    assert!(err.contains("byte"), "{err}");
}

#[test]
fn verify_checks_the_data_files_and_names_a_damaged_one() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path().join("b");
    let lines: String = (0..200)
        .map(|i| format!("{{\"id\": \"r{i}\", \"n\": {i}}}\n"))
        .collect();
    let out = persisting(&["put", p(&bucket)], &lines);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = persisting(&["verify", p(&bucket)], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("1 sealed and intact"),
        "{}",
        text(&out.stdout)
    );

    let data = bucket.join("data.lance/data");
    let file = std::fs::read_dir(&data)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[10] ^= 0xff;
    std::fs::write(&file, &bytes).unwrap();
    let out = persisting(&["verify", p(&bucket)], "");
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains(file.file_name().unwrap().to_str().unwrap()),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn errors_are_one_line_and_every_command_has_an_example() {
    let out = persisting(&["get", "/nonexistent/bucket"], "");
    assert!(!out.status.success());
    assert_eq!(
        text(&out.stderr).lines().count(),
        1,
        "{}",
        text(&out.stderr)
    );
    assert!(text(&out.stderr).contains("no bucket at"));

    let out = persisting(&["put", "/tmp/x", "-o", "compression=gzip"], "");
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("compression"));

    for cmd in [
        "demo",
        "put",
        "get",
        "tail",
        "stats",
        "compact",
        "verify",
        "serve-metrics",
    ] {
        let out = persisting(&[cmd, "--help"], "");
        assert!(text(&out.stdout).contains("Example"), "{cmd} --help");
    }
    for cmd in ["inspect", "verify"] {
        let out = persisting(&["wal", cmd, "--help"], "");
        assert!(text(&out.stdout).contains("Example"), "wal {cmd} --help");
    }
}

#[test]
fn the_demo_writes_reads_back_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let out = persisting(&["demo", "--dir", p(dir.path()), "--records", "3000"], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(
        table.contains("3000 written, 3000 read back, all verified"),
        "{table}"
    );
    assert!(table.contains("records/s"), "{table}");
    assert!(dir.path().join("events/bucket_0/data.lance").exists());
    // compact works on one of its buckets and keeps every record
    let bucket = dir.path().join("events/bucket_0");
    let before = text(&persisting(&["get", p(&bucket)], "").stdout);
    let out = persisting(&["compact", p(&bucket)], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&persisting(&["get", p(&bucket)], "").stdout), before);
}

#[test]
fn a_bucket_at_an_object_store_uri_round_trips_with_its_wal_on_local_disk() {
    let dir = tempfile::tempdir().unwrap();
    // Lance's object-store code path over local files: what a bucket on S3 runs
    let uri = format!("file-object-store://{}/bucket_0", p(dir.path()));
    let wal_dir = dir.path().join("local");
    let wal_opt = format!("wal_dir={}", p(&wal_dir));
    let missing = persisting(&["put", &uri], "{\"id\": \"1\"}\n");
    assert!(!missing.status.success());
    assert!(
        text(&missing.stderr).contains("wal_dir"),
        "{}",
        text(&missing.stderr)
    );
    let lines = "{\"id\": \"1\", \"n\": 1}\n{\"id\": \"2\", \"n\": 2}\n";
    let put = persisting(
        &["put", &uri, "-o", "enable_wal=true", "-o", &wal_opt],
        lines,
    );
    assert!(put.status.success(), "{}", text(&put.stderr));
    assert!(wal_dir.join("wal").is_dir() && wal_dir.join("LOCK").is_file());
    let get = persisting(&["get", &uri, "-o", &wal_opt], "");
    assert!(get.status.success(), "{}", text(&get.stderr));
    let out = text(&get.stdout);
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(out.contains("\"n\": 2") || out.contains("\"n\":2"), "{out}");
}

#[test]
fn on_s3_a_writer_in_another_process_is_refused_naming_the_holder_and_reads_still_work() {
    use std::io::Write;
    // a real S3-compatible server, when one is configured (scripts/s3-server.sh; CI)
    let Some(uri) = crate::s3_bucket_uri("cli") else {
        return;
    };
    let (here, there) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (here_opt, there_opt) = (
        format!("wal_dir={}", p(here.path())),
        format!("wal_dir={}", p(there.path())),
    );
    let put = |wal: &str, lines: &str| {
        persisting(&["put", &uri, "-o", "enable_wal=true", "-o", wal], lines)
    };
    let count = |wal: &str| {
        let get = persisting(&["get", &uri, "-o", wal], "");
        assert!(get.status.success(), "{}", text(&get.stderr));
        text(&get.stdout).lines().count()
    };
    // a live writer, flushing each record as it comes
    let mut first = crate::live(&[
        "put",
        &uri,
        "--batch",
        "1",
        "-o",
        "enable_wal=true",
        "-o",
        &here_opt,
        "-o",
        "flush_threshold=1",
    ]);
    let mut stdin = first.stdin.take().unwrap();
    stdin.write_all(b"{\"n\": 1}\n{\"n\": 2}\n").unwrap();
    stdin.flush().unwrap();
    // it holds the lease once its records are in the dataset. Looked at through its
    // own wal_dir once it holds that (its WRITER file is written under its LOCK): a
    // `get` reads a bucket locked elsewhere from Lance without opening it, where a
    // `get` from anywhere else would open the bucket, taking the lease before it
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !here.path().join("WRITER").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the writer never opened"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    while count(&here_opt) < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the writer never flushed"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // another machine (its own wal_dir, so no file lock between them) is refused
    let second = put(&there_opt, "{\"n\": 3}\n");
    assert!(!second.status.success());
    let err = text(&second.stderr);
    assert!(
        err.contains("_lease") && err.contains("is written by"),
        "{err}"
    );
    // it still reads what the writer flushed
    assert_eq!(count(&there_opt), 2);
    // the writer ends cleanly, releasing its lease: the other machine takes the
    // bucket at once, well within the 30 s term
    drop(stdin);
    let ended = first.wait_with_output().unwrap();
    assert!(ended.status.success(), "{}", text(&ended.stderr));
    let second = put(&there_opt, "{\"n\": 3}\n");
    assert!(second.status.success(), "{}", text(&second.stderr));
    // and the first writer, restarted on its own wal_dir, takes the lease again
    let again = put(&here_opt, "{\"n\": 4}\n");
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert_eq!(count(&here_opt), 4);
}

#[test]
fn a_topic_at_an_object_store_uri_keeps_each_buckets_wal_under_wal_dir_by_topic() {
    let dir = tempfile::tempdir().unwrap();
    // Lance's object-store code path over local files: what a topic on S3 runs
    let root = format!("file-object-store://{}/queues", p(dir.path()));
    let (wal_root, elsewhere) = (dir.path().join("local"), dir.path().join("other"));
    let wal_opt = format!("wal_dir={}", p(&wal_root));
    let lines: String = (0..20)
        .map(|i| format!("{{\"id\": \"{i}\", \"v\": {i}}}\n"))
        .collect();
    let args = ["--topic", "events", "-o", "enable_wal=true", "-o", &wal_opt];
    let put = persisting(&[&["put", &root][..], &args[..]].concat(), &lines);
    assert!(put.status.success(), "{}", text(&put.stderr));
    // the WALs by topic and bucket, as the data: {wal_dir}/events/bucket_{id}/wal
    let wals: Vec<_> = std::fs::read_dir(wal_root.join("events"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(wals.len(), 4, "{wals:?}");
    assert!(wal_root.join("events/bucket_0/wal").is_dir());
    // the buckets are found on the object store, also from another local directory
    for wal in [&wal_root, &elsewhere] {
        let opt = format!("wal_dir={}", p(wal));
        let get = persisting(&["get", &root, "--topic", "events", "-o", &opt], "");
        assert!(get.status.success(), "{}", text(&get.stderr));
        assert_eq!(
            text(&get.stdout).lines().count(),
            20,
            "{}",
            text(&get.stdout)
        );
    }
    let none = persisting(&["get", &root, "--topic", "other", "-o", &wal_opt], "");
    assert!(!none.status.success());
    assert!(
        text(&none.stderr).contains("no topic"),
        "{}",
        text(&none.stderr)
    );
}
