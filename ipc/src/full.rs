//! How a running full client (`pinchat-full`) tells local programs that its connection can be
//! borrowed (the patent's claims 9 and 12), and where it listens.
//!
//! A full client writes a *registration* — a small JSON file, [`Registration`] — into the runtime
//! directory ([`default_dir`], the daemon socket's directory on Unix), named `full-<pid>.json`,
//! readable by its user only, written to a temporary name and renamed so a reader never sees half of
//! it. It removes the file when it exits cleanly; a crash leaves it behind, which is why readers
//! confirm that the process it names is alive, started when it says, is a `pinchat-full` program
//! and runs as the same user before they trust it (the daemon does this with `sysinfo`).
//!
//! The endpoint named in the registration is a local socket (a named pipe on Windows) with the same
//! same-user protection as the daemon's ([`crate::transport`]). It speaks the server's stream
//! protocol (`docs/protocol.md`): a WebSocket over the local socket carrying the same binary frames,
//! without the `Authorization` header — the full client's own login stands for the account. The
//! full client answers `hello` with its server's `welcome` and forwards each subscription, send and
//! request over its one server stream. A WebSocket close with code 1001 (*going away*) means the
//! full client is leaving (exit, logout, another account): the borrower should take its own
//! connection back at once. `docs/ipc.md` ("Borrowing a full client's connection") has the details.

use pinchat_proto::{AccountId, Epoch};
use serde::{Deserialize, Serialize};
use std::io;
use std::path::{Path, PathBuf};

/// The version of the registration file and endpoint. A reader refuses other versions.
pub const FULL_PROTOCOL: u16 = 1;

/// The file name of the full client program, without the platform's `.exe`.
pub const PROGRAM: &str = "pinchat-full";

/// Largest registration file a reader accepts; a real one is a few hundred bytes.
pub const MAX_REGISTRATION_BYTES: u64 = 64 * 1024;

/// What a running full client says about itself.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    /// [`FULL_PROTOCOL`] of the writer.
    pub protocol: u16,
    /// Its process id.
    pub pid: u32,
    /// When the process started, in seconds since the Unix epoch (as `sysinfo` reports it), so that a
    /// reused process id is told apart.
    pub start_time: u64,
    /// The program's path.
    pub exe: PathBuf,
    /// The endpoint to connect to.
    pub socket: PathBuf,
    /// The accounts it is logged in with and connected for (empty while logged out).
    pub accounts: Vec<RegisteredAccount>,
}

/// An account a full client holds a server connection for.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct RegisteredAccount {
    /// The server's base URL, as the daemon writes it (`Remote::base`): scheme, host and port.
    pub server: String,
    /// The account's id on that server.
    pub account: AccountId,
    /// The server database's epoch.
    pub epoch: Epoch,
}

/// Where registrations are written by default: the daemon socket's directory on Unix (private to the
/// user), `%LOCALAPPDATA%\pinchat\run` on Windows (pipes live in no directory).
pub fn default_dir() -> PathBuf {
    dir_for_socket(&crate::transport::default_socket())
}

/// The registration directory that goes with a daemon socket at `socket`.
pub fn dir_for_socket(socket: &Path) -> PathBuf {
    #[cfg(windows)]
    {
        let _ = socket;
        let base = std::env::var_os("LOCALAPPDATA").map_or_else(std::env::temp_dir, PathBuf::from);
        base.join("pinchat").join("run")
    }
    #[cfg(not(windows))]
    {
        socket
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_owned)
    }
}

/// The registration file of process `pid` in `dir`.
pub fn registration_path(dir: &Path, pid: u32) -> PathBuf {
    dir.join(format!("full-{pid}.json"))
}

/// The endpoint of process `pid`: a socket in `dir`, or a named pipe on Windows.
pub fn endpoint_path(dir: &Path, pid: u32) -> PathBuf {
    #[cfg(windows)]
    {
        let _ = dir;
        PathBuf::from(format!(
            r"\\.\pipe\pinchat-full-{}-{pid}",
            crate::transport::pipe_user()
        ))
    }
    #[cfg(not(windows))]
    {
        dir.join(format!("full-{pid}.sock"))
    }
}

/// Whether `path` names a registration file (`full-<digits>.json`).
pub fn is_registration(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("full-"))
        .and_then(|n| n.strip_suffix(".json"))
        .is_some_and(|pid| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
}

/// Writes `registration` into `dir` (created private if missing), atomically: a temporary file,
/// then a rename.
pub fn write(dir: &Path, registration: &Registration) -> io::Result<PathBuf> {
    create_private_dir(dir)?;
    let path = registration_path(dir, registration.pid);
    let mut file = tempfile_in(dir)?;
    let bytes = serde_json::to_vec_pretty(registration).map_err(io::Error::other)?;
    io::Write::write_all(&mut file.1, &bytes)?;
    file.1.sync_all()?;
    drop(file.1);
    std::fs::rename(&file.0, &path)?;
    Ok(path)
}

/// Reads one registration file, refusing oversized or malformed ones with a message that says why.
pub fn read(path: &Path) -> Result<Registration, String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if meta.len() > MAX_REGISTRATION_BYTES {
        return Err(format!("{} bytes is too large for a registration", meta.len()));
    }
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let registration: Registration =
        serde_json::from_slice(&bytes).map_err(|e| format!("not a registration: {e}"))?;
    if registration.protocol != FULL_PROTOCOL {
        return Err(format!(
            "written for protocol version {}, this program speaks {FULL_PROTOCOL}",
            registration.protocol
        ));
    }
    Ok(registration)
}

fn create_private_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
    }
    #[cfg(not(unix))]
    {
        std::fs::create_dir_all(dir)
    }
}

/// A new file only its user can read, under a name no reader takes for a registration.
fn tempfile_in(dir: &Path) -> io::Result<(PathBuf, std::fs::File)> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut n = 0u32;
    loop {
        let path = dir.join(format!(".full-{}-{n}.tmp", std::process::id()));
        match options.open(&path) {
            Ok(f) => return Ok((path, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < 100 => n += 1,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registration_is_written_whole_and_read_back() {
        let dir = std::env::temp_dir().join(format!("pinchat-full-test-{}", std::process::id()));
        let r = Registration {
            protocol: FULL_PROTOCOL,
            pid: 42,
            start_time: 1_700_000_000,
            exe: PathBuf::from("/usr/bin/pinchat-full"),
            socket: endpoint_path(&dir, 42),
            accounts: vec![RegisteredAccount {
                server: "http://127.0.0.1:7420".into(),
                account: AccountId(7),
                epoch: 99,
            }],
        };
        let path = write(&dir, &r).unwrap();
        assert!(is_registration(&path));
        assert_eq!(read(&path).unwrap(), r);
        std::fs::write(&path, br#"{"protocol": 2}"#).unwrap();
        assert!(read(&path).unwrap_err().contains("not a registration"));
        let newer = Registration { protocol: 2, ..r };
        std::fs::write(&path, serde_json::to_vec(&newer).unwrap()).unwrap();
        assert!(read(&path).unwrap_err().contains("protocol version 2"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn only_full_pid_json_is_a_registration() {
        assert!(is_registration(Path::new("/run/full-123.json")));
        for name in [
            "full-.json",
            "full-12a.json",
            ".full-1-0.tmp",
            "full-1.sock",
            "daemon.sock",
        ] {
            assert!(!is_registration(Path::new(name)), "{name}");
        }
    }
}
