//! Transient errors of a real S3-compatible server (`PERSISTING_TEST_S3`, see
//! `remote.rs`), injected by an HTTP proxy in front of it: Lance's S3 client retries
//! them with backoff, bounded by `client_max_retries` and `client_retry_timeout`, and
//! the bucket neither loses nor duplicates a record; errors that remain name the URI
//! and the operation. A server error after the server applied a request (the answer
//! lost) is the hard case: a conditional manifest put retried finds its own manifest.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use persisting_codec::{Record, record};
use persisting_lance::{LanceBucket, LanceOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::remote::{Store, s3_configured};
use crate::rt;

/// What the proxy does to the requests it forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Faults {
    /// Forwards every request.
    None = 0,
    /// Answers every other request with a 503 without forwarding it.
    EveryOtherUnsent = 1,
    /// Forwards every request, but replaces every other answer with a 503.
    EveryOtherAnswerLost = 2,
    /// Answers every request with a 503.
    Always = 3,
    /// Reads every request and answers nothing (a server that hangs).
    Hang = 4,
}

/// An HTTP proxy on 127.0.0.1 in front of the S3 server: one request per client
/// connection (it asks both sides to close after it), so it needs no HTTP parsing
/// beyond the head and a `Content-Length` body.
struct Proxy {
    addr: SocketAddr,
    faults: Arc<AtomicU8>,
    requests: Arc<AtomicU64>,
    injected: Arc<AtomicU64>,
    /// The request lines of the requests answered by an injected 503.
    faulted: Arc<Mutex<Vec<String>>>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = Proxy {
            addr: listener.local_addr().unwrap(),
            faults: Arc::new(AtomicU8::new(Faults::None as u8)),
            requests: Arc::new(AtomicU64::new(0)),
            injected: Arc::new(AtomicU64::new(0)),
            faulted: Arc::default(),
        };
        let (faults, requests, injected, faulted) = (
            Arc::clone(&proxy.faults),
            Arc::clone(&proxy.requests),
            Arc::clone(&proxy.injected),
            Arc::clone(&proxy.faulted),
        );
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let n = requests.fetch_add(1, Ordering::SeqCst);
                let mode = faults.load(Ordering::SeqCst);
                let (injected, faulted) = (Arc::clone(&injected), Arc::clone(&faulted));
                tokio::spawn(async move {
                    if let Ok(Some(line)) = forward(client, upstream, mode, n).await {
                        injected.fetch_add(1, Ordering::SeqCst);
                        faulted.lock().unwrap().push(line);
                    }
                });
            }
        });
        proxy
    }

    fn set(&self, faults: Faults) {
        self.faults.store(faults as u8, Ordering::SeqCst);
    }

    fn injected(&self) -> u64 {
        self.injected.load(Ordering::SeqCst)
    }

    /// Whether a conditional manifest put was among the faulted requests.
    fn faulted_a_manifest_put(&self) -> bool {
        let faulted = self.faulted.lock().unwrap();
        faulted
            .iter()
            .any(|l| l.starts_with("PUT ") && l.contains("/_versions/"))
    }
}

const UNAVAILABLE: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

/// Forwards one request (or not); returns its request line if the answer was an
/// injected 503.
async fn forward(
    mut client: TcpStream,
    upstream: SocketAddr,
    mode: u8,
    n: u64,
) -> std::io::Result<Option<String>> {
    let mut request = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        let got = client.read(&mut chunk).await?;
        if got == 0 {
            return Ok(None);
        }
        request.extend_from_slice(&chunk[..got]);
        if let Some(at) = request.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
    };
    let head = String::from_utf8_lossy(&request[..head_end]).to_ascii_lowercase();
    let body_len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap());
    while request.len() < head_end + body_len {
        let got = client.read(&mut chunk).await?;
        if got == 0 {
            return Ok(None);
        }
        request.extend_from_slice(&chunk[..got]);
    }
    let odd = n % 2 == 1;
    let fault = match mode {
        1 => odd.then_some(false),
        2 => odd.then_some(true),
        3 => Some(false),
        _ => None,
    };
    let line_end = request.windows(2).position(|w| w == b"\r\n").unwrap() + 2;
    let line = String::from_utf8_lossy(&request[..line_end - 2]).into_owned();
    if fault == Some(false) {
        client.write_all(UNAVAILABLE).await?;
        return Ok(Some(line));
    }
    if mode == Faults::Hang as u8 {
        // hold the connection, as a stopped server does, until the client gives up
        let mut rest = [0u8; 1];
        let _ = client.read(&mut rest).await;
        return Ok(None);
    }
    let mut up = TcpStream::connect(upstream).await?;
    up.write_all(&request[..line_end]).await?;
    up.write_all(b"Connection: close\r\n").await?;
    up.write_all(&request[line_end..]).await?;
    let mut answer = Vec::new();
    up.read_to_end(&mut answer).await?;
    if fault == Some(true) {
        client.write_all(UNAVAILABLE).await?;
        return Ok(Some(line));
    }
    client.write_all(&answer).await?;
    Ok(None)
}

