//! Proptest strategies for records, weighted toward edges.

use persisting_codec::{Record, Value};
use proptest::prelude::*;

/// Floats weighted toward NaN payloads, infinities, signed zeros and extremes.
pub fn float() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => any::<f64>(),
        1 => any::<u64>().prop_map(f64::from_bits),
        1 => Just(f64::NAN),
        1 => Just(f64::from_bits(0x7ff0_0000_0000_0001)),
        1 => Just(f64::INFINITY),
        1 => Just(f64::NEG_INFINITY),
        1 => Just(-0.0),
        1 => Just(f64::MIN_POSITIVE),
    ]
}

/// Integers weighted toward varint width boundaries and extremes.
pub fn int() -> impl Strategy<Value = i64> {
    prop_oneof![
        4 => any::<i64>(),
        1 => Just(0),
        1 => Just(i64::MIN),
        1 => Just(i64::MAX),
        1 => (0u32..64).prop_map(|b| (1i64 << (b % 63)) - 1),
        1 => (0u32..64).prop_map(|b| -(1i64 << (b % 63))),
    ]
}

/// Field names: empty, ASCII, unicode, with quotes and control characters.
pub fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => Just(String::new()),
        3 => "[a-z_][a-z0-9_]{0,12}",
        2 => "\\PC{0,8}",
        1 => Just("名前".to_owned()),
        1 => Just("a\"b\\c\n".to_owned()),
    ]
}

/// Scalar values.
pub fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        int().prop_map(Value::Int),
        float().prop_map(Value::Float),
        "\\PC{0,24}".prop_map(Value::from),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(Value::Bytes),
    ]
}

/// Any value, nested up to a few levels, including packed float and int lists.
pub fn value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::List),
            proptest::collection::vec(float(), 1..130)
                .prop_map(|v| Value::List(v.into_iter().map(Value::Float).collect())),
            proptest::collection::vec(int(), 1..20)
                .prop_map(|v| Value::List(v.into_iter().map(Value::Int).collect())),
            proptest::collection::vec((name(), inner), 0..6)
                .prop_map(|fields| { Value::Map(fields.into_iter().collect()) }),
        ]
    })
}

/// A record of up to 12 fields (duplicate generated names collapse, as on insert).
pub fn record() -> impl Strategy<Value = Record> {
    proptest::collection::vec((name(), value()), 0..12)
        .prop_map(|fields| fields.into_iter().collect())
}
