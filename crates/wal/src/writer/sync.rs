//! Durability: group commit (a leader writes every queued frame with one write and
//! one fsync, outside the lock), the durable LSN that only grows, waking the threads
//! and tasks a sync covered, and poisoning after a failed fsync.
//!
//! Blocked threads lead their own group commits; async tasks are served by the log's
//! sync thread (`tasks`), which joins the same group commit. Handing blocked threads'
//! fsyncs to that one thread as well was measured slower, for one writer and for 64
//! (`cargo bench -p persisting-wal --bench compare`), so both paths stay.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Waker;
use std::thread::Thread;
use std::time::Instant;

use super::tasks::{lock_tasks, sync_for_tasks};
use super::{Shared, State, lock};
use crate::error::{Error, Result};

impl Shared {
    /// Makes every entry appended so far durable ([`Wal::sync`], and the sync
    /// thread's sync).
    pub(crate) fn sync_all(&self) -> Result<()> {
        let st = self.writable()?;
        let target = st.next_lsn;
        self.wait_durable(st, target)
    }

    /// Wakes every waiting task (on poison and shutdown: each then finds why).
    pub(super) fn wake_all_tasks(&self) {
        let mut woken = Vec::new();
        lock_tasks(&self.tasks).take_covered(None, &mut woken);
        woken.into_iter().for_each(Waker::wake);
    }

    /// Asks the sync thread for a sync covering every LSN below `lsn` (starting the
    /// thread the first time).
    pub(crate) fn want_durable(self: &Arc<Self>, lsn: u64) -> Result<()> {
        self.wanted.fetch_max(lsn, Ordering::SeqCst);
        if let Some(thread) = self.syncer_thread.get() {
            if self.syncer_idle.load(Ordering::SeqCst) {
                thread.unpark();
            }
            return Ok(());
        }
        let mut slot = self.syncer.lock().unwrap_or_else(PoisonError::into_inner);
        if self.shut.load(Ordering::SeqCst) {
            return Err(Error::Closed);
        }
        if slot.is_none() {
            let shared = Arc::clone(self);
            let handle = std::thread::Builder::new()
                .name("wal-syncer".to_owned())
                .spawn(move || sync_for_tasks(&shared))
                .map_err(|e| Error::io("start a sync thread for", &self.dir, e))?;
            let _ = self.syncer_thread.set(handle.thread().clone());
            *slot = Some(handle);
        }
        Ok(())
    }

    /// Publishes a new durable LSN: wakes every parked waiter it covers, and one
    /// other waiter to lead the next group commit when nothing is in the way.
    pub(super) fn advance_durable(&self, st: &mut State, lsn: u64) {
        let mut wake = Unpark(Vec::new(), Vec::new());
        self.advance_durable_deferred(st, lsn, &mut wake);
    }

    /// [`Self::advance_durable`], leaving the wake-ups to `wake`, which the caller
    /// runs once it has released the lock: the woken threads then do not pile up on
    /// a lock still held while the others are woken.
    pub(super) fn advance_durable_deferred(&self, st: &mut State, lsn: u64, wake: &mut Unpark) {
        st.synced_lsn = st.synced_lsn.max(lsn);
        let synced = st.synced_lsn;
        self.durable.store(synced, Ordering::SeqCst);
        lock_tasks(&self.tasks).take_covered(Some(synced), &mut wake.1);
        let mut lead = !st.syncing && st.closing.is_empty();
        st.waiters.retain(|(target, thread)| {
            if *target <= synced || std::mem::take(&mut lead) {
                wake.0.push(thread.clone());
                false
            } else {
                true
            }
        });
        self.synced.notify_all();
    }

