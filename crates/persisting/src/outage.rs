//! Store outages on demand, for tests, benchmarks and the crash fuzzer: a TCP relay in
//! front of a server (an S3 endpoint) that forwards both ways until told to hang
//! (forward nothing, answer nothing: a partitioned or stopped server) or to refuse
//! (close every connection, new ones at once: a server that is down). Point a
//! bucket's `aws_endpoint` at [`Relay::endpoint`].
//!
//! ```
//! use persisting::outage::{Outage, Relay};
//! let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
//! let relay = Relay::start(server.local_addr().unwrap()).unwrap();
//! assert!(relay.endpoint().starts_with("http://127.0.0.1:"));
//! relay.set(Outage::Hang);
//! relay.set(Outage::None);
//! relay.set_for(Outage::Refuse, std::time::Duration::from_millis(10));
//! ```

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

/// What the relay does now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Outage {
    /// Forwards both ways.
    None = 0,
    /// Holds every chunk (connections stay open, nothing answers).
    Hang = 1,
    /// Closes every connection, new ones at once.
    Refuse = 2,
}

impl Outage {
    fn of(v: u8) -> Self {
        match v {
            1 => Outage::Hang,
            2 => Outage::Refuse,
            _ => Outage::None,
        }
    }
}

/// A relay to one upstream address, on a local port of its own.
#[derive(Debug)]
pub struct Relay {
    addr: SocketAddr,
    state: Arc<AtomicU8>,
}

impl Relay {
    /// Starts a relay to `upstream`: a thread accepting connections and two per
    /// connection, which end with it (the accepting one lives as long as the process).
    pub fn start(upstream: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let state = Arc::new(AtomicU8::new(Outage::None as u8));
        let shared = Arc::clone(&state);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if Outage::of(shared.load(Ordering::SeqCst)) == Outage::Refuse {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(upstream) else {
                    continue;
                };
                for (from, to) in [
                    (client.try_clone(), server.try_clone()),
                    (server.try_clone(), client.try_clone()),
                ] {
                    if let (Ok(from), Ok(to)) = (from, to) {
                        let state = Arc::clone(&shared);
                        std::thread::spawn(move || pump(from, to, &state));
                    }
                }
            }
        });
        Ok(Self { addr, state })
    }

    /// The relay's endpoint (`http://127.0.0.1:PORT`), for `aws_endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Starts or ends an outage.
    pub fn set(&self, outage: Outage) {
        self.state.store(outage as u8, Ordering::SeqCst);
    }

    /// Starts an outage that ends by itself after `length` (on a thread of its own,
    /// so a caller blocked by the outage does not keep it going).
    pub fn set_for(&self, outage: Outage, length: Duration) {
        self.set(outage);
        let state = Arc::clone(&self.state);
        std::thread::spawn(move || {
            std::thread::sleep(length);
            let _ = state.compare_exchange(
                outage as u8,
                Outage::None as u8,
                Ordering::SeqCst,
                Ordering::SeqCst,
            );
        });
    }
}

/// Copies `from` to `to` chunk by chunk: holds a chunk while the relay hangs, drops
/// the connection while it refuses.
fn pump(mut from: TcpStream, mut to: TcpStream, state: &AtomicU8) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        loop {
            match Outage::of(state.load(Ordering::SeqCst)) {
                Outage::None => break,
                Outage::Hang => std::thread::sleep(Duration::from_millis(20)),
                Outage::Refuse => {
                    let _ = from.shutdown(Shutdown::Both);
                    let _ = to.shutdown(Shutdown::Both);
                    return;
                }
            }
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
