//! The front door: a thread of its own accepts every connection and serves
//! the probes (`/healthz`, `/readyz`) itself, so a probe never queues
//! behind a storm of webhooks on the server's runtime.
//!
//! Each new connection is looked at (`peek`, nothing is consumed) once its
//! first bytes arrive. A connection whose first request is
//! `GET /healthz` or `GET /readyz` (a kubelet opens one per probe) is
//! served here, on a single-threaded runtime that does nothing else. Every
//! other connection is handed to the server's runtime, where it is served
//! as before. Both serve the same router: a probe connection that goes on
//! to send other requests still gets the right answers, only not on the
//! server's workers.
//!
//! The thread sleeps between connections. When a storm keeps both cores
//! busy, the kernel's scheduler favours a thread that wakes after a sleep
//! over the ones that used their share, so a probe waits for a scheduling
//! slice at most, not for the requests the server's workers have queued.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tracing::{error, warn};

/// How long a new connection may stay silent before it is handed to the
/// server's runtime without being classified (a browser may open one
/// ahead of its first request).
const FIRST_BYTES_WAIT: Duration = Duration::from_millis(500);

/// Accepted connections queued for the server's runtime. Past this, each
/// further one waits in the front door until the server takes one.
const HANDOFF_DEPTH: usize = 1024;

/// The requests served on the front door's thread: a connection whose
/// first bytes are one of these. A partial first read that is only a
/// prefix goes to the server's runtime, which answers it just as well.
const PROBES: &[&[u8]] = &[
    b"GET /healthz ",
    b"GET /healthz?",
    b"GET /readyz ",
    b"GET /readyz?",
];

/// Whether a connection whose first bytes are `head` is a probe.
fn is_probe(head: &[u8]) -> bool {
    PROBES.iter().any(|p| head.starts_with(p))
}

/// The server's side of the front door: an [`axum::serve::Listener`] that
/// yields the connections that are not probes. Dropping it (the server
/// stops accepting) stops the front door's thread and closes the socket.
pub struct FrontDoor {
    handed: mpsc::Receiver<(std::net::TcpStream, SocketAddr)>,
    local: SocketAddr,
}

impl FrontDoor {
    /// Starts the front door's thread on `listener` (already bound), which
    /// serves the probes with `router`.
    pub fn start(listener: std::net::TcpListener, router: Router) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let (tx, handed) = mpsc::channel(HANDOFF_DEPTH);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("quench-front".into())
            .spawn(move || runtime.block_on(accept_loop(listener, local, router, tx)))?;
        Ok(Self { handed, local })
    }
}

