//! Integration tests of persisting-wal, one module per behaviour. Generic test bodies
//! run against both the real file system and the simulated one.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod async_waits;
mod basics;
mod corruption;
mod faults;
mod golden;
mod simulated_crashes;

use std::path::PathBuf;
use std::sync::Arc;

use persisting_wal::{Fs, RealFs, SimFs};

/// A directory on one kind of file system; the tempdir is kept alive with it.
#[derive(Debug)]
pub struct Place {
    pub fs: Arc<dyn Fs>,
    pub dir: PathBuf,
    pub sim: Option<SimFs>,
    _tmp: Option<tempfile::TempDir>,
}

pub fn real() -> Place {
    let tmp = tempfile::tempdir().unwrap();
    Place {
        fs: Arc::new(RealFs),
        dir: tmp.path().join("wal"),
        sim: None,
        _tmp: Some(tmp),
    }
}

pub fn sim() -> Place {
    let sim = SimFs::new();
    Place {
        fs: Arc::new(sim.clone()),
        dir: PathBuf::from("/data/wal"),
        sim: Some(sim),
        _tmp: None,
    }
}

/// Runs a test body on real files and on the simulated file system.
pub fn both(body: impl Fn(&Place)) {
    body(&real());
    body(&sim());
}
