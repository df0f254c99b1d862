// Copyright 2026 The gpu-sidecar Authors
//
// Licensed under the Apache License, Version 2.0 (the "License");
// you may not use this file except in compliance with the License.
// You may obtain a copy of the License at
//
//     http://www.apache.org/licenses/LICENSE-2.0
//
// Unless required by applicable law or agreed to in writing, software
// distributed under the License is distributed on an "AS IS" BASIS,
// WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
// See the License for the specific language governing permissions and
// limitations under the License.

//! The connection guard in front of tiny_http, run by the `health-accept` thread and one
//! short-lived thread per connection.
//!
//! tiny_http on its own reads a header line of any length into memory, keeps a thread per
//! connection for as long as the client keeps it open, and never times out a client that sends
//! nothing: a few misbehaving clients on the health port could exhaust the sidecar's memory or
//! threads. The guard owns the public listening socket and bounds all of that: at most
//! [`MAX_CONNECTIONS`] at a time, the request head within [`HEAD_LIMIT`] bytes and
//! [`HEAD_TIMEOUT`], no request bodies, one request per connection. A head that passes is handed
//! to tiny_http over a private Unix socket, with `Connection: close`, and the answer is relayed
//! back.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Connections served at once; more are answered 503 and closed at once.
pub const MAX_CONNECTIONS: usize = 1024;
/// The largest request head (request line and headers) accepted.
pub const HEAD_LIMIT: usize = 8 * 1024;
/// How long a client has to send its whole request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a write to the client, or the wait for tiny_http's answer, may block.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// How long shutdown waits for the connection threads once their sockets are cut.
const CONNECTIONS_STOP_TIMEOUT: Duration = Duration::from_secs(2);
/// Stack of the per-connection threads, which only copy bytes.
const CONNECTION_STACK_BYTES: usize = 128 * 1024;

/// The prefix of the private folders in the temp dir.
const BACKEND_FOLDER_PREFIX: &str = "gpu-sidecar-health-";
/// The file in each private folder that its sidecar holds locked for as long as it runs.
const OWNER_LOCK: &str = "owner.lock";
/// How old a private folder without a lock (a sidecar of an earlier release, or one killed
/// between making the folder and locking it) must be before it counts as left behind.
const UNLOCKED_FOLDER_AGE: Duration = Duration::from_secs(60);

/// The private folder of a running sidecar's health socket: removed when dropped, and locked
/// meanwhile so that no other sidecar takes it for one left behind.
#[derive(Debug)]
pub struct BackendFolder {
    _lock: std::fs::File,
    _folder: tempfile::TempDir,
}

/// The private socket on which tiny_http listens, in a new folder only this user can enter
/// (removed with the returned guard). Folders left by killed sidecars are removed first.
pub fn backend_listener() -> io::Result<(UnixListener, PathBuf, BackendFolder)> {
    remove_stale_backend_folders(&std::env::temp_dir());
    let folder = tempfile::Builder::new()
        .prefix(BACKEND_FOLDER_PREFIX)
        .tempdir()?;
    // Locked under another name, then renamed into place (the lock goes with the file): a
    // sidecar starting at the same moment sees no lock file (a new folder, left alone) or a
    // held one, never a free lock or a socket that refuses between its bind and its listen.
    let unlocked = folder.path().join(format!("{OWNER_LOCK}.new"));
    let lock = std::fs::File::create(&unlocked)?;
    lock.lock()?;
    std::fs::rename(&unlocked, folder.path().join(OWNER_LOCK))?;
    let path = folder.path().join("health.sock");
    let listener = UnixListener::bind(&path)?;
    Ok((
        listener,
        path,
        BackendFolder {
            _lock: lock,
            _folder: folder,
        },
    ))
}

/// Removes the private folders of sidecars that were killed (their lock is free, the kernel
/// having released it with the process); folders of live sidecars, and anything not ours,
/// are left alone.
fn remove_stale_backend_folders(temp: &Path) {
    let Ok(entries) = std::fs::read_dir(temp) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with(BACKEND_FOLDER_PREFIX) {
            continue;
        }
        if left_behind(&entry.path()) && std::fs::remove_dir_all(entry.path()).is_ok() {
            log::debug!(
                "removed {} left by a killed sidecar",
                entry.path().display()
            );
        }
    }
}

