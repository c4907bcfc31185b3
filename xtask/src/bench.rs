//! `cargo xtask bench`: runs every comparison benchmark in release in one command and
//! gathers their rows into one table of ratios.
//!
//! A benchmark reports a row by printing a line
//! `BENCH-ROW|group|measurement|ours|baseline|unit|ratio|floor`, where `floor` is
//! `>=X`, `<=X` or `-`. Both sides of every ratio are measured in the same process, on
//! the same disk, in this run.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use crate::{command, target_dir, workspace_root};

/// The benchmark targets run, in order (each a binary of the one release build,
/// `crate::release`, run as `cargo bench` would run it).
const BENCHES: [&str; 4] = ["codec", "compress", "compare", "stack"];

struct Row {
    group: String,
    measurement: String,
    ours: f64,
    baseline: f64,
    unit: String,
    ratio: f64,
    floor: String,
}

impl Row {
    fn parse(line: &str) -> Option<Row> {
        let f: Vec<&str> = line.strip_prefix("BENCH-ROW|")?.split('|').collect();
        if f.len() != 7 {
            return None;
        }
        Some(Row {
            group: f[0].to_owned(),
            measurement: f[1].to_owned(),
            ours: f[2].parse().ok()?,
            baseline: f[3].parse().ok()?,
            unit: f[4].to_owned(),
            ratio: f[5].parse().ok()?,
            floor: f[6].to_owned(),
        })
    }

    /// Whether the ratio meets its floor (None: no floor).
    fn met(&self) -> Option<bool> {
        if let Some(x) = self.floor.strip_prefix(">=") {
            return x.parse::<f64>().ok().map(|x| self.ratio >= x);
        }
        if let Some(x) = self.floor.strip_prefix("<=") {
            return x.parse::<f64>().ok().map(|x| self.ratio <= x);
        }
        None
    }
}

fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn first_line_with(path: &str, key: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()?
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
}

/// Cores, CPU, memory, and the file system the benchmarks wrote to.
fn machine() -> Vec<(String, String)> {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut m = vec![
        ("cores".to_owned(), cores.to_string()),
        (
            "cpu".to_owned(),
            first_line_with("/proc/cpuinfo", "model name").unwrap_or_else(|| "unknown".into()),
        ),
        (
            "memory".to_owned(),
            first_line_with("/proc/meminfo", "MemTotal").unwrap_or_else(|| "unknown".into()),
        ),
    ];
    m.push((
        "Lance's compute threads (LANCE_CPU_THREADS; unset: cores - 2, at least 1)".to_owned(),
        std::env::var("LANCE_CPU_THREADS").unwrap_or_else(|_| "unset".to_owned()),
    ));
    let tmp = std::env::temp_dir();
    let disk = Command::new("df")
        .args(["-T", "-h"])
        .arg(&tmp)
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .nth(1)
                .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        })
        .unwrap_or_else(|| "unknown".into());
    m.push((format!("disk ({})", tmp.display()), disk));
    m
}

fn markdown(rows: &[Row], machine: &[(String, String)], cmd: &str) -> String {
    let mut s = String::from("# Benchmarks\n\n");
    s.push_str(&format!(
        "Produced by `{cmd}`. Every ratio compares two measurements taken in the same \
         process on the same disk in that run; floors are the targets of the issue \
         that asked for the measurement.\n\n"
    ));
    for (k, v) in machine {
        s.push_str(&format!("- {k}: {v}\n"));
    }
    s.push_str("\n| group | measurement | persisting | baseline | unit | ratio | floor | met |\n");
    s.push_str("|---|---|---:|---:|---|---:|---:|---|\n");
    for r in rows {
        let met = match r.met() {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "",
        };
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {:.2}x | {} | {met} |\n",
            r.group,
            r.measurement,
            fmt_num(r.ours),
            fmt_num(r.baseline),
            r.unit,
            r.ratio,
            r.floor
        ));
    }
    s
}

fn fmt_num(x: f64) -> String {
    if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.4}")
    }
}

fn json(rows: &[Row], machine: &[(String, String)]) -> String {
    let mut s = String::from("{\n  \"machine\": {");
    let m: Vec<String> = machine
        .iter()
        .map(|(k, v)| format!("{}: {}", json_str(k), json_str(v)))
        .collect();
    s.push_str(&m.join(", "));
    s.push_str("},\n  \"rows\": [\n");
    let r: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "    {{\"group\": {}, \"measurement\": {}, \"persisting\": {}, \"baseline\": {}, \"unit\": {}, \"ratio\": {}, \"floor\": {}, \"met\": {}}}",
                json_str(&r.group),
                json_str(&r.measurement),
                r.ours,
                r.baseline,
                json_str(&r.unit),
                r.ratio,
                json_str(&r.floor),
                r.met().map_or("null".to_owned(), |b| b.to_string())
            )
        })
        .collect();
    s.push_str(&r.join(",\n"));
    s.push_str("\n  ]\n}\n");
    s
}

