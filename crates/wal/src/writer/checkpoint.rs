//! Checkpoint: a fresh `CHECKPOINT_BASE` segment at the LSN a flush made durable,
//! and the segments wholly below it removed.

use super::Shared;
use crate::error::{Error, Result};
use crate::recovery::SegmentMeta;
use crate::segment::{
    FLAG_CHECKPOINT_BASE, SEGMENT_HEADER_BYTES, SegmentHeader, create_segment, segment_name,
};

impl Shared {
    pub(super) fn checkpoint(&self, lsn: u64) -> Result<()> {
        let st = self.writable()?;
        let st = self.write_queued(st)?;
        let mut st = self.drain_closing(st)?;
        let active_has_entries = st
            .segments
            .last()
            .is_some_and(|s| s.bytes > SEGMENT_HEADER_BYTES as u64);
        if lsn > st.next_lsn || (lsn == st.next_lsn && active_has_entries) {
            // every older segment is obsolete: the new one starts the log on its own
            let header = SegmentHeader {
                first_lsn: lsn,
                flags: FLAG_CHECKPOINT_BASE,
            };
            st.active = create_segment(self.fs.as_ref(), &self.dir, header)?;
            st.segments.push(SegmentMeta {
                first_lsn: lsn,
                bytes: SEGMENT_HEADER_BYTES as u64,
                pending: false,
            });
            st.written = SEGMENT_HEADER_BYTES as u64;
            st.allocated = SEGMENT_HEADER_BYTES as u64;
            st.next_lsn = lsn;
            st.written_lsn = lsn;
            self.advance_durable(&mut st, lsn);
        }
        let mut removed = false;
        while st.segments.len() > 1 && st.segments[1].first_lsn <= lsn {
            let path = self.dir.join(segment_name(st.segments[0].first_lsn));
            self.fs
                .remove(&path)
                .map_err(|e| Error::io("remove checkpointed segment", &path, e))?;
            st.segments.remove(0);
            removed = true;
        }
        if removed {
            self.fs
                .sync_dir(&self.dir)
                .map_err(|e| Error::io("fsync directory", &self.dir, e))?;
        }
        Ok(())
    }
}