/// Whether the private folder `folder` belongs to no running sidecar: its lock can be taken,
/// or, without a lock file, it is old and nobody accepts on its socket.
fn left_behind(folder: &Path) -> bool {
    match std::fs::File::open(folder.join(OWNER_LOCK)) {
        // Taken, the lock is let go when the file closes: a folder of a dead sidecar.
        Ok(lock) => lock.try_lock().is_ok(),
        Err(_) => {
            let old = std::fs::metadata(folder)
                .and_then(|m| m.modified())
                .is_ok_and(|made| made.elapsed().unwrap_or_default() >= UNLOCKED_FOLDER_AGE);
            let refused = matches!(
                UnixStream::connect(folder.join("health.sock")),
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused
            );
            old && refused
        }
    }
}

/// Accepts connections on `listener` until `stopping` is set (and a connection wakes the
/// loop), serving each on its own thread, at most `max_connections` at once. On the way out
/// it cuts the connections still open and waits for their threads.
pub fn accept_loop(
    listener: &TcpListener,
    backend: &Path,
    stopping: &AtomicBool,
    max_connections: usize,
) -> Result<(), String> {
    let connections = Arc::new(OpenConnections::default());
    // Each connection thread holds a clone; when the last is dropped, all have ended.
    let (thread_alive, all_threads_ended) = crossbeam_channel::bounded::<()>(0);
    for stream in listener.incoming() {
        if stopping.load(Ordering::SeqCst) {
            break;
        }
        let mut stream = match stream {
            Ok(stream) => stream,
            Err(e) => {
                // Out of file descriptors, or a connection reset before it was accepted:
                // this client's problem, or a passing one. Pause so a persistent error does
                // not spin.
                log::debug!("health endpoint: accept failed: {e}");
                thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
        if connections.count() >= max_connections {
            answer_directly(&mut stream, 503, "Service Unavailable", "BUSY");
            continue;
        }
        let Some(slot) = connections.register(&stream) else {
            answer_directly(&mut stream, 503, "Service Unavailable", "BUSY");
            continue;
        };
        let backend = backend.to_path_buf();
        let alive = thread_alive.clone();
        let spawned = thread::Builder::new()
            .name("health-conn".to_string())
            .stack_size(CONNECTION_STACK_BYTES)
            .spawn(move || {
                let _slot = slot;
                let _alive = alive;
                serve_connection(stream, &backend);
            });
        if let Err(e) = spawned {
            log::warn!("health endpoint: cannot start a connection thread: {e}");
        }
    }
    let cut = connections.shut_down_all();
    drop(thread_alive);
    if all_threads_ended.recv_timeout(CONNECTIONS_STOP_TIMEOUT)
        == Err(crossbeam_channel::RecvTimeoutError::Timeout)
    {
        log::warn!(
            "health endpoint: {} connection thread(s) did not end within {}",
            connections.count(),
            humantime::format_duration(CONNECTIONS_STOP_TIMEOUT)
        );
    } else if cut > 0 {
        log::debug!("health endpoint: closed {cut} open connection(s)");
    }
    Ok(())
}

/// Wakes the accept loop so that it sees `stopping`: connects to the listening address
/// (loopback when it listens on every address).
pub fn wake(addr: SocketAddr) {
    let mut target = addr;
    if target.ip().is_unspecified() {
        target.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let _ = TcpStream::connect_timeout(&target, Duration::from_secs(1));
}

/// The connections being served, each by a clone of its socket, so that shutdown can cut
/// them rather than wait out their timeouts.
#[derive(Debug, Default)]
struct OpenConnections {
    sockets: Mutex<HashMap<u64, TcpStream>>,
    next_id: AtomicU64,
}

impl OpenConnections {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, TcpStream>> {
        self.sockets.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn count(&self) -> usize {
        self.lock().len()
    }

    /// Registers `stream` until the returned slot is dropped; `None` if the socket cannot
    /// be cloned (out of file descriptors).
    fn register(self: &Arc<Self>, stream: &TcpStream) -> Option<ConnectionSlot> {
        let clone = stream.try_clone().ok()?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, clone);
        Some(ConnectionSlot {
            id,
            connections: Arc::clone(self),
        })
    }

    /// Shuts down every open connection's socket; returns how many.
    fn shut_down_all(&self) -> usize {
        let sockets = self.lock();
        for socket in sockets.values() {
            let _ = socket.shutdown(Shutdown::Both);
        }
        sockets.len()
    }
}

/// A registered connection; unregistered when dropped.
struct ConnectionSlot {
    id: u64,
    connections: Arc<OpenConnections>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.connections.lock().remove(&self.id);
    }
}

/// What became of reading a request head.
#[derive(Debug, PartialEq, Eq)]
enum Head {
    /// A complete head: request line and headers, without the blank line.
    Complete(Vec<u8>),
    TooLarge,
    TimedOut,
    /// The client closed or the connection failed before a whole head arrived.
    Gone,
}

/// Reads one request head, refusing what is too large, too slow or carries a body, and
/// relays tiny_http's answer to it.
fn serve_connection(mut client: TcpStream, backend: &Path) {
    let _ = client.set_write_timeout(Some(IO_TIMEOUT));
    let _ = client.set_nodelay(true);
    let head = match read_head(&mut client, Instant::now() + HEAD_TIMEOUT) {
        Head::Complete(head) => head,
        Head::TooLarge => {
            return answer_directly(
                &mut client,
                431,
                "Request Header Fields Too Large",
                "REQUEST_HEADER_FIELDS_TOO_LARGE",
            )
        }
        Head::TimedOut => return answer_directly(&mut client, 408, "Request Timeout", "TIMEOUT"),
        Head::Gone => return,
    };
    let Some(forwarded) = rewrite_head(&head) else {
        return answer_directly(
            &mut client,
            413,
            "Content Too Large",
            "REQUEST_BODY_NOT_ACCEPTED",
        );
    };
    if let Err(e) = relay(&mut client, backend, &forwarded) {
        log::debug!("health endpoint: relaying a request failed: {e}");
    }
    let _ = client.shutdown(Shutdown::Both);
}

/// Reads until the blank line that ends a request head, within `limit` bytes and by
/// `deadline`.
fn read_head(client: &mut impl TimedRead, deadline: Instant) -> Head {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            return Head::TimedOut;
        };
        if client
            .set_timeout(left.max(Duration::from_millis(1)))
            .is_err()
        {
            return Head::Gone;
        }
        let read = match client.read(&mut chunk) {
            Ok(0) => return Head::Gone,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Head::TimedOut
            }
            Err(_) => return Head::Gone,
        };
        // Look for the end from just before the new bytes: it may straddle two reads.
        let search_from = head.len().saturating_sub(3);
        head.extend_from_slice(&chunk[..read]);
        if let Some(end) = find(&head[search_from..], b"\r\n\r\n") {
            let end = search_from + end;
            if end > HEAD_LIMIT {
                return Head::TooLarge;
            }
            head.truncate(end);
            return Head::Complete(head);
        }
        if head.len() > HEAD_LIMIT {
            return Head::TooLarge;
        }
    }
}

