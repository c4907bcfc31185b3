//! Durability waits as futures: [`WaitDurable`] and [`AppendDurable`], for callers that
//! run many concurrent writers as tasks of an async runtime rather than as threads.
//!
//! A waiting task holds no thread. It registers its [`Waker`] with the log and asks for
//! a sync by raising the log's wanted LSN; one sync thread per log (started by the
//! first task that needs it) syncs while any task waits for an LSN that is not durable
//! yet, each sync covering everything appended before it began. When the durable LSN
//! advances, by that thread or by any other sync (a blocking group-commit leader, the
//! interval flusher, rotation), the tasks it covers are woken. So concurrent tasks share
//! one fsync, as threads do under group commit, but waking them costs the runtime a
//! queue push instead of the kernel a thread wake-up each.
//!
//! Invariants:
//! - a wait resolves `Ok` only once the durable LSN is at or past its target, which
//!   happens only after an fsync that covered every LSN below it;
//! - no wake-up is lost: a task checks the durable LSN, the poison flag and the shut
//!   flag under the lock of the waiting tasks, and whoever changes them (publishing a
//!   durable LSN, poisoning, shutting down) takes that lock after the change to wake
//!   the tasks it finds;
//! - lock order: the log's state, then the waiting tasks; a task's poll never takes
//!   the state's lock at all (the poison's cause is kept apart for it), so a waker
//!   run while the state is locked cannot deadlock even if it polls at once;
//! - the sync thread never syncs for an LSN that was not appended (a wait past the end
//!   of the log is refused when made), so it never spins on a target it cannot reach;
//! - shutting the log down wakes every waiting task (with [`Error::Closed`] when its
//!   LSN did not become durable) and joins the sync thread.

use std::collections::HashMap;
use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::writer::Shared;

/// The tasks waiting for LSNs to become durable.
#[derive(Default)]
pub(crate) struct Tasks {
    next_key: u64,
    /// key → (every LSN below this one must be durable, the task's waker)
    waiting: HashMap<u64, (u64, Waker)>,
    /// Tasks the last durable LSN published woke that have not waited again since
    /// (most come back with their next entries within microseconds): each new wait
    /// counts one down.
    woken_pending: usize,
}

impl Tasks {
    /// Moves the wakers of the tasks whose LSNs are below `durable` (all of them with
    /// `None`) into `out`.
    pub(crate) fn take_covered(&mut self, durable: Option<u64>, out: &mut Vec<Waker>) {
        let before = out.len();
        self.waiting.retain(|_, (lsn, waker)| {
            let covered = durable.is_none_or(|d| *lsn <= d);
            if covered {
                out.push(waker.clone());
            }
            !covered
        });
        self.woken_pending = out.len() - before;
    }
}

pub(crate) fn lock_tasks(m: &Mutex<Tasks>) -> std::sync::MutexGuard<'_, Tasks> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A future that resolves once every LSN below its target is durable (see
/// [`Wal::durable`](crate::Wal::durable)). It owns a handle to the log, so it is
/// `Send + 'static` and can be moved into a spawned task.
#[must_use = "a future does nothing unless awaited"]
pub struct WaitDurable {
    shared: Arc<Shared>,
    target: u64,
    /// The error to resolve to at once (a wait that could not be made).
    refused: Option<Error>,
    /// The key of this wait's waker among the waiting tasks, once registered.
    key: Option<u64>,
}

impl std::fmt::Debug for WaitDurable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WaitDurable")
            .field("target", &self.target)
            .field("registered", &self.key.is_some())
            .finish()
    }
}

/// What a wait for `target` resolves to now, if it resolves: durable, or the log
/// failed (the cause is read once no lock is held), or it was shut.
enum Outcome {
    Durable,
    Failed,
    Shut,
}

fn outcome(shared: &Shared, target: u64) -> Option<Outcome> {
    if shared.durable_lsn_now() >= target {
        Some(Outcome::Durable)
    } else if shared.is_failed() {
        Some(Outcome::Failed)
    } else if shared.shut.load(Ordering::SeqCst) {
        Some(Outcome::Shut)
    } else {
        None
    }
}

impl WaitDurable {
    pub(crate) fn new(shared: Arc<Shared>, target: u64, refused: Option<Error>) -> Self {
        Self {
            shared,
            target,
            refused,
            key: None,
        }
    }

    fn finish(&mut self, outcome: Outcome) -> Result<()> {
        self.deregister();
        match outcome {
            Outcome::Durable => Ok(()),
            Outcome::Failed => Err(self.shared.poison_error()),
            Outcome::Shut => Err(Error::Closed),
        }
    }

    fn deregister(&mut self) {
        if let Some(key) = self.key.take() {
            lock_tasks(&self.shared.tasks).waiting.remove(&key);
        }
    }
}

