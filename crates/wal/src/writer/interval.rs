//! The interval sync thread of [`SyncPolicy::Interval`](crate::SyncPolicy).

use std::sync::PoisonError;

use super::{Shared, lock};
use crate::options::SyncPolicy;

impl Shared {
    pub(super) fn flush_every(&self) {
        let SyncPolicy::Interval(every) = self.opts.sync else {
            return;
        };
        let mut st = lock(&self.state);
        loop {
            if st.closed {
                return;
            }
            st = self
                .tick
                .wait_timeout(st, every)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
            if st.closed || self.poison_cause.get().is_some() {
                return;
            }
            if st.synced_lsn < st.next_lsn && !st.syncing {
                let target = st.next_lsn;
                // a failure poisons the log; writers see it on their next call
                let _ = self.wait_durable(st, target);
                st = lock(&self.state);
            }
        }
    }
}
