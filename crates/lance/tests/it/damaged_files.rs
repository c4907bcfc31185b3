//! Damaged data files: refused by the file's seal before Lance reads it, or (for files
//! without a seal) by the row checksum; never returned as a record.

use persisting_codec::record;
use persisting_lance::{Error, SUMS_FILE, row_checksum};

use crate::{open, rt};

/// A string no encoding shortens: hex digits of a simple generator.
fn noise(i: u64) -> String {
    let mut x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..48)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from_digit((x % 16) as u32, 16).unwrap()
        })
        .collect()
}

#[test]
fn a_value_changed_on_disk_is_refused_with_its_offset() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let mut b = open(dir.path()).await;
        let records: Vec<_> = (0..50)
            .map(|i| record! {"id" => i as i64, "s" => noise(i)})
            .collect();
        b.append(records.clone()).await.unwrap();
        b.flush().await.unwrap();
        assert_eq!(b.read(0, 50).await.unwrap(), records);
        drop(b);

        // find record 17's string in a data file and change one character of it
        let target = noise(17);
        let data_dir = dir.path().join("data.lance/data");
        let mut changed = false;
        for entry in std::fs::read_dir(&data_dir).unwrap() {
            let path = entry.unwrap().path();
            let mut bytes = std::fs::read(&path).unwrap();
            if let Some(at) = bytes
                .windows(target.len())
                .position(|w| w == target.as_bytes())
            {
                bytes[at + 5] = if bytes[at + 5] == b'x' { b'y' } else { b'x' };
                std::fs::write(&path, &bytes).unwrap();
                changed = true;
            }
        }
        assert!(changed, "the string is stored verbatim in a data file");

        // the file's seal catches it before Lance reads a byte of it
        let b = open(dir.path()).await;
        let err = b.read(0, 50).await.unwrap_err();
        match &err {
            Error::DataFileDamaged { file, .. } => assert!(file.starts_with(&data_dir)),
            other => panic!("expected a damaged data file, got {other}"),
        }
        assert!(err.to_string().contains("is damaged"), "{err}");
        drop(b);

        // without seals (a dataset written by another tool), the row checksum catches it
        std::fs::remove_file(dir.path().join(SUMS_FILE)).unwrap();
        let b = open(dir.path()).await;
        let check = b.verify_files().await.unwrap();
        assert_eq!(check.unsealed, check.files);
        let err = b.read(0, 50).await.unwrap_err();
        match &err {
            Error::ChecksumMismatch { offset, .. } => assert_eq!(*offset, 17),
            other => panic!("expected a checksum mismatch, got {other}"),
        }
        assert!(err.to_string().contains("offset 17"), "{err}");
        // a read into a Vec refuses it the same way and leaves the Vec empty, not
        // holding the rows before the damaged one
        let mut into = records.clone();
        let err = b.read_into(0, 50, &mut into).await.unwrap_err();
        assert!(
            matches!(err, Error::ChecksumMismatch { offset: 17, .. }),
            "{err}"
        );
        assert!(into.is_empty());
        // the columnar read checks the same checksums, without building records
        let err = b.read_arrow(0, 50).await.unwrap_err();
        match &err {
            Error::ChecksumMismatch { offset, .. } => assert_eq!(*offset, 17),
            other => panic!("expected a checksum mismatch, got {other}"),
        }
        // the rows before it are intact and readable
        assert_eq!(b.read(0, 17).await.unwrap(), records[..17]);
        let rows: usize = b
            .read_arrow(0, 17)
            .await
            .unwrap()
            .iter()
            .map(|b| b.num_rows())
            .sum();
        assert_eq!(rows, 17);
        // reads that continue one another go through the read-ahead scan, whose rows
        // are checked as the reader takes them: whichever kind of read takes them
        let offset_of = |err: Error| match err {
            Error::ChecksumMismatch { offset, .. } => offset,
            other => panic!("expected a checksum mismatch, got {other}"),
        };
        let b = open(dir.path()).await;
        b.read_arrow(0, 10).await.unwrap();
        assert_eq!(offset_of(b.read_arrow(10, 40).await.unwrap_err()), 17);
        let b = open(dir.path()).await;
        b.read(0, 10).await.unwrap();
        assert_eq!(offset_of(b.read(10, 40).await.unwrap_err()), 17);
        // rows a record read left in the scan, unchecked by it, are checked for a
        // columnar read that takes them
        let b = open(dir.path()).await;
        assert_eq!(b.read(0, 5).await.unwrap(), records[..5]);
        assert_eq!(b.read(5, 5).await.unwrap(), records[5..10]);
        assert_eq!(offset_of(b.read_arrow(10, 40).await.unwrap_err()), 17);
    });
}

