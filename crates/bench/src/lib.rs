//! Shared pieces of the whole-stack benchmark (`benches/stack.rs`): the row format
//! `cargo xtask bench` gathers, and the realistic record's text.

/// Prints one row for `cargo xtask bench`:
/// `BENCH-ROW|group|measurement|ours|baseline|unit|ratio|floor`.
pub fn row_bench(
    group: &str,
    measurement: &str,
    ours: f64,
    baseline: f64,
    unit: &str,
    ratio: f64,
    floor: &str,
) {
    let clean = |s: &str| s.replace('|', "/");
    println!(
        "BENCH-ROW|{}|{}|{ours}|{baseline}|{}|{ratio}|{floor}",
        clean(group),
        clean(measurement),
        clean(unit)
    );
}

/// The 100-byte text of record `i` (the same text the pylance baseline writes).
pub fn text_of(i: u64) -> String {
    let unit = format!("record {i} ");
    let mut s = unit.repeat(100 / unit.len() + 1);
    s.truncate(100);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_100_bytes_like_the_python_side() {
        assert_eq!(text_of(7).len(), 100);
        assert!(text_of(12).starts_with("record 12 record 12 "));
    }
}