/// The head as tiny_http gets it: the same request line and headers, but `Connection: close`.
/// `None` when the request announces a body, which no endpoint here accepts.
fn rewrite_head(head: &[u8]) -> Option<Vec<u8>> {
    let mut forwarded = Vec::with_capacity(head.len() + 24);
    for (index, line) in head.split(|b| *b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if index > 0 {
            let name_end = line.iter().position(|b| *b == b':').unwrap_or(line.len());
            let name = &line[..name_end];
            let value = line.get(name_end + 1..).unwrap_or_default().trim_ascii();
            if name.eq_ignore_ascii_case(b"connection") {
                continue;
            }
            if name.eq_ignore_ascii_case(b"transfer-encoding")
                || (name.eq_ignore_ascii_case(b"content-length") && value != b"0")
            {
                return None;
            }
        }
        forwarded.extend_from_slice(line);
        forwarded.extend_from_slice(b"\r\n");
    }
    forwarded.extend_from_slice(b"Connection: close\r\n\r\n");
    Some(forwarded)
}

/// Sends `head` to tiny_http and copies its answer to the client.
fn relay(client: &mut TcpStream, backend: &Path, head: &[u8]) -> io::Result<()> {
    let mut upstream = UnixStream::connect(backend)?;
    upstream.set_read_timeout(Some(IO_TIMEOUT))?;
    upstream.set_write_timeout(Some(IO_TIMEOUT))?;
    upstream.write_all(head)?;
    io::copy(&mut upstream, client)?;
    client.flush()
}

