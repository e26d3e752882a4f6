//! Where the daemon listens, and who may connect.
//!
//! - **Linux**: a Unix socket at `$XDG_RUNTIME_DIR/pinchat/daemon.sock` (or `/tmp/pinchat-<uid>/…` when
//!   there is no runtime directory). **macOS**: `$TMPDIR/pinchat/daemon.sock` (`$TMPDIR` is per user).
//!   The directory is created with mode 0700 and refused if another user owns it; the socket has mode
//!   0600; and every accepted connection's peer user id is checked against the daemon's own.
//! - **Windows**: the named pipe `\\.\pipe\pinchat-<user>`, created with a DACL that grants access to
//!   its owner and to SYSTEM only (the default DACL would let everyone read).
//!
//! `PINCHAT_SOCKET` overrides the location on every platform.
//!
//! Clients check the other way round before they send anything (a password travels in `widget.create`):
//! the socket's directory must belong to the user (or root) and not be open to others' writes unless
//! it is sticky, and the process serving the socket must run as the same user (`SO_PEERCRED` on Unix;
//! on Windows the pipe server's process owner, looked up with `sysinfo`). A socket another user put at
//! `PINCHAT_SOCKET`, or a squatted `/tmp/pinchat-<uid>`, is refused with
//! [`io::ErrorKind::PermissionDenied`] and nothing is written to it.

use interprocess::local_socket::tokio::Listener as IpListener;
/// A connection on a local socket (or named pipe).
pub use interprocess::local_socket::tokio::Stream;
use interprocess::local_socket::traits::tokio::{Listener as _, Stream as _};
use interprocess::local_socket::{GenericFilePath, ListenerOptions, ToFsName};
use std::io;
use std::path::{Path, PathBuf};

/// The environment variable that overrides the socket location.
pub const SOCKET_ENV: &str = "PINCHAT_SOCKET";

/// The socket (or pipe) the daemon listens on by default.
pub fn default_socket() -> PathBuf {
    if let Some(p) = std::env::var_os(SOCKET_ENV) {
        return PathBuf::from(p);
    }
    platform_default()
}

#[cfg(target_os = "macos")]
fn platform_default() -> PathBuf {
    std::env::temp_dir().join("pinchat").join("daemon.sock")
}

#[cfg(all(unix, not(target_os = "macos")))]
fn platform_default() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir).join("pinchat").join("daemon.sock"),
        _ => std::env::temp_dir()
            .join(format!("pinchat-{}", rustix::process::geteuid().as_raw()))
            .join("daemon.sock"),
    }
}

#[cfg(windows)]
fn platform_default() -> PathBuf {
    PathBuf::from(format!(r"\\.\pipe\pinchat-{}", pipe_user()))
}

/// The user's name as it goes into pipe names (letters and digits; anything else becomes `_`).
#[cfg(windows)]
pub(crate) fn pipe_user() -> String {
    let user = std::env::var("USERNAME").unwrap_or_else(|_| "user".into());
    user.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// A listening socket. On Unix its file is removed when it is dropped.
pub struct Listener {
    inner: IpListener,
    path: PathBuf,
}

impl Listener {
    /// Binds at `path`. Fails with `AddrInUse` when a daemon is already listening there; a stale socket
    /// left by a crashed daemon is replaced.
    pub fn bind(path: &Path) -> io::Result<Listener> {
        prepare(path)?;
        let name = path.to_fs_name::<GenericFilePath>()?;
        let options = ListenerOptions::new().name(name);
        let inner = secure(options).create_tokio()?;
        Ok(Listener {
            inner,
            path: path.to_owned(),
        })
    }

    /// Where it listens.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accepts the next connection from the same user. Connections from other users are closed and
    /// reported as `PermissionDenied` (keep accepting after that error).
    pub async fn accept(&self) -> io::Result<Stream> {
        let stream = self.inner.accept().await?;
        check_peer(&stream)?;
        Ok(stream)
    }
}

/// Connects to the daemon at `path`, after checking that the socket and the process serving it
/// belong to this user.
pub async fn connect(path: &Path) -> io::Result<Stream> {
    check_location(path)?;
    let stream = Stream::connect(path.to_fs_name::<GenericFilePath>()?).await?;
    check_server(&stream, path)?;
    Ok(stream)
}

/// The process id of the program serving `stream` (the other end), where the system tells it
/// (Linux, Windows; `None` on macOS, which reports only the user).
pub fn peer_pid(stream: &Stream) -> Option<u32> {
    use interprocess::local_socket::traits::StreamCommon;
    stream
        .peer_creds()
        .ok()
        .and_then(|c| c.pid())
        .and_then(|p| u32::try_from(p).ok())
}

/// Why a client refused a socket (inside an [`io::Error`] of kind `PermissionDenied`).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Untrusted(pub String);

fn untrusted(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, Untrusted(message))
}

