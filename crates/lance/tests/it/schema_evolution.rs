//! Schema evolution at put time: new fields, int-to-float widening, conflicts that
//! refuse a whole batch.

use persisting_codec::{Value, record};
use persisting_lance::Error;

use crate::{open, rt};

#[test]
fn a_new_field_becomes_a_column_and_older_rows_lack_it() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let mut b = open(dir.path()).await;
        b.put_batch(vec![record! {"id" => "1"}]).unwrap();
        b.flush().await.unwrap();
        b.put_batch(vec![
            record! {"id" => "2", "score" => 0.5, "tags" => vec!["a"]},
        ])
        .unwrap();
        b.flush().await.unwrap();
        drop(b);
        let b = open(dir.path()).await;
        assert_eq!(
            b.read(0, 10).await.unwrap(),
            vec![
                record! {"id" => "1"},
                record! {"id" => "2", "score" => 0.5, "tags" => vec!["a"]}
            ]
        );
    });
}

#[test]
fn an_int_column_that_receives_a_float_widens_in_place_and_keeps_field_order() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let mut b = open(dir.path()).await;
        b.put_batch(vec![
            record! {"v" => 1, "id" => "a"},
            record! {"v" => 2, "id" => "b"},
        ])
        .unwrap();
        b.flush().await.unwrap();
        b.put_batch(vec![record! {"v" => 2.5, "id" => "c"}])
            .unwrap();
        // the buffered int rows are unchanged until they reach Lance
        b.flush().await.unwrap();
        drop(b);
        let b = open(dir.path()).await;
        let got = b.read(0, 10).await.unwrap();
        assert_eq!(
            got,
            vec![
                record! {"v" => 1.0, "id" => "a"},
                record! {"v" => 2.0, "id" => "b"},
                record! {"v" => 2.5, "id" => "c"},
            ]
        );
        // an int into the float column is fine from now on
        let mut b = b;
        b.put_batch(vec![record! {"v" => 7, "id" => "d"}]).unwrap();
        b.flush().await.unwrap();
        assert_eq!(
            b.read(3, 1).await.unwrap(),
            vec![record! {"v" => 7.0, "id" => "d"}]
        );
    });
}

#[test]
fn a_conflict_refuses_the_whole_batch_and_names_the_field() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let mut b = open(dir.path()).await;
        b.put_batch(vec![record! {"id" => "1", "n" => 1}]).unwrap();
        b.flush().await.unwrap();
        let err = b
            .put_batch(vec![
                record! {"id" => "2", "fresh" => true},
                record! {"id" => 3},
            ])
            .unwrap_err();
        match &err {
            Error::SchemaConflict {
                field,
                existing,
                found,
            } => {
                assert_eq!(
                    (field.as_str(), existing.as_str(), found.as_str()),
                    ("id", "utf8", "int64")
                );
            }
            other => panic!("{other}"),
        }
        assert!(err.to_string().contains("\"id\""), "{err}");
        assert_eq!(b.total_count(), 1, "nothing of the batch was buffered");
        // and the refused batch's new field did not leak into the schema
        b.put_batch(vec![record! {"id" => "2", "fresh" => "text now"}])
            .unwrap();
        b.flush().await.unwrap();
        assert_eq!(
            b.read(1, 1).await.unwrap(),
            vec![record! {"id" => "2", "fresh" => "text now"}]
        );
    });
}

#[test]
fn null_only_fields_get_no_column_until_typed() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let mut b = open(dir.path()).await;
        b.put_batch(vec![
            record! {"later" => Value::Null, "e" => Value::List(vec![])},
        ])
        .unwrap();
        b.flush().await.unwrap();
        b.put_batch(vec![record! {"later" => 5, "e" => vec![1.5f64]}])
            .unwrap();
        b.flush().await.unwrap();
        drop(b);
        let b = open(dir.path()).await;
        assert_eq!(
            b.read(0, 10).await.unwrap(),
            vec![
                record! {"later" => Value::Null, "e" => Value::List(vec![])},
                record! {"later" => 5, "e" => vec![1.5f64]},
            ]
        );
    });
}
