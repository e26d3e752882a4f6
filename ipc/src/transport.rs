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

use interprocess::local_socket::tokio::{Listener as IpListener, Stream};
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
    let user = std::env::var("USERNAME").unwrap_or_else(|_| "user".into());
    let user: String = user
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    PathBuf::from(format!(r"\\.\pipe\pinchat-{user}"))
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

/// Connects to the daemon at `path`.
pub async fn connect(path: &Path) -> io::Result<Stream> {
    Stream::connect(path.to_fs_name::<GenericFilePath>()?).await
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
