//! Golden files of each released format version: they must always decode to the same
//! records, and encoding those records must give the same bytes. Never regenerate them.

use persisting_codec::{
    Record, Value, decode_batch, decode_record, encode_batch, encode_record, record,
};

fn golden(name: &str) -> Vec<u8> {
    // at run time: a test binary of the shared target directory may have been built
    // in another checkout
    let manifest = std::env::var("CARGO_MANIFEST_DIR")
        .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned());
    let path = format!("{manifest}/testdata/{name}");
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading golden file {path}: {e}"))
}

/// The record stored in `testdata/record-v1.bin`.
pub fn golden_record() -> Record {
    record! {
        "id" => "evt-000001",
        "user" => "ユーザー",
        "count" => -42,
        "big" => i64::MAX,
        "score" => 0.1,
        "nan" => f64::from_bits(0x7ff8_0000_0000_00ff),
        "neg_zero" => -0.0,
        "inf" => f64::INFINITY,
        "ok" => true,
        "none" => Value::Null,
        "raw" => vec![0u8, 1, 254, 255],
        "vec" => vec![0.5f64, -1.25, 3.0],
        "ints" => vec![1i64, -1, 300],
        "mixed" => Value::List(vec![Value::Int(1), Value::String("a".into()), Value::Null]),
        "empty" => Value::List(vec![]),
        "nested" => record! {"k" => record! {"deep" => "yes"}, "" => false},
    }
}

#[test]
fn record_v1_golden_decodes_and_re_encodes_identically() {
    let bytes = golden("record-v1.bin");
    assert_eq!(decode_record(&bytes).unwrap(), golden_record());
    assert_eq!(encode_record(&golden_record()), bytes);
}

#[test]
fn batch_v1_golden_decodes_and_re_encodes_identically() {
    let expected = vec![golden_record(), Record::new(), record! {"id" => "2"}];
    let bytes = golden("batch-v1.bin");
    assert_eq!(decode_batch(&bytes).unwrap(), expected);
    assert_eq!(encode_batch(&expected), bytes);
}
