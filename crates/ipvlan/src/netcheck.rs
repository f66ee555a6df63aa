//! Checks over real namespaces, shared by `ipvlan demo` and the integration tests:
//! running code inside a named namespace, and moving bytes over TCP between two
//! namespaces with every byte verified.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------
// Namespaces from Rust threads
// ---------------------------------------------------------------------------------------

/// Runs `f` on a new thread that has entered network namespace `ns` (via
/// `/run/netns/NS`), and returns its result. Only that thread changes namespace.
pub fn in_netns<T, F>(ns: &str, f: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    spawn_in_netns(ns, f)
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// Like [`in_netns`] but returns the join handle.
pub fn spawn_in_netns<T, F>(ns: &str, f: F) -> thread::JoinHandle<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let path = format!("/run/netns/{ns}");
    thread::spawn(move || {
        let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
            .unwrap_or_else(|e| panic!("setns {path}: {e}"));
        f()
    })
}

// ---------------------------------------------------------------------------------------
// TCP transfer
// ---------------------------------------------------------------------------------------

/// The deterministic pseudo-random byte stream a transfer sends (xorshift64*).
struct Pattern(u64);

impl Pattern {
    fn new(seed: u64) -> Self {
        Pattern(seed | 1)
    }
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let v = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// FNV-1a 64, fed incrementally.
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn update(&mut self, data: &[u8]) {
        for &b in data {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

/// Moves `mib` MiB over TCP from namespace `from_ns` to a listener on `to_addr` in
/// namespace `to_ns`, and checks that every byte arrived intact and in order (byte count,
/// byte-by-byte comparison with the expected pattern and an FNV-1a hash of each side).
/// Returns `Err(description)` on any failure (connect refused, timeout, corruption).
/// Moves `mib` MiB over TCP from namespace `from_ns` to `to_addr` in `to_ns` (names
/// under `/run/netns`), checks every byte, and returns how long the transfer took.
pub fn tcp_transfer(
    from_ns: &str,
    to_ns: &str,
    to_addr: IpAddr,
    mib: usize,
) -> Result<Duration, String> {
    const CHUNK: usize = 64 * 1024;
    let total = mib * 1024 * 1024;
    let seed = 0x1234_5678_9abc_def0 ^ (total as u64);
    let io_timeout = Duration::from_secs(30);

    let started = Instant::now();
    let (port_tx, port_rx) = mpsc::channel::<Result<u16, String>>();
    let receiver = spawn_in_netns(to_ns, move || -> Result<(u64, usize), String> {
        let listener = match TcpListener::bind(SocketAddr::new(to_addr, 0)) {
            Ok(l) => l,
            Err(e) => {
                let msg = format!("bind {to_addr}: {e}");
                let _ = port_tx.send(Err(msg.clone()));
                return Err(msg);
            }
        };
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let _ = port_tx.send(Ok(port));
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let deadline = Instant::now() + io_timeout;
        let mut conn = loop {
            match listener.accept() {
                Ok((c, _)) => break c,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline {
                        return Err("receiver: no connection within 30 s".into());
                    }
                    thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(format!("accept: {e}")),
            }
        };
        conn.set_nonblocking(false).map_err(|e| e.to_string())?;
        conn.set_read_timeout(Some(io_timeout))
            .map_err(|e| e.to_string())?;
        let mut expect = Pattern::new(seed);
        let mut want = vec![0u8; CHUNK];
        let mut want_len = 0usize; // valid bytes in `want` not yet compared
        let mut want_off = 0usize;
        let mut buf = vec![0u8; CHUNK];
        let mut got = 0usize;
        let mut hash = Fnv::new();
        loop {
            let n = match conn.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("receiver: read after {got} bytes: {e}")),
            };
            hash.update(&buf[..n]);
            let mut i = 0;
            while i < n {
                if want_off == want_len {
                    expect.fill(&mut want);
                    want_len = CHUNK;
                    want_off = 0;
                }
                let k = (n - i).min(want_len - want_off);
                if buf[i..i + k] != want[want_off..want_off + k] {
                    let pos = (0..k)
                        .find(|&j| buf[i + j] != want[want_off + j])
                        .unwrap_or(0);
                    return Err(format!(
                        "receiver: corrupted stream at byte {}",
                        got + i + pos
                    ));
                }
                i += k;
                want_off += k;
            }
            got += n;
            if got > total {
                return Err(format!("receiver: more than {total} bytes"));
            }
        }
        Ok((hash.0, got))
    });

    let port = match port_rx.recv_timeout(io_timeout) {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => {
            let _ = receiver.join();
            return Err(e);
        }
        Err(_) => return Err("receiver thread did not start".into()),
    };
    let dest = SocketAddr::new(to_addr, port);
    let sender = spawn_in_netns(from_ns, move || -> Result<u64, String> {
        let mut conn = None;
        let mut last = String::new();
        for _ in 0..10 {
            match TcpStream::connect_timeout(&dest, Duration::from_secs(5)) {
                Ok(c) => {
                    conn = Some(c);
                    break;
                }
                Err(e) => {
                    last = e.to_string();
                    thread::sleep(Duration::from_millis(300));
                }
            }
        }
        let mut conn = conn.ok_or_else(|| format!("sender: connect {dest}: {last}"))?;
        conn.set_write_timeout(Some(io_timeout))
            .map_err(|e| e.to_string())?;
        let mut pat = Pattern::new(seed);
        let mut buf = vec![0u8; CHUNK];
        let mut hash = Fnv::new();
        let mut sent = 0usize;
        while sent < total {
            pat.fill(&mut buf);
            let k = (total - sent).min(CHUNK);
            hash.update(&buf[..k]);
            conn.write_all(&buf[..k])
                .map_err(|e| format!("sender: write after {sent} bytes: {e}"))?;
            sent += k;
        }
        conn.shutdown(std::net::Shutdown::Write)
            .map_err(|e| format!("sender: shutdown: {e}"))?;
        // Wait for the receiver's close so the data is known to have left.
        conn.set_read_timeout(Some(io_timeout))
            .map_err(|e| e.to_string())?;
        let _ = conn.read(&mut [0u8; 1]);
        Ok(hash.0)
    });

    let sent = sender
        .join()
        .map_err(|_| "sender thread panicked".to_string())?;
    let received = receiver
        .join()
        .map_err(|_| "receiver thread panicked".to_string())?;
    let sent_hash = sent?;
    let (recv_hash, got) = received?;
    if got != total {
        return Err(format!("received {got} bytes of {total}"));
    }
    if recv_hash != sent_hash {
        return Err(format!(
            "hash mismatch: sent {sent_hash:016x}, got {recv_hash:016x}"
        ));
    }
    Ok(started.elapsed())
}