    /// Group commit: returns once every LSN below `target` is durable. The first
    /// waiter that finds no sync running becomes the leader: it writes every queued
    /// frame and fsyncs, outside the lock. The others park (no lock held, no
    /// thundering herd) until a leader's sync covers them, or until woken to lead.
    pub(super) fn wait_durable<'a>(&'a self, st: MutexGuard<'a, State>, target: u64) -> Result<()> {
        // threads a finished sync covers, woken once the lock is released (declared
        // before the guard, so it runs after the guard is dropped on return)
        let mut wake = Unpark(Vec::new(), Vec::new());
        let mut st = st;
        // A leader whose own entries are durable commits the frames queued meanwhile
        // once more before returning: the next group starts without waiting for a
        // parked thread to be scheduled.
        let mut extra_rounds = 1;
        loop {
            if let Some(cause) = self.poison_cause.get() {
                return Err(poisoned(cause));
            }
            if st.synced_lsn >= target {
                let lead_again = extra_rounds > 0
                    && !st.queued.is_empty()
                    && !st.syncing
                    && st.closing.is_empty();
                if !lead_again {
                    return Ok(());
                }
                extra_rounds -= 1;
            }
            // the active segment's LSNs are durable only once every segment before it
            // is, and it has its final name: the closer's work comes first
            if st.syncing || !st.closing.is_empty() {
                st.waiters.push((target, std::thread::current()));
                drop(st);
                wake.run();
                // A woken thread wakes the threads a leader left behind (see
                // `Unpark::hand_over`), on every way out: before the first look
                // (woken before it parked) and after each park.
                drain_backlog(&self.backlog);
                loop {
                    if self.durable.load(Ordering::SeqCst) >= target {
                        return Ok(());
                    }
                    if self.failed.load(Ordering::Acquire) {
                        break;
                    }
                    std::thread::park();
                    drain_backlog(&self.backlog);
                    // woken to lead, or spuriously: look again under the lock
                    if self.durable.load(Ordering::SeqCst) < target {
                        break;
                    }
                }
                st = lock(&self.state);
                let me = std::thread::current().id();
                st.waiters.retain(|(_, t)| t.id() != me);
                continue;
            }
            st.syncing = true;
            let buf = std::mem::take(&mut st.queued);
            let at = st.written;
            let upto = st.next_lsn;
            let file = st.active.clone();
            if let Err(e) = self.ensure_allocated(&mut st, at + buf.len() as u64) {
                st.syncing = false;
                let cause = format!("extending {} failed: {e}", self.active_path(&st).display());
                return Err(self.poison(&mut st, cause));
            }
            drop(st);
            wake.hand_over(&self.backlog);
            let started = Instant::now();
            let result = if buf.is_empty() {
                Ok(())
            } else {
                file.write_at(&buf, at)
            }
            .and_then(|()| file.sync_data());
            if let (Ok(()), Some(observer)) = (&result, &self.opts.on_fsync) {
                (observer.0)(started.elapsed());
            }
            st = lock(&self.state);
            st.syncing = false;
            match result {
                Ok(()) => {
                    // Under policies other than `Always` frames are written at append
                    // time, also while this sync ran: `written` is theirs to advance,
                    // and moving it back here would let the next frame overwrite them.
                    if !buf.is_empty() {
                        st.written = at + buf.len() as u64;
                        st.written_lsn = upto;
                    }
                    st.fsyncs += 1;
                    if st.queued.is_empty() {
                        st.queued = buf;
                        st.queued.clear();
                    }
                    self.advance_durable_deferred(&mut st, upto, &mut wake);
                }
                Err(e) => {
                    let cause = format!(
                        "write or fsync of {} failed: {e}",
                        self.active_path(&st).display()
                    );
                    return Err(self.poison(&mut st, cause));
                }
            }
        }
    }

    /// Every LSN below this one is durable (read without the lock).
    pub(crate) fn durable_lsn_now(&self) -> u64 {
        self.durable.load(Ordering::SeqCst)
    }

    /// True once the log is poisoned (read without the lock).
    pub(crate) fn is_failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }

    /// The error every call of a poisoned log returns.
    pub(crate) fn poison_error(&self) -> Error {
        match self.poison_cause.get() {
            Some(cause) => poisoned(cause),
            None => Error::Closed,
        }
    }

    pub(super) fn poison(&self, st: &mut State, cause: String) -> Error {
        let _ = self.poison_cause.set(cause.clone());
        self.failed.store(true, Ordering::SeqCst);
        for (_, thread) in st.waiters.drain(..) {
            thread.unpark();
        }
        self.wake_all_tasks();
        self.synced.notify_all();
        self.closer.notify_all();
        Error::Poisoned { cause }
    }

    pub(super) fn writable(&self) -> Result<MutexGuard<'_, State>> {
        let st = lock(&self.state);
        if let Some(cause) = self.poison_cause.get() {
            return Err(poisoned(cause));
        }
        if st.closed {
            return Err(Error::Closed);
        }
        Ok(st)
    }
}

/// Threads to wake, and tasks, woken when this is run or dropped (after the lock is
/// released).
pub(super) struct Unpark(Vec<std::thread::Thread>, Vec<Waker>);

impl Unpark {
    fn run(&mut self) {
        self.0.drain(..).for_each(|t| t.unpark());
        self.1.drain(..).for_each(Waker::wake);
    }

    /// Wakes the first two threads and leaves the others in `backlog` for them: a
    /// leader about to fsync again does not spend the time of a wake-up per
    /// follower (and the followers' CPU) before it starts, and the first woken
    /// thread wakes the rest while the fsync runs.
    fn hand_over(&mut self, backlog: &Mutex<Vec<Thread>>) {
        if self.0.len() > 2 {
            let rest = self.0.split_off(2);
            backlog
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend(rest);
        }
        self.run();
    }
}

/// Wakes every thread left in `backlog` by [`Unpark::hand_over`].
pub(super) fn drain_backlog(backlog: &Mutex<Vec<Thread>>) {
    let threads = std::mem::take(&mut *backlog.lock().unwrap_or_else(PoisonError::into_inner));
    threads.into_iter().for_each(|t| t.unpark());
}

impl Drop for Unpark {
    fn drop(&mut self) {
        self.run();
    }
}

pub(super) fn poisoned(cause: &str) -> Error {
    Error::Poisoned {
        cause: cause.to_owned(),
    }
}
