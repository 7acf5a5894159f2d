//! How kiln takes HTTP connections: an accept loop over hyper's HTTP/1 server with the limits a
//! public service needs, so that clients which open connections and never finish a request
//! cannot use up the process's file descriptors or keep others out.
//!
//! - A client has `http.header_timeout_secs` to send a request's headers (hyper's header-read
//!   timer, which also runs while a kept-alive connection waits for its next request).
//! - A connection that moves no bytes for `http.idle_timeout_secs` in the middle of a request is
//!   closed.
//! - At most `http.max_connections` connections are served at once, lowered to fit the open-file
//!   limit; beyond that kiln stops accepting until one closes.
//! - While more than half of those are in use, a client address holding
//!   `http.max_connections_per_client` or more gets a 503 at once for further connections, so a
//!   single client cannot take every slot; while kiln is not busy, a client may open more (a
//!   pipeline's burst of requests from one host).
//!
//! Depends on `config` only; `server` hands it the router.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tower_service::Service as _;

use crate::config::HttpSettings;

/// How long running requests may take to finish once kiln is asked to stop.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The answer to a connection beyond its client's share. Sent without reading the request: the
/// client is told at once rather than left waiting.
const TOO_MANY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\n\
retry-after: 5\r\n\
connection: close\r\n\
content-length: 92\r\n\
\r\n\
{\"message\": \"this address has too many open connections to kiln; close some and try again\"}\n";

/// The limits of [`serve`], from the settings and the process's open-file limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Time to send a request's headers.
    pub header_timeout: Duration,
    /// Time without a byte either way before a connection is closed.
    pub idle_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
    /// Connections per client address while more than half of `max_connections` are in use;
    /// `0` for no limit.
    pub per_client: usize,
}

impl Limits {
    /// The configured limits, with `max_connections` lowered to leave a quarter of the
    /// open-file limit (at least 64 descriptors) for everything else kiln opens.
    pub fn new(settings: &HttpSettings) -> Limits {
        let open_files = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .unwrap_or(u64::MAX);
        Limits::fitting(settings, open_files)
    }

    fn fitting(settings: &HttpSettings, open_files: u64) -> Limits {
        let reserve = (open_files / 4).max(64);
        let room = usize::try_from(open_files.saturating_sub(reserve))
            .unwrap_or(usize::MAX)
            .max(1);
        let max_connections = settings.max_connections.clamp(1, room);
        if max_connections < settings.max_connections {
            tracing::warn!(
                configured = settings.max_connections,
                serving = max_connections,
                open_files,
                "http.max_connections is more than the open-file limit allows; raise `ulimit -n` \
                 to serve more connections"
            );
        }
        Limits {
            header_timeout: Duration::from_secs(settings.header_timeout_secs.max(1)),
            idle_timeout: Duration::from_secs(settings.idle_timeout_secs.max(1)),
            max_connections,
            per_client: settings.max_connections_per_client,
        }
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, then stops accepting, lets running
/// requests finish (for up to [`SHUTDOWN_GRACE`]) and returns.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let clients = Arc::new(Clients::default());
    let (stopping, stop) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            () = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of descriptors (EMFILE) or a connection reset before it was taken:
                    // wait a little rather than spin.
                    tracing::warn!(error = %err, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let busy = limits.max_connections - slots.available_permits();
        let share = if busy * 2 > limits.max_connections {
            limits.per_client
        } else {
            0
        };
        let Some(client) = clients.enter(peer.ip(), share) else {
            tokio::spawn(refuse(stream));
            continue;
        };
        let connection = Connection {
            stream,
            last_active: Arc::new(AtomicU64::new(0)),
            opened: Instant::now(),
            _slot: slot,
            _client: client,
        };
        tokio::spawn(serve_connection(
            connection,
            peer,
            router.clone(),
            limits,
            stop.clone(),
        ));
    }
    drop(listener);
    let _ = stopping.send(true);
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(SHUTDOWN_GRACE, slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("some connections were still open when kiln stopped");
    }
}

/// Tells a client over its share so, and closes.
async fn refuse(mut stream: TcpStream) {
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        stream.write_all(TOO_MANY).await?;
        stream.shutdown().await
    })
    .await;
}