/// The S3 server's address, from the endpoint in `AWS_ENDPOINT`.
fn upstream() -> SocketAddr {
    let endpoint = std::env::var("AWS_ENDPOINT").expect("AWS_ENDPOINT names the S3 server");
    let host = endpoint
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    host.parse().expect("AWS_ENDPOINT is http://IP:PORT")
}

/// Options of a bucket reached through `proxy`, retrying at most `retries` times for
/// at most `timeout_s` seconds.
fn through(proxy: &Proxy, retries: u32, timeout_s: u32) -> LanceOptions {
    let storage_options: HashMap<String, String> = [
        ("aws_endpoint", format!("http://{}", proxy.addr)),
        ("client_max_retries", retries.to_string()),
        ("client_retry_timeout", timeout_s.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    LanceOptions {
        flush_threshold: 0,
        storage_options,
        ..LanceOptions::default()
    }
}

fn batch(from: i64, n: i64) -> Vec<Record> {
    (from..from + n)
        .map(|i| record! {"id" => i, "text" => format!("record {i}")})
        .collect()
}

#[test]
fn on_s3_server_errors_are_retried_and_nothing_is_lost_or_duplicated() {
    if !s3_configured() {
        return;
    }
    rt().block_on(async {
        for faults in [Faults::EveryOtherUnsent, Faults::EveryOtherAnswerLost] {
            let proxy = Proxy::start(upstream()).await;
            let uri = Store::S3.uri();
            let opts = through(&proxy, 3, 30);
            proxy.set(faults);
            let mut b = LanceBucket::open(&uri, opts.clone()).await.unwrap();
            for k in 0..4 {
                b.put_batch(batch(k * 50, 50)).unwrap();
                b.flush().await.unwrap();
            }
            assert_eq!(b.read(0, 1000).await.unwrap(), batch(0, 200), "{faults:?}");
            drop(b);
            let b = LanceBucket::open(&uri, opts).await.unwrap();
            assert_eq!(b.read(0, 1000).await.unwrap(), batch(0, 200), "{faults:?}");
            assert!(proxy.injected() > 10, "{faults:?}: {}", proxy.injected());
            // the hard case was met: a manifest put that landed, its answer lost
            assert!(proxy.faulted_a_manifest_put(), "{faults:?}");
            // and without the proxy, straight from the server
            let direct = LanceBucket::open(&uri, LanceOptions::default())
                .await
                .unwrap();
            assert_eq!(direct.read(0, 1000).await.unwrap(), batch(0, 200));
        }
    });
}

#[test]
fn on_s3_errors_that_outlast_the_retries_name_the_uri_and_the_operation() {
    if !s3_configured() {
        return;
    }
    rt().block_on(async {
        let proxy = Proxy::start(upstream()).await;
        let uri = Store::S3.uri();
        let opts = through(&proxy, 2, 10);
        let mut b = LanceBucket::open(&uri, opts).await.unwrap();
        b.put_batch(batch(0, 10)).unwrap();
        b.flush().await.unwrap();
        proxy.set(Faults::Always);
        let before = proxy.requests.load(Ordering::SeqCst);
        b.put_batch(batch(10, 10)).unwrap();
        let err = b.flush().await.unwrap_err().to_string();
        // bounded: the first request of the flush, tried by Lance's throttle layer
        // at most 1 + 3 times (it reads 503 as throttling), each by the S3 client at
        // most 1 + client_max_retries times
        let tried = proxy.requests.load(Ordering::SeqCst) - before;
        assert!((3..=(1 + 3) * (1 + 2)).contains(&tried), "{tried}: {err}");
        assert!(err.contains(&uri), "{err}");
        assert!(err.contains("503"), "{err}");
        // the records stay buffered; once the server answers, the flush goes through
        proxy.set(Faults::None);
        b.flush().await.unwrap();
        assert_eq!(b.read(0, 100).await.unwrap(), batch(0, 20));
    });
}

/// `through`, with a lease of `term_ms`.
fn leased(proxy: &Proxy, term_ms: u64) -> LanceOptions {
    LanceOptions {
        lease_term: std::time::Duration::from_millis(term_ms),
        ..through(proxy, 1, 2)
    }
}

/// A store that answers nothing for longer than the lease's term, and no other
/// writer: the writer is suspended (it writes nothing), then takes its lease back and
/// goes on, without a reopen.
#[test]
fn on_s3_a_lease_that_expired_in_an_outage_is_taken_back_when_no_one_took_it() {
    if !s3_configured() {
        return;
    }
    rt().block_on(async {
        let proxy = Proxy::start(upstream()).await;
        let uri = Store::S3.uri();
        let mut b = LanceBucket::open(&uri, leased(&proxy, 1000)).await.unwrap();
        b.put_batch(batch(0, 10)).unwrap();
        b.flush().await.unwrap();
        proxy.set(Faults::Always);
        tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
        let err = b.ensure_writer().await.unwrap_err();
        assert!(
            matches!(err, persisting_lance::Error::LeaseSuspended { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("suspended"), "{err}");
        assert!(err.to_string().contains("_lease"), "{err}");
        proxy.set(Faults::None);
        b.ensure_writer().await.unwrap();
        b.put_batch(batch(10, 10)).unwrap();
        b.flush().await.unwrap();
        let fresh = LanceBucket::open(&uri, LanceOptions::default())
            .await
            .unwrap();
        assert_eq!(fresh.read(0, 100).await.unwrap(), batch(0, 20));
    });
}

/// A store that fails once half of the lease's term has passed, before its expiry:
/// the writer does not wait for the renewal (it runs behind it) and goes on; once the
/// store answers again a renewal goes through, and the lease holds past its first
/// expiry.
#[test]
fn on_s3_a_renewal_that_fails_before_the_expiry_neither_stops_nor_holds_up_the_writer() {
    if !s3_configured() {
        return;
    }
    rt().block_on(async {
        let proxy = Proxy::start(upstream()).await;
        let uri = Store::S3.uri();
        let mut b = LanceBucket::open(&uri, leased(&proxy, 2000)).await.unwrap();
        b.put_batch(batch(0, 10)).unwrap();
        b.flush().await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        proxy.set(Faults::Always);
        let asked = std::time::Instant::now();
        b.ensure_writer().await.unwrap();
        assert!(
            asked.elapsed() < std::time::Duration::from_millis(200),
            "the writer waited {:?} for a renewal",
            asked.elapsed()
        );
        b.put_batch(batch(10, 10)).unwrap();
        proxy.set(Faults::None);
        // past the renewal gap, the next look starts a renewal that goes through
        tokio::time::sleep(persisting_lance::RENEW_GAP).await;
        b.ensure_writer().await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
        // past the first lease's expiry: renewed, so the writer goes on
        b.ensure_writer().await.unwrap();
        b.flush().await.unwrap();
        let fresh = LanceBucket::open(&uri, LanceOptions::default())
            .await
            .unwrap();
        assert_eq!(fresh.read(0, 100).await.unwrap(), batch(0, 20));
    });
}

/// The same outage, and meanwhile another writer (not behind the proxy) takes the
/// expired lease over and writes: the first writer stops for good, naming it.
#[test]
fn on_s3_a_lease_taken_over_during_an_outage_is_lost_for_good() {
    if !s3_configured() {
        return;
    }
    rt().block_on(async {
        let proxy = Proxy::start(upstream()).await;
        let uri = Store::S3.uri();
        let mut first = LanceBucket::open(&uri, leased(&proxy, 1000)).await.unwrap();
        first.put_batch(batch(0, 10)).unwrap();
        first.flush().await.unwrap();
        proxy.set(Faults::Always);
        tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
        assert!(first.ensure_writer().await.is_err());
        let second_opts = LanceOptions {
            flush_threshold: 0,
            lease_term: std::time::Duration::from_millis(1000),
            writer_id: Some("the-second-writer".to_owned()),
            ..LanceOptions::default()
        };
        let mut second = LanceBucket::open(&uri, second_opts).await.unwrap();
        second.put_batch(batch(10, 10)).unwrap();
        second.flush().await.unwrap();
        // renewed by the second writer: the first's lease object is removed as old
        tokio::time::sleep(std::time::Duration::from_millis(600)).await;
        second.put_batch(batch(20, 10)).unwrap();
        second.flush().await.unwrap();
        proxy.set(Faults::None);
        let err = first.ensure_writer().await.unwrap_err();
        assert!(
            matches!(err, persisting_lance::Error::LeaseLost { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("the-second-writer"), "{err}");
        let again = first.ensure_writer().await.unwrap_err();
        assert!(
            matches!(again, persisting_lance::Error::LeaseLost { .. }),
            "{again}"
        );
        let fresh = LanceBucket::open(&uri, LanceOptions::default())
            .await
            .unwrap();
        assert_eq!(fresh.read(0, 100).await.unwrap(), batch(0, 30));
    });
}

/// A server that hangs (reads requests, answers nothing): a flush fails within the
/// request timeout and the retry bound instead of waiting for the server, names the
/// URI, and keeps its records for the flush that goes through once it answers.
#[test]
fn on_s3_a_hung_server_is_an_error_within_the_timeouts_not_a_wait() {
    if !s3_configured() {
        return;
    }
    rt().block_on(async {
        let proxy = Proxy::start(upstream()).await;
        let uri = Store::S3.uri();
        let mut opts = through(&proxy, 1, 2);
        opts.storage_options
            .insert("timeout".to_owned(), "1s".to_owned());
        let mut b = LanceBucket::open(&uri, opts).await.unwrap();
        b.put_batch(batch(0, 10)).unwrap();
        b.flush().await.unwrap();
        proxy.set(Faults::Hang);
        b.put_batch(batch(10, 10)).unwrap();
        let started = std::time::Instant::now();
        let err = b.flush().await.unwrap_err().to_string();
        let took = started.elapsed();
        assert!(took < std::time::Duration::from_secs(30), "{took:?}: {err}");
        assert!(err.contains(&uri), "{err}");
        proxy.set(Faults::None);
        b.flush().await.unwrap();
        assert_eq!(b.read(0, 100).await.unwrap(), batch(0, 20));
    });
}
