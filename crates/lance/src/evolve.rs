//! Schema evolution of the dataset at flush time: new fields become all-null
//! columns (metadata only), an int64 column that received a float is rewritten alone
//! as float64 (a new column, the old one dropped, the new one renamed; finished at
//! the next open if interrupted), and the field registry is recorded.
//!
//! Invariant: the dataset is never rewritten whole; each step is its own commit and
//! what is left to do is found by comparing schemas, so a failed flush resumes.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema as ArrowSchema};
use arrow::record_batch::RecordBatch;
use lance::Dataset;
use lance::dataset::{BatchUDF, ColumnAlteration, NewColumnTransform};

use crate::bucket::LanceBucket;
use crate::error::{Error, Result};
use crate::options::ColumnCompression;
use crate::read::files::fragment_files;
use crate::schema::{
    CHECKSUM_COLUMN, ColType, LAYOUT_COLUMN, REGISTRY_KEY, arrow_field, cast_to, materialized,
    missing_children, needs_rewrite,
};

impl LanceBucket {
    pub(crate) async fn finish_interrupted_widening(&self, ds: &mut Dataset) -> Result<()> {
        let arrow = ArrowSchema::from(ds.schema());
        let tmps: Vec<String> = arrow
            .fields()
            .iter()
            .filter_map(|f| f.name().strip_prefix(WIDEN_PREFIX).map(str::to_owned))
            .collect();
        for name in tmps {
            let tmp = format!("{WIDEN_PREFIX}{name}");
            if arrow.field_with_name(&name).is_ok() {
                // the rewrite had not replaced the old column yet: start over later
                ds.drop_columns(&[tmp.as_str()])
                    .await
                    .map_err(Error::lance("drop an unfinished column of", &self.uri))?;
            } else {
                ds.alter_columns(&[ColumnAlteration::new(tmp).rename(name)])
                    .await
                    .map_err(Error::lance("rename a rewritten column of", &self.uri))?;
            }
        }
        Ok(())
    }

    pub(crate) fn field_for(&self, name: &str, ty: &ColType) -> Field {
        let mut meta = std::collections::HashMap::new();
        match self.opts.column_compression {
            ColumnCompression::Default => {}
            ColumnCompression::Zstd(level) => {
                meta.insert("lance-encoding:compression".to_owned(), "zstd".to_owned());
                if let Some(level) = level {
                    meta.insert(
                        "lance-encoding:compression-level".to_owned(),
                        level.to_string(),
                    );
                }
            }
            ColumnCompression::Lz4 => {
                meta.insert("lance-encoding:compression".to_owned(), "lz4".to_owned());
            }
        }
        arrow_field(name, ty, &meta)
    }

    /// The columns of the admitted schema's record fields, in field order.
    pub(crate) fn record_fields(&self) -> Vec<Field> {
        self.schema
            .fields
            .iter()
            .filter_map(|f| {
                let ty = f.ty.as_ref().filter(|t| materialized(t))?;
                Some(self.field_for(&f.name, ty))
            })
            .collect()
    }

    /// The schema a new dataset is created with: the record fields, then this crate's
    /// own columns, and the field registry.
    pub(crate) fn create_schema(&self) -> Arc<ArrowSchema> {
        let mut fields = self.record_fields();
        fields.push(Field::new(LAYOUT_COLUMN, DataType::Binary, true));
        fields.push(Field::new(CHECKSUM_COLUMN, DataType::UInt32, true));
        self.with_registry(fields)
    }

    /// A schema of `fields` carrying the field registry.
    pub(crate) fn with_registry(&self, fields: Vec<Field>) -> Arc<ArrowSchema> {
        let meta = [(REGISTRY_KEY.to_owned(), self.schema.registry_json())].into();
        Arc::new(ArrowSchema::new_with_metadata(fields, meta))
    }

