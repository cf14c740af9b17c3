//! The local control socket behind `sbc ctl`: a Unix stream socket taking one
//! text command per connection and answering with text. Commands run on the
//! signaling thread (it owns the state); this module only carries them.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use crate::error::Error;

/// A command line and where its answer goes.
pub type Request = (String, mpsc::Sender<String>);

/// The listening control socket.
pub struct Server {
    listener: UnixListener,
    path: PathBuf,
}

impl Server {
    /// Binds the socket (replacing a stale one left by a crash).
    ///
    /// # Errors
    /// [`Error::BindControl`] with the bind error.
    pub fn bind(path: &Path) -> Result<Self, Error> {
        if UnixStream::connect(path).is_err() {
            let _ = std::fs::remove_file(path);
        }
        let bind = || -> std::io::Result<UnixListener> {
            let listener = UnixListener::bind(path)?;
            listener.set_nonblocking(true)?;
            Ok(listener)
        };
        let listener = bind().map_err(|source| Error::BindControl { path: path.to_owned(), source })?;
        Ok(Self { listener, path: path.to_owned() })
    }

    /// Serves connections on a thread; commands come out of the receiver.
    #[must_use]
    pub fn spawn(self, shutdown: Arc<AtomicBool>) -> mpsc::Receiver<Request> {
        let (tx, rx) = mpsc::channel();
        let _ = std::thread::Builder::new().name("sbc-control".into()).spawn(move || {
            while !shutdown.load(Ordering::Relaxed) {
                match self.listener.accept() {
                    Ok((s, _)) => serve_one(s, &tx),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(50))
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "control socket accept failed");
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            }
            let _ = std::fs::remove_file(&self.path);
        });
        rx
    }
}

fn serve_one(s: UnixStream, tx: &mpsc::Sender<Request>) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut line = String::new();
    let mut r = BufReader::new(s.take(4096));
    if r.read_line(&mut line).is_err() {
        return;
    }
    let mut s = r.into_inner().into_inner();
    let (rtx, rrx) = mpsc::channel();
    if tx.send((line.trim().to_owned(), rtx)).is_err() {
        return;
    }
    let reply = rrx.recv_timeout(Duration::from_secs(5)).unwrap_or_else(|_| "error: sbc did not answer\n".into());
    let _ = s.write_all(reply.as_bytes());
}

/// Sends one command to a running sbc and returns its answer.
///
/// # Errors
/// [`Error::Control`] with the connection or I/O error.
pub fn request(path: &Path, command: &str) -> Result<String, Error> {
    exchange(path, command).map_err(|source| Error::Control { path: path.to_owned(), source })
}

fn exchange(path: &Path, command: &str) -> std::io::Result<String> {
    let mut s = UnixStream::connect(path)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(command.as_bytes())?;
    s.write_all(b"\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}