/// Sizes Lance trusts: a damaged length can make its decoder ask for terabytes, which
/// aborts the process. A sealed file is checked first, so every single-byte damage of
/// a data file is an error naming the file, whatever byte it hits.
#[test]
fn any_damaged_byte_of_a_sealed_data_file_is_refused_before_lance_reads_it() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let mut b = open(dir.path()).await;
        let records: Vec<_> = (0..20)
            .map(|i| record! {"id" => i as i64, "s" => noise(i), "v" => vec![1.5, i as f64]})
            .collect();
        b.append(records.clone()).await.unwrap();
        b.flush().await.unwrap();
        assert_eq!(b.verify_files().await.unwrap().unsealed, 0);
        drop(b);
        let data_dir = dir.path().join("data.lance/data");
        let file = std::fs::read_dir(&data_dir)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let good = std::fs::read(&file).unwrap();
        let step = (good.len() / 64).max(1);
        for at in (0..good.len()).step_by(step).chain([good.len() - 1]) {
            let mut bad = good.clone();
            bad[at] ^= 0x5a;
            std::fs::write(&file, &bad).unwrap();
            let b = open(dir.path()).await;
            match b.read(0, 20).await {
                Err(Error::DataFileDamaged { file: f, .. }) => assert_eq!(f, file),
                other => panic!("byte {at}: expected a damaged data file, got {other:?}"),
            }
        }
        std::fs::write(&file, &good[..good.len() - 1]).unwrap();
        let b = open(dir.path()).await;
        assert!(matches!(
            b.read(0, 20).await,
            Err(Error::DataFileDamaged { .. })
        ));
        std::fs::write(&file, &good).unwrap();
        let b = open(dir.path()).await;
        assert_eq!(b.read(0, 20).await.unwrap(), records);
    });
}

#[test]
fn checksums_survive_int_to_float_widening() {
    let int = record! {"id" => "a", "m" => 3};
    let float = record! {"id" => "a", "m" => 3.0};
    assert_eq!(row_checksum(&int), row_checksum(&float));
    assert_ne!(
        row_checksum(&int),
        row_checksum(&record! {"id" => "a", "m" => 4})
    );
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let mut b = open(dir.path()).await;
        b.append(vec![int.clone()]).await.unwrap();
        b.flush().await.unwrap();
        b.append(vec![record! {"id" => "b", "m" => 0.5}])
            .await
            .unwrap();
        b.flush().await.unwrap();
        let got = b.read(0, 2).await.unwrap();
        assert_eq!(got[0], float, "widened, and its checksum still holds");
    });
}

#[test]
fn a_first_commit_cut_before_its_manifest_opens_empty_and_accepts_a_flush() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let mut b = open(dir.path()).await;
        b.append(vec![record! {"id" => 1}]).await.unwrap();
        b.flush().await.unwrap();
        drop(b);
        // what a kill between the data file and the manifest leaves behind
        let ds = dir.path().join("data.lance");
        std::fs::remove_dir_all(ds.join("_versions")).unwrap();
        let _ = std::fs::remove_dir_all(ds.join("_transactions"));
        let mut b = open(dir.path()).await;
        assert_eq!(b.total_count(), 0);
        b.append(vec![record! {"id" => 2}]).await.unwrap();
        b.flush().await.unwrap();
        drop(b);
        let b = open(dir.path()).await;
        assert_eq!(b.read(0, 10).await.unwrap(), vec![record! {"id" => 2}]);
    });
}