/// Answers with `status` and a short plain-text body, and closes.
fn answer_directly(client: &mut TcpStream, status: u16, reason: &str, body: &str) {
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = client.write_all(response.as_bytes());
    let _ = client.shutdown(Shutdown::Both);
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// A stream whose reads can be given a timeout (a trait so the head reader can be tested on
/// plain bytes).
trait TimedRead: Read {
    fn set_timeout(&mut self, timeout: Duration) -> io::Result<()>;
}

impl TimedRead for TcpStream {
    fn set_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(timeout))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes delivered in the given pieces, then end of stream.
    struct Pieces(Vec<Vec<u8>>);

    impl Read for Pieces {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0.is_empty() {
                return Ok(0);
            }
            let piece = self.0.remove(0);
            buf[..piece.len()].copy_from_slice(&piece);
            Ok(piece.len())
        }
    }

    impl TimedRead for Pieces {
        fn set_timeout(&mut self, _: Duration) -> io::Result<()> {
            Ok(())
        }
    }

    fn read(pieces: &[&[u8]]) -> Head {
        let mut stream = Pieces(pieces.iter().map(|p| p.to_vec()).collect());
        read_head(&mut stream, Instant::now() + Duration::from_secs(5))
    }

    /// Reads what the server sends until it closes.
    fn answer(stream: &mut TcpStream) -> String {
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut text = String::new();
        let _ = stream.read_to_string(&mut text);
        text
    }

    #[test]
    fn connections_beyond_the_limit_are_busy_and_open_ones_are_cut_at_shutdown() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stopping = Arc::new(AtomicBool::new(false));
        let acceptor = {
            let stopping = Arc::clone(&stopping);
            thread::spawn(move || accept_loop(&listener, Path::new("/nonexistent"), &stopping, 2))
        };
        // Two idle connections fill the limit; they are accepted in order, so the third
        // finds it full.
        let mut idle: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(addr).unwrap()).collect();
        let mut third = TcpStream::connect(addr).unwrap();
        assert!(answer(&mut third).starts_with("HTTP/1.1 503 "));
        stopping.store(true, Ordering::SeqCst);
        wake(addr);
        acceptor.join().unwrap().unwrap();
        // Cut, not left to time out (which would have answered 408).
        for client in &mut idle {
            assert_eq!(answer(client), "");
        }
    }

    #[test]
    fn only_folders_whose_owner_is_gone_are_removed() {
        let temp = tempfile::tempdir().unwrap();
        let folder = |name: &str| {
            let path = temp.path().join(name);
            std::fs::create_dir(&path).unwrap();
            path
        };
        let dead = folder(&format!("{BACKEND_FOLDER_PREFIX}dead"));
        let live = folder(&format!("{BACKEND_FOLDER_PREFIX}live"));
        // Locked, and its socket not listening yet (between bind and listen): still live.
        let starting = folder(&format!("{BACKEND_FOLDER_PREFIX}starting"));
        // Made a moment ago, not yet locked: left alone.
        let new = folder(&format!("{BACKEND_FOLDER_PREFIX}new"));
        let other = folder("someone-else");
        std::fs::File::create(dead.join(OWNER_LOCK)).unwrap();
        drop(UnixListener::bind(dead.join("health.sock")).unwrap());
        let live_lock = std::fs::File::create(live.join(OWNER_LOCK)).unwrap();
        live_lock.lock().unwrap();
        let _serving = UnixListener::bind(live.join("health.sock")).unwrap();
        let starting_lock = std::fs::File::create(starting.join(OWNER_LOCK)).unwrap();
        starting_lock.lock().unwrap();
        drop(UnixListener::bind(starting.join("health.sock")).unwrap());
        drop(UnixListener::bind(new.join("health.sock")).unwrap());
        drop(UnixListener::bind(other.join("health.sock")).unwrap());
        remove_stale_backend_folders(temp.path());
        assert!(!dead.exists());
        assert!(live.exists());
        assert!(starting.exists());
        assert!(new.exists());
        assert!(other.exists());
    }

    #[test]
    fn a_head_split_across_reads_is_found() {
        assert_eq!(
            read(&[b"GET /health HTTP/1.1\r\nHost: x\r", b"\n\r", b"\nextra"]),
            Head::Complete(b"GET /health HTTP/1.1\r\nHost: x".to_vec())
        );
        assert_eq!(read(&[b"GET /health HTTP/1.1\r\n"]), Head::Gone);
    }

    #[test]
    fn an_oversized_head_is_refused() {
        let header = vec![b'a'; 1000];
        let pieces: Vec<&[u8]> = std::iter::repeat_n(header.as_slice(), 10).collect();
        assert_eq!(read(&pieces), Head::TooLarge);
    }

    #[test]
    fn heads_are_forwarded_with_connection_close_and_bodies_refused() {
        let forwarded =
            rewrite_head(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: keep-alive").unwrap();
        assert_eq!(
            forwarded,
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        );
        assert!(rewrite_head(b"GET / HTTP/1.1\r\nContent-Length: 0").is_some());
        assert!(rewrite_head(b"POST / HTTP/1.1\r\nContent-Length: 10").is_none());
        assert!(rewrite_head(b"POST / HTTP/1.1\r\ntransfer-encoding: chunked").is_none());
    }
}