/// One connection: hyper's HTTP/1 with the header timeout, closed when idle too long, and
/// asked to finish its current request and close when kiln stops.
async fn serve_connection(
    connection: Connection,
    peer: SocketAddr,
    router: Router,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) {
    let activity = Activity {
        last_active: connection.last_active.clone(),
        opened: connection.opened,
    };
    let service =
        hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            router.clone().call(request.map(axum::body::Body::new))
        });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let served = http
        .serve_connection(TokioIo::new(connection), service)
        .with_upgrades();
    tokio::pin!(served);
    let mut check = tokio::time::interval((limits.idle_timeout / 4).min(Duration::from_secs(5)));
    let mut stopping = *stop.borrow();
    if stopping {
        served.as_mut().graceful_shutdown();
    }
    loop {
        tokio::select! {
            result = served.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!(%peer, error = %err, "connection ended with an error");
                }
                return;
            }
            changed = stop.changed(), if !stopping => {
                stopping = true;
                if changed.is_ok() {
                    served.as_mut().graceful_shutdown();
                }
            }
            _ = check.tick() => {
                if activity.idle() >= limits.idle_timeout {
                    tracing::debug!(%peer, "closing a connection idle for too long");
                    return;
                }
            }
        }
    }
}

/// How many connections each client address holds.
#[derive(Debug, Default)]
struct Clients {
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl Clients {
    /// Counts a connection of `address`, unless it holds `limit` already (`0`: no limit).
    fn enter(self: &Arc<Self>, address: IpAddr, limit: usize) -> Option<ClientGuard> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(address).or_insert(0);
        if limit != 0 && *count >= limit {
            return None;
        }
        *count += 1;
        Some(ClientGuard {
            clients: self.clone(),
            address,
        })
    }
}

/// One counted connection of a client; dropping it uncounts it.
#[derive(Debug)]
struct ClientGuard {
    clients: Arc<Clients>,
    address: IpAddr,
}

impl Drop for ClientGuard {
    fn drop(&mut self) {
        let mut open = self.clients.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.address);
            }
        }
    }
}

/// A client's socket, holding its connection slot and its client's count for as long as it is
/// open (also after a WebSocket upgrade), and noting when bytes last moved.
#[derive(Debug)]
struct Connection {
    stream: TcpStream,
    /// Milliseconds after `opened` at which bytes last moved.
    last_active: Arc<AtomicU64>,
    opened: Instant,
    _slot: OwnedSemaphorePermit,
    _client: ClientGuard,
}

impl Connection {
    fn touch(&self) {
        let millis = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_active.store(millis, Ordering::Relaxed);
    }
}

/// Reads how long a [`Connection`] has been quiet.
#[derive(Debug)]
struct Activity {
    last_active: Arc<AtomicU64>,
    opened: Instant,
}

impl Activity {
    fn idle(&self) -> Duration {
        let last = Duration::from_millis(self.last_active.load(Ordering::Relaxed));
        self.opened.elapsed().saturating_sub(last)
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.touch();
        }
        polled
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(written)) if written > 0) {
            self.touch();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(written)) if written > 0) {
            self.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_fit_the_open_file_limit() {
        let settings = HttpSettings::default();
        assert_eq!(Limits::fitting(&settings, 1 << 20).max_connections, 1024);
        assert_eq!(Limits::fitting(&settings, 256).max_connections, 192);
        assert_eq!(Limits::fitting(&settings, 4096).max_connections, 1024);
        assert_eq!(Limits::fitting(&settings, 10).max_connections, 1);
    }

    #[test]
    fn each_address_gets_its_share() {
        let clients = Arc::new(Clients::default());
        let a = IpAddr::from([127, 0, 0, 2]);
        let b = IpAddr::from([127, 0, 0, 3]);
        let first = clients.enter(a, 2).expect("first");
        let second = clients.enter(a, 2).expect("second");
        assert!(clients.enter(a, 2).is_none(), "a third is refused");
        assert!(clients.enter(b, 2).is_some(), "another address has its own");
        drop(first);
        assert!(
            clients.enter(a, 2).is_some(),
            "a closed one frees its place"
        );
        drop(second);
        assert!(clients.enter(a, 0).is_some(), "0 is no limit");
    }

    #[test]
    fn the_refusal_is_a_whole_response() {
        let text = std::str::from_utf8(TOO_MANY).expect("ascii");
        let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{text}"
        );
        serde_json::from_str::<serde_json::Value>(body).expect("a JSON body");
    }
}
