//! trim, snapshot create/list/delete, get --snapshot and stats: a bucket's data
//! lifetime from the command line.

use crate::{p, persisting, text};

fn lines(from: u32, n: u32) -> String {
    (from..from + n)
        .map(|i| format!("{{\"id\": {i}}}\n"))
        .collect()
}

#[test]
fn trim_snapshot_and_get_snapshot_keep_offsets_and_name_the_log_start() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path().join("b");
    // each put closes (flushes) the bucket: one fragment per put
    for k in 0..3 {
        let out = persisting(
            &["put", p(&bucket), "-o", "enable_wal=true"],
            &lines(k * 100, 100),
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let out = persisting(&["snapshot", "create", p(&bucket), "day-1"], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("offsets 0..300"),
        "{}",
        text(&out.stdout)
    );

    let out = persisting(&["trim", p(&bucket), "--before", "150"], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("log start 100"),
        "{}",
        text(&out.stderr)
    );

    let out = persisting(&["get", p(&bucket), "--offset", "0", "--limit", "1"], "");
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("read from offset 100"),
        "{}",
        text(&out.stderr)
    );
    let out = persisting(&["get", p(&bucket), "--offset", "100", "--limit", "1"], "");
    assert_eq!(text(&out.stdout), "{\"id\":100}\n");
    let out = persisting(
        &["get", p(&bucket), "--snapshot", "day-1", "--limit", "1"],
        "",
    );
    assert_eq!(text(&out.stdout), "{\"id\":0}\n", "{}", text(&out.stderr));

    let out = persisting(&["stats", p(&bucket)], "");
    let shown = text(&out.stdout);
    assert!(shown.contains("log_start_offset    100"), "{shown}");
    assert!(shown.contains("day-1 (0..300)"), "{shown}");

    let out = persisting(&["snapshot", "list", p(&bucket), "--json"], "");
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed[0]["name"], "day-1");
    assert_eq!(listed[0]["end_offset"], 300);

    let out = persisting(&["snapshot", "delete", p(&bucket), "day-1"], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = persisting(&["get", p(&bucket), "--snapshot", "day-1"], "");
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no snapshot named \"day-1\""),
        "{}",
        text(&out.stderr)
    );
    let out = persisting(&["trim", p(&bucket), "--before", "9999"], "");
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("9999"), "{}", text(&out.stderr));
}