impl axum::serve::Listener for FrontDoor {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        loop {
            let Some((stream, addr)) = self.handed.recv().await else {
                // Only if the front door's thread died: nothing more comes.
                error!("the front door stopped: no new connection is accepted");
                std::future::pending::<()>().await;
                continue;
            };
            // Registered with this runtime's reactor from here on.
            match TcpStream::from_std(stream) {
                Ok(s) => return (s, addr),
                Err(e) => warn!(error = %e, %addr, "a connection could not be handed over"),
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// The probes' listener, on the front door's runtime.
struct Probes {
    conns: mpsc::Receiver<(TcpStream, SocketAddr)>,
    local: SocketAddr,
}

impl axum::serve::Listener for Probes {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        match self.conns.recv().await {
            Some(c) => c,
            // The accept loop ended: so does serving probes.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

async fn accept_loop(
    listener: std::net::TcpListener,
    local: SocketAddr,
    router: Router,
    handoff: mpsc::Sender<(std::net::TcpStream, SocketAddr)>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            error!(error = %e, "the front door cannot listen");
            return;
        }
    };
    let (probe_tx, conns) = mpsc::channel(64);
    let probes = Probes { conns, local };
    let probes = tokio::spawn(async move { axum::serve(probes, router).await });
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            // The server stopped accepting (shutdown): so do we.
            () = handoff.closed() => break,
        };
        let (stream, addr) = match accepted {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: the same pause as
                // axum's own accept loop, instead of spinning.
                warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (probe_tx, handoff) = (probe_tx.clone(), handoff.clone());
        tokio::spawn(async move {
            let probe =
                match tokio::time::timeout(FIRST_BYTES_WAIT, first_request_is_probe(&stream)).await
                {
                    Ok(Some(p)) => p,
                    // Closed before a byte, or reset: nothing to serve.
                    Ok(None) => return,
                    Err(_) => false,
                };
            if probe {
                let _ = probe_tx.send((stream, addr)).await;
                return;
            }
            match stream.into_std() {
                Ok(s) => {
                    let _ = handoff.send((s, addr)).await;
                }
                Err(e) => warn!(error = %e, %addr, "a connection could not be handed over"),
            }
        });
    }
    probes.abort();
}

/// Whether the connection's first request is a probe, from its first
/// bytes (peeked: hyper reads them again). A start that is still a prefix
/// of a probe's (a request written in pieces) is looked at again as more
/// arrives. `None` when the peer closed or reset first.
async fn first_request_is_probe(stream: &TcpStream) -> Option<bool> {
    let mut head = [0u8; 16];
    loop {
        let n = stream.peek(&mut head).await.ok().filter(|n| *n > 0)?;
        let seen = &head[..n];
        if is_probe(seen) {
            return Some(true);
        }
        let longest = PROBES.iter().map(|p| p.len()).max().unwrap_or(0);
        let may_become = n < longest && PROBES.iter().any(|p| p.starts_with(seen));
        if !may_become {
            return Some(false);
        }
        // The rest is on its way (the caller bounds the wait).
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_probe_request_line_is_a_probe() {
        assert!(is_probe(b"GET /healthz HTTP/1.1\r\n"));
        assert!(is_probe(b"GET /readyz?verbose HTTP/1.1"));
        assert!(!is_probe(b"GET /healthzz HTTP/1.1"));
        assert!(!is_probe(b"POST /healthz HTTP/1.1"));
        assert!(!is_probe(b"GET /metrics HTTP/1.1"));
        assert!(!is_probe(b"POST /hooks/alertmanager HTTP/1.1"));
        // A first read cut short is not classified.
        assert!(!is_probe(b"GET /heal"));
    }

    /// One raw HTTP/1.1 request on a connection of its own, written in two
    /// pieces 20 ms apart (the first cut inside the path); the time to the
    /// whole answer and its first line.
    fn get(addr: SocketAddr, path: &str) -> (Duration, String) {
        use std::io::{Read, Write};
        let t = std::time::Instant::now();
        let mut c = std::net::TcpStream::connect(addr).expect("connect");
        c.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        c.set_nodelay(true).expect("nodelay");
        let request = format!("GET {path} HTTP/1.1\r\nHost: quench\r\nConnection: close\r\n\r\n");
        let (first, rest) = request.split_at(8);
        c.write_all(first.as_bytes()).expect("request");
        std::thread::sleep(Duration::from_millis(20));
        c.write_all(rest.as_bytes()).expect("request");
        let mut answer = String::new();
        c.read_to_string(&mut answer).expect("answer");
        let first = answer.lines().next().unwrap_or("").to_string();
        (t.elapsed(), first)
    }

    #[test]
    fn a_probe_is_answered_while_every_server_worker_is_busy() {
        use axum::routing::get as route;
        let router = Router::new()
            .route("/healthz", route(|| async { "ok" }))
            .route(
                "/busy",
                // Holds its worker, as a storm's requests hold them all.
                route(|| async {
                    std::thread::sleep(Duration::from_secs(3));
                    "done"
                }),
            );
        let server = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let front = {
            let _in = server.enter();
            FrontDoor::start(listener, router.clone()).expect("front door")
        };
        server.spawn(async move { axum::serve(front, router).await });
        let busy = std::thread::spawn(move || get(addr, "/busy"));
        // The busy request has reached the only worker.
        std::thread::sleep(Duration::from_millis(300));
        let (took, first) = get(addr, "/healthz");
        assert_eq!(first, "HTTP/1.1 200 OK");
        assert!(
            !busy.is_finished(),
            "the probe ({took:?}) was answered only after the busy worker was free"
        );
        let (_, first) = busy.join().expect("busy request");
        assert_eq!(first, "HTTP/1.1 200 OK", "other requests are served too");
        server.shutdown_background();
    }
}
