//! Rotation: a new segment starts under a pending name; the closer fsyncs the one
//! before it, then the new one, and only then gives it its final name.

use std::path::PathBuf;
use std::sync::{Arc, MutexGuard, PoisonError};

use super::{Shared, State, lock, poisoned};
use crate::error::{Error, Result};
use crate::fs::FsFile;
use crate::options::SegmentClose;
use crate::recovery::SegmentMeta;
use crate::segment::{SEGMENT_HEADER_BYTES, SegmentHeader, pending_name, segment_name};

impl Shared {
    /// Cuts the active segment's preallocated space off (on close), durably.
    pub(super) fn trim_active(&self) -> Result<()> {
        let mut st = lock(&self.state);
        if st.allocated > st.written {
            let path = self.active_path(&st);
            let written = st.written;
            st.active
                .set_len(written)
                .and_then(|()| st.active.sync_data())
                .map_err(|e| Error::io("trim", path, e))?;
            st.allocated = written;
        }
        Ok(())
    }

    /// Starts a new segment after the active one (whose frames are all written). It is
    /// created under its pending name; closing the old one renames it.
    pub(super) fn rotate(&self, st: &mut State) -> Result<()> {
        let first = st.next_lsn;
        let path = self.dir.join(pending_name(first));
        let header = SegmentHeader {
            first_lsn: first,
            flags: 0,
        };
        let file = self
            .fs
            .create(&path)
            .and_then(|f| f.write_at(&header.encode(), 0).map(|()| f))
            .map_err(|e| {
                let _ = self.fs.remove(&path);
                Error::io("create", &path, e)
            })?;
        let old_first = st.segments.last().map_or(first, |s| s.first_lsn);
        st.closing.push_back(CloseJob {
            old: std::mem::replace(&mut st.active, file.clone()),
            old_first,
            old_bytes: st.written,
            new: file,
            new_first: first,
        });
        st.written = SEGMENT_HEADER_BYTES as u64;
        st.allocated = SEGMENT_HEADER_BYTES as u64;
        st.segments.push(SegmentMeta {
            first_lsn: first,
            bytes: SEGMENT_HEADER_BYTES as u64,
            pending: true,
        });
        if self.opts.segment_close == SegmentClose::Inline {
            while let Some(job) = st.closing.front().cloned() {
                if let Err(cause) = self.close_job(&job) {
                    return Err(self.poison(st, cause));
                }
                self.finish_job(st, &job);
            }
        } else {
            self.closer.notify_all();
        }
        Ok(())
    }

    /// Waits until the closer has no work left (or the log is poisoned).
    pub(super) fn drain_closing<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
    ) -> Result<MutexGuard<'a, State>> {
        while !st.closing.is_empty() {
            if let Some(cause) = self.poison_cause.get() {
                return Err(poisoned(cause));
            }
            st = self.synced.wait(st).unwrap_or_else(PoisonError::into_inner);
        }
        Ok(st)
    }

    /// The closer thread: closes segments in order (see [`Shared::close_job`]).
    pub(super) fn close_segments(&self) {
        let mut st = lock(&self.state);
        loop {
            if self.poison_cause.get().is_some() {
                return;
            }
            let Some(job) = st.closing.front().cloned() else {
                if st.closed {
                    return;
                }
                st = self.closer.wait(st).unwrap_or_else(PoisonError::into_inner);
                continue;
            };
            drop(st);
            let result = self.close_job(&job);
            st = lock(&self.state);
            if let Err(cause) = result {
                self.poison(&mut st, cause);
                return;
            }
            self.finish_job(&mut st, &job);
        }
    }

    /// Trims the closed segment's preallocation and fsyncs it, fsyncs the pending
    /// segment after it, gives that one its final name, fsyncs the directory.
    pub(super) fn close_job(&self, job: &CloseJob) -> std::result::Result<(), String> {
        let old_path = self.dir.join(segment_name(job.old_first));
        let pending = self.dir.join(pending_name(job.new_first));
        let done = self.dir.join(segment_name(job.new_first));
        job.old
            .set_len(job.old_bytes)
            .and_then(|()| job.old.sync_data())
            .map_err(|e| format!("closing {} failed: {e}", old_path.display()))?;
        job.new
            .sync_data()
            .map_err(|e| format!("fsync of {} failed: {e}", pending.display()))?;
        self.fs
            .rename(&pending, &done)
            .map_err(|e| format!("renaming {} failed: {e}", pending.display()))?;
        self.fs
            .sync_dir(&self.dir)
            .map_err(|e| format!("fsync of directory {} failed: {e}", self.dir.display()))
    }

    pub(super) fn finish_job(&self, st: &mut State, job: &CloseJob) {
        st.closing.pop_front();
        st.fsyncs += 2;
        if let Some(meta) = st
            .segments
            .iter_mut()
            .find(|m| m.first_lsn == job.new_first)
        {
            meta.pending = false;
        }
        self.advance_durable(st, job.new_first);
    }

    pub(super) fn active_path(&self, st: &State) -> PathBuf {
        match st.segments.last() {
            Some(s) if s.pending => self.dir.join(pending_name(s.first_lsn)),
            Some(s) => self.dir.join(segment_name(s.first_lsn)),
            None => self.dir.clone(),
        }
    }
}

/// A closed segment to trim and fsync, and the pending segment after it to rename
/// once it is durable.
#[derive(Clone)]
pub(super) struct CloseJob {
    old: Arc<dyn FsFile>,
    old_first: u64,
    old_bytes: u64,
    new: Arc<dyn FsFile>,
    new_first: u64,
}