#[cfg(unix)]
fn check_location(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let meta = match std::fs::metadata(dir) {
        Ok(m) => m,
        // Nothing there: connecting reports that the daemon is not running.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let me = rustix::process::geteuid().as_raw();
    let refuse = |why: String| {
        Err(untrusted(format!(
            "refusing to use the socket {}: {why}; another user could be impersonating the daemon, \
             so nothing was sent (remove it, or point PINCHAT_SOCKET at a directory of your own)",
            path.display()
        )))
    };
    if meta.uid() != me && meta.uid() != 0 {
        return refuse(format!(
            "its directory {} belongs to uid {}, not to you (uid {me})",
            dir.display(),
            meta.uid()
        ));
    }
    // Others may write into the directory only if it is sticky (like /tmp), so they cannot replace
    // a socket they do not own.
    if meta.mode() & 0o022 != 0 && meta.mode() & 0o1000 == 0 {
        return refuse(format!(
            "its directory {} can be written by other users",
            dir.display()
        ));
    }
    Ok(())
}

#[cfg(windows)]
fn check_location(_path: &Path) -> io::Result<()> {
    // Pipes live in one namespace; who serves the pipe is checked once connected.
    Ok(())
}

#[cfg(unix)]
fn check_server(stream: &Stream, path: &Path) -> io::Result<()> {
    use interprocess::local_socket::traits::StreamCommon;
    let me = rustix::process::geteuid().as_raw();
    let uid = stream.peer_creds()?.euid();
    match uid {
        Some(uid) if uid == me => Ok(()),
        other => Err(untrusted(format!(
            "refusing to talk to {}: it is served by {}, not by you (uid {me}); another user could be \
             impersonating the daemon, so nothing was sent",
            path.display(),
            other.map_or_else(|| "an unknown user".to_owned(), |u| format!("uid {u}"))
        ))),
    }
}

#[cfg(windows)]
fn check_server(stream: &Stream, path: &Path) -> io::Result<()> {
    use interprocess::local_socket::traits::StreamCommon;
    use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System, UpdateKind};
    let server = stream.peer_creds()?.pid().unwrap_or(0);
    let me = std::process::id();
    // The app serves its own daemon in-process: a pipe served by this very process cannot be an
    // impersonator's (and under Wine, sysinfo cannot read this process's own owner).
    if server == me {
        return Ok(());
    }
    let mut system = System::new();
    let pids = [Pid::from_u32(me), Pid::from_u32(server)];
    system.refresh_processes_specifics(
        ProcessesToUpdate::Some(&pids),
        true,
        ProcessRefreshKind::nothing().with_user(UpdateKind::Always),
    );
    let owner = |pid: Pid| system.process(pid).and_then(|p| p.user_id()).cloned();
    match (owner(pids[0]), owner(pids[1])) {
        (Some(a), Some(b)) if a == b => Ok(()),
        (_, theirs) => Err(untrusted(format!(
            "refusing to talk to {}: the process serving it (pid {server}) runs as {}, not as you; \
             another user could be impersonating the daemon, so nothing was sent",
            path.display(),
            theirs.map_or_else(|| "an unknown user".to_owned(), |u| format!("{u:?}"))
        ))),
    }
}

#[cfg(unix)]
fn prepare(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let meta = std::fs::metadata(dir)?;
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} belongs to another user (uid {}); refusing to put the daemon's socket there",
                dir.display(),
                meta.uid()
            ),
        ));
    }
    if meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    // A socket file with nobody listening is what a crashed daemon leaves behind.
    if path.exists() {
        match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("a daemon is already listening on {}", path.display()),
                ));
            }
            Err(_) => std::fs::remove_file(path)?,
        }
    }
    Ok(())
}

#[cfg(windows)]
fn prepare(_path: &Path) -> io::Result<()> {
    Ok(())
}

#[cfg(unix)]
fn secure(options: ListenerOptions<'_>) -> ListenerOptions<'_> {
    use interprocess::os::unix::local_socket::ListenerOptionsExt;
    options.mode(0o600)
}

#[cfg(windows)]
fn secure(options: ListenerOptions<'_>) -> ListenerOptions<'_> {
    use interprocess::os::windows::local_socket::ListenerOptionsExt;
    use interprocess::os::windows::security_descriptor::SecurityDescriptor;
    // Protected DACL: full access for SYSTEM and for the pipe's owner (the user running the daemon),
    // nobody else.
    let sddl = widestring::U16CString::from_str("D:P(A;;GA;;;SY)(A;;GA;;;OW)").expect("the SDDL has no NUL");
    match SecurityDescriptor::deserialize(&sddl) {
        Ok(sd) => options.security_descriptor(sd),
        Err(e) => {
            tracing::error!(error = %e, "cannot build the pipe's security descriptor");
            options
        }
    }
}

#[cfg(unix)]
fn check_peer(stream: &Stream) -> io::Result<()> {
    use interprocess::local_socket::traits::StreamCommon;
    let creds = stream.peer_creds()?;
    let me = rustix::process::geteuid().as_raw();
    match creds.euid() {
        Some(uid) if uid == me => Ok(()),
        other => Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("refused a connection from uid {other:?}: only uid {me} may use this daemon"),
        )),
    }
}

#[cfg(windows)]
fn check_peer(_stream: &Stream) -> io::Result<()> {
    // The pipe's DACL already admits only the owner and SYSTEM.
    Ok(())
}