    /// Brings the dataset's columns up to the admitted schema: widenings, new columns,
    /// new struct children, the layout column, the registry. Each step is its own
    /// commit, and what is to do is found by comparing the admitted schema with the
    /// dataset's, so a failed flush resumes where it stopped.
    pub(crate) async fn evolve(&mut self, ds: &mut Dataset) -> Result<()> {
        // a rewrite a failed flush left half done is finished (or undone) first
        self.finish_interrupted_widening(ds).await?;
        let mut new_fields = Vec::new();
        // a rewrite below replaces only its own column: the others stand as they are
        let before = ArrowSchema::from(ds.schema());
        for f in &self.schema.fields {
            let Some(ty) = f.ty.as_ref().filter(|t| materialized(t)) else {
                continue;
            };
            if matches!(ty, ColType::Foreign(_)) {
                continue;
            }
            let want = self.field_for(&f.name, ty);
            match before.field_with_name(&f.name).ok() {
                None => new_fields.push(want),
                Some(have) if needs_rewrite(have.data_type(), want.data_type()) => {
                    self.rewrite(ds, want).await?;
                }
                Some(have) => new_fields.extend(missing_children(have, &want)),
            }
        }
        let arrow = ArrowSchema::from(ds.schema());
        if arrow.field_with_name(LAYOUT_COLUMN).is_err() {
            new_fields.push(Field::new(LAYOUT_COLUMN, DataType::Binary, true));
        }
        if arrow.field_with_name(CHECKSUM_COLUMN).is_err() {
            // rows already in the dataset get no checksum (null: not verified)
            new_fields.push(Field::new(CHECKSUM_COLUMN, DataType::UInt32, true));
        }
        if !new_fields.is_empty() {
            ds.add_columns(
                NewColumnTransform::AllNulls(Arc::new(ArrowSchema::new(new_fields))),
                None,
                None,
            )
            .await
            .map_err(Error::lance("add columns to", &self.uri))?;
        }
        let registry = self.schema.registry_json();
        if arrow.metadata().get(REGISTRY_KEY) != Some(&registry) {
            ds.update_schema_metadata([(REGISTRY_KEY, registry.as_str())])
                .await
                .map_err(Error::lance("record the field order of", &self.uri))?;
        }
        Ok(())
    }

    /// Rewrites one column as the type of `want` (int64 leaves become float64) through
    /// Lance's column operations: a new column computed from the old one, the old one
    /// dropped, the new one renamed. An interruption between these commits is finished
    /// at the next open.
    pub(crate) async fn rewrite(&self, ds: &mut Dataset, want: Field) -> Result<()> {
        // the rewrite reads the column from every fragment: check their files first
        self.verify_names(fragment_files(ds, |_| true, 0..u64::MAX), 0)
            .await?;
        let name = want.name().clone();
        let tmp = format!("{WIDEN_PREFIX}{name}");
        let field = want.with_name(tmp.clone());
        let target = field.data_type().clone();
        let out = Arc::new(ArrowSchema::new(vec![field]));
        let out_schema = out.clone();
        let mapper = move |batch: &RecordBatch| -> lance::Result<RecordBatch> {
            let cast = cast_to(batch.column(0), &target)?;
            Ok(RecordBatch::try_new(out_schema.clone(), vec![cast])?)
        };
        ds.add_columns(
            NewColumnTransform::BatchUDF(BatchUDF {
                mapper: Box::new(mapper),
                output_schema: out,
                result_checkpoint: None,
            }),
            Some(vec![name.clone()]),
            None,
        )
        .await
        .map_err(Error::lance(
            "add the widened copy of a column to",
            &self.uri,
        ))?;
        ds.drop_columns(&[name.as_str()])
            .await
            .map_err(Error::lance(
                "drop a column before its rewrite of",
                &self.uri,
            ))?;
        ds.alter_columns(&[ColumnAlteration::new(tmp).rename(name)])
            .await
            .map_err(Error::lance("rename a rewritten column of", &self.uri))?;
        Ok(())
    }
}

pub(crate) const WIDEN_PREFIX: &str = "_persisting_widen:";
