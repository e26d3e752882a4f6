//! Daemon configuration: where widgets live and where the local API listens.
//!
//! Defaults follow the platform (`directories`): on Linux `~/.local/share/pinchat`, on macOS
//! `~/Library/Application Support/pinchat`, on Windows `%APPDATA%\pinchat\data`. A TOML file, the
//! environment (`PINCHAT_DATA_DIR`, `PINCHAT_SOCKET`) and flags override them, in that order.

use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The daemon's settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DaemonConfig {
    /// Where widget databases live (`<data_dir>/widgets/<id>.db`).
    pub data_dir: PathBuf,
    /// The local API's socket (or pipe).
    pub socket: PathBuf,
    /// Whether a widget may borrow the connection of a running full client of its account.
    pub borrow: bool,
    /// Where full clients register (`pinchat_ipc::full`); by default beside the socket.
    pub full_dir: Option<PathBuf>,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        let data_dir = directories::ProjectDirs::from("", "", "pinchat")
            .map_or_else(|| PathBuf::from("pinchat-data"), |d| d.data_dir().to_owned());
        DaemonConfig {
            data_dir,
            socket: pinchat_ipc::transport::default_socket(),
            borrow: true,
            full_dir: None,
        }
    }
}

impl DaemonConfig {
    /// Where full clients register.
    pub fn full_dir(&self) -> PathBuf {
        self.full_dir
            .clone()
            .unwrap_or_else(|| pinchat_ipc::full::dir_for_socket(&self.socket))
    }

    /// Reads a TOML file over the defaults; a missing `path` gives the defaults.
    pub fn load(path: Option<&Path>) -> anyhow::Result<DaemonConfig> {
        let Some(path) = path else {
            return Ok(DaemonConfig::default());
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read the config file {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("invalid config file {}: {e}", path.display()))
    }
}