impl Future for WaitDurable {
    type Output = Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = self.get_mut();
        if let Some(e) = this.refused.take() {
            return Poll::Ready(Err(e));
        }
        if let Some(o) = outcome(&this.shared, this.target) {
            return Poll::Ready(this.finish(o));
        }
        {
            let mut tasks = lock_tasks(&this.shared.tasks);
            // looked at again under the lock: see the module invariants
            if let Some(o) = outcome(&this.shared, this.target) {
                drop(tasks);
                return Poll::Ready(this.finish(o));
            }
            let key = match this.key {
                Some(key) => key,
                None => {
                    let key = tasks.next_key;
                    tasks.next_key += 1;
                    this.key = Some(key);
                    key
                }
            };
            match tasks.waiting.get_mut(&key) {
                Some((_, w)) if w.will_wake(cx.waker()) => {}
                Some((_, w)) => w.clone_from(cx.waker()),
                None => {
                    tasks.waiting.insert(key, (this.target, cx.waker().clone()));
                    tasks.woken_pending = tasks.woken_pending.saturating_sub(1);
                    // counted down under the lock, so tasks do not race on it
                    let needed = this.shared.gather_needed.load(Ordering::Acquire);
                    if needed > 0 {
                        this.shared
                            .gather_needed
                            .store(needed - 1, Ordering::Release);
                    }
                }
            }
        }
        if let Err(e) = this.shared.want_durable(this.target) {
            this.deregister();
            return Poll::Ready(Err(e));
        }
        Poll::Pending
    }
}

impl Drop for WaitDurable {
    fn drop(&mut self) {
        self.deregister();
    }
}

/// A future that resolves to the LSNs of an append once they are durable under the
/// log's policy (see [`Wal::append_batch_async`](crate::Wal::append_batch_async)).
#[must_use = "a future does nothing unless awaited; the entries are appended already"]
#[derive(Debug)]
pub struct AppendDurable {
    appended: Option<Result<Range<u64>>>,
    wait: Option<WaitDurable>,
}

impl AppendDurable {
    pub(crate) fn new(appended: Result<Range<u64>>, wait: Option<WaitDurable>) -> Self {
        Self {
            appended: Some(appended),
            wait,
        }
    }
}

impl Future for AppendDurable {
    type Output = Result<Range<u64>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<Range<u64>>> {
        let this = self.get_mut();
        if let Some(wait) = &mut this.wait {
            match Pin::new(wait).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => {
                    this.wait = None;
                    this.appended = None;
                    return Poll::Ready(Err(e));
                }
                Poll::Ready(Ok(())) => this.wait = None,
            }
        }
        // polled again after it resolved: there is nothing more to give
        Poll::Ready(this.appended.take().unwrap_or(Err(Error::Closed)))
    }
}

/// The longest a gather waits, as a share of the last sync's time (see [`gather`]).
const GATHER_SHARE: u32 = 4;

/// Before a sync: waits, at most `limit`, until the tasks the last sync woke are
/// waiting again, so that one sync covers them and the tasks waiting already. Without
/// it the tasks split into two groups that take turns (one waits while the other's
/// sync runs), each sync covering half of them. It spins rather than parks: on a
/// virtual machine the wake-up of a parked thread can cost more than the gather
/// saves. A lone task that waits again at once, or no task woken, costs nothing;
/// tasks that stopped appending cost at most `limit` (a quarter of a sync).
fn gather(shared: &Shared, limit: Duration) {
    {
        let tasks = lock_tasks(&shared.tasks);
        if limit.is_zero() || tasks.woken_pending == 0 {
            return;
        }
        shared
            .gather_needed
            .store(tasks.woken_pending, Ordering::Release);
    }
    let deadline = Instant::now() + limit;
    while shared.gather_needed.load(Ordering::Acquire) > 0
        && !shared.shut.load(Ordering::Relaxed)
        && Instant::now() < deadline
    {
        for _ in 0..64 {
            std::hint::spin_loop();
        }
    }
    let _tasks = lock_tasks(&shared.tasks);
    shared.gather_needed.store(0, Ordering::Release);
}

/// The sync thread's loop: syncs while a task waits for an LSN that is not durable,
/// parks otherwise, and stops when the log is shut or fails (whoever shuts or poisons
/// the log wakes the waiting tasks).
pub(crate) fn sync_for_tasks(shared: &Shared) {
    let mut last_sync = Duration::ZERO;
    loop {
        if shared.shut.load(Ordering::SeqCst) {
            return;
        }
        if shared.wanted.load(Ordering::SeqCst) > shared.durable_lsn_now() {
            gather(shared, last_sync / GATHER_SHARE);
            let started = Instant::now();
            if shared.sync_all().is_err() {
                return;
            }
            last_sync = started.elapsed();
            continue;
        }
        shared.syncer_idle.store(true, Ordering::SeqCst);
        // a task raises `wanted` and then reads `syncer_idle`; this thread sets
        // `syncer_idle` and then reads `wanted` (both SeqCst): one of the two sees the
        // other, and an unpark that comes before the park makes it return at once
        if shared.shut.load(Ordering::SeqCst)
            || shared.wanted.load(Ordering::SeqCst) > shared.durable_lsn_now()
        {
            shared.syncer_idle.store(false, Ordering::SeqCst);
            continue;
        }
        std::thread::park();
        shared.syncer_idle.store(false, Ordering::SeqCst);
    }
}