/// The Python package's comparisons (`crates/python/benches/compare.py`) against the
/// wheel of the release build, installed into the venv. Returns their rows.
fn python_rows(release: &crate::release::Release) -> Result<Vec<Row>, String> {
    crate::release::wheel(release)?;
    let python = crate::venv()
        .join("bin/python")
        .to_string_lossy()
        .into_owned();
    let mut cmd = command(&python);
    cmd.arg(workspace_root().join("crates/python/benches/compare.py"))
        .env_remove("PYTHONPATH");
    rows_of(cmd, "crates/python/benches/compare.py")
}

/// Runs a benchmark command, echoing its output and collecting its rows.
fn rows_of(mut cmd: Command, name: &str) -> Result<Vec<Row>, String> {
    let mut rows = Vec::new();
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("could not start {name}: {e}"))?;
    let stdout = child.stdout.take().ok_or("the benchmark has no stdout")?;
    for line in BufReader::new(stdout).lines() {
        let line = line.map_err(|e| e.to_string())?;
        match Row::parse(&line) {
            Some(r) => rows.push(r),
            None => println!("{line}"),
        }
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("{name} failed with {status}"));
    }
    Ok(rows)
}

pub fn run(args: &[String]) -> Result<(), String> {
    let mut rows_env = None;
    let mut python_only = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--python-only" => python_only = true,
            "--rows" => {
                let n = it.next().ok_or("--rows needs a number")?;
                n.parse::<u64>()
                    .map_err(|_| format!("--rows takes a whole number, not {n:?}"))?;
                rows_env = Some(n.clone());
            }
            other => return Err(format!("unknown bench argument {other:?}")),
        }
    }
    // the s3 rows (the stack benchmark's and the Python drain's) run against a
    // local S3 server
    let _server = crate::s3::start()?;
    let release = crate::release::build()?;
    let mut rows = Vec::new();
    for name in BENCHES {
        if python_only {
            break;
        }
        let (_, dir, exe) = release
            .benches
            .iter()
            .find(|(n, _, _)| n == name)
            .ok_or_else(|| format!("the release build made no benchmark {name}"))?;
        // as `cargo bench` runs it: in its package's directory, with `--bench`
        eprintln!("xtask: running {} --bench", exe.display());
        let mut cmd = command(&exe.to_string_lossy());
        cmd.current_dir(dir).arg("--bench");
        if let Some(n) = &rows_env {
            cmd.env("PERSISTING_BENCH_ROWS", n);
        }
        rows.extend(rows_of(cmd, &format!("benchmark {name}"))?);
    }
    rows.extend(python_rows(&release)?);
    let machine = machine();
    let shown = match (&rows_env, python_only) {
        (_, true) => "cargo xtask bench --python-only".to_owned(),
        (Some(n), false) => format!("cargo xtask bench --rows {n}"),
        (None, false) => "cargo xtask bench".to_owned(),
    };
    let md = markdown(&rows, &machine, &shown);
    println!("\n{md}");
    let docs = workspace_root().join("docs");
    // the Python rows alone go beside the full table, not over it
    let name = if python_only {
        "benchmarks-python"
    } else {
        "benchmarks"
    };
    let path = docs.join(format!("{name}.md"));
    write(&path, &with_notes_kept(&md, &path))?;
    write(&docs.join(format!("{name}.json")), &json(&rows, &machine))?;
    eprintln!(
        "xtask: wrote docs/{name}.md and docs/{name}.json (release build in {})",
        target_dir().display()
    );
    let missed = rows.iter().filter(|r| r.met() == Some(false)).count();
    if missed > 0 {
        eprintln!("xtask: {missed} ratios below their floor (marked **no**)");
    }
    Ok(())
}

/// `generated` followed by the hand-written sections of the file at `path` (from
/// its first `## ` heading on: the generated part has none), so a new run replaces
/// the table and keeps the notes explaining earlier figures.
fn with_notes_kept(generated: &str, path: &Path) -> String {
    let old = std::fs::read_to_string(path).unwrap_or_default();
    match old.find("\n## ") {
        Some(at) => format!("{generated}{}", &old[at..]),
        None => generated.to_owned(),
    }
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_table_keeps_the_hand_written_sections() {
        let dir = std::env::temp_dir().join(format!("xtask-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("b.md");
        std::fs::write(&path, "# Benchmarks\n\n| old |\n\n## Notes\n\nwhy\n").unwrap();
        let text = with_notes_kept("# Benchmarks\n\n| new |\n", &path);
        assert_eq!(text, "# Benchmarks\n\n| new |\n\n## Notes\n\nwhy\n");
        assert_eq!(with_notes_kept("x\n", &dir.join("absent.md")), "x\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
