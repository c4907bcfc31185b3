//! `decode(encode(x)) == x` for records, batches and JSON.

use persisting_codec::{
    Limits, Record, Value, decode_batch, decode_record, decode_record_with, encode_batch,
    encode_record, encoded_len, record,
};
use proptest::prelude::*;

use crate::strategies::record;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn record_round_trips(r in record()) {
        let bytes = encode_record(&r);
        prop_assert_eq!(decode_record(&bytes).unwrap(), r.clone());
        // deterministic: encoding again gives the same bytes
        prop_assert_eq!(encode_record(&r), bytes.clone());
        // the size bounds are measured in: exact without encoding
        prop_assert_eq!(encoded_len(&r), bytes.len());
    }

    #[test]
    fn batch_round_trips(batch in proptest::collection::vec(record(), 0..4)) {
        prop_assert_eq!(decode_batch(&encode_batch(&batch)).unwrap(), batch);
    }

    #[test]
    fn json_representable_records_round_trip_through_json(r in record()) {
        if let Ok(json) = r.to_json() {
            prop_assert_eq!(Record::from_json(&json).unwrap(), r);
        }
    }
}

fn nested(depth: u32) -> Record {
    // the record is depth 1; each map adds one level
    let mut v = Value::Null;
    for _ in 1..depth {
        v = Value::Map(record! {"x" => v});
    }
    record! {"x" => v}
}

#[test]
fn nesting_exactly_at_the_limit_round_trips_and_one_more_fails() {
    let limits = Limits::default();
    let at = nested(limits.nesting_depth_max);
    assert_eq!(decode_record(&encode_record(&at)).unwrap(), at);
    let over = nested(limits.nesting_depth_max + 1);
    let err = decode_record_with(&encode_record(&over), &limits).unwrap_err();
    assert!(err.to_string().contains("nesting_depth_max"), "{err}");
}

#[test]
fn empty_things_round_trip() {
    for r in [
        Record::new(),
        record! {"" => ""},
        record! {"l" => Value::List(vec![]), "m" => Record::new(), "b" => Vec::<u8>::new()},
    ] {
        assert_eq!(decode_record(&encode_record(&r)).unwrap(), r);
    }
    assert_eq!(
        decode_batch(&encode_batch(&[])).unwrap(),
        Vec::<Record>::new()
    );
}

#[test]
fn string_exactly_at_limit_and_one_over() {
    let limits = Limits {
        string_bytes_max: 16,
        ..Limits::default()
    };
    let ok = record! {"s" => "x".repeat(16)};
    assert_eq!(
        decode_record_with(&encode_record(&ok), &limits).unwrap(),
        ok
    );
    let over = record! {"s" => "x".repeat(17)};
    let err = decode_record_with(&encode_record(&over), &limits).unwrap_err();
    assert!(err.to_string().contains("string_bytes_max is 16"), "{err}");
}
