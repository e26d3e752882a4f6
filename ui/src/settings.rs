//! The app's own settings, in `settings.json` in the platform's config directory: the language chosen
//! in the tray menu and the widgets in "do not disturb". Everything else (widgets, pins, update modes)
//! belongs to the daemon.

use crate::i18n::Lang;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// What the app remembers between runs.
#[derive(Serialize, Deserialize, Debug, Default, Clone, PartialEq, Eq)]
#[serde(default)]
pub struct Settings {
    /// The language picked in the menu; the OS locale's when `None`.
    pub lang: Option<Lang>,
    /// Widgets whose new messages raise no notification.
    pub do_not_disturb: BTreeSet<String>,
}

impl Settings {
    /// Where the settings live.
    pub fn default_path() -> Option<PathBuf> {
        directories::ProjectDirs::from("", "", "pinchat").map(|d| d.config_dir().join("settings.json"))
    }

    /// Reads `path`; defaults when it is missing, and a warning when it cannot be read (the app starts
    /// anyway: these are conveniences, not data).
    pub fn load(path: &Path) -> Settings {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(path = %path.display(), error = %e, "ignoring unreadable settings");
                Settings::default()
            }),
            Err(_) => Settings::default(),
        }
    }

    /// Writes `path` (through a temporary file, so that a crash never leaves half a file).
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("json.tmp");
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?,
        )?;
        std::fs::rename(tmp, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_round_trip_and_survive_damage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pinchat").join("settings.json");
        assert_eq!(Settings::load(&path), Settings::default());
        let s = Settings {
            lang: Some(Lang::Zh),
            do_not_disturb: ["w1".to_owned()].into(),
        };
        s.save(&path).unwrap();
        assert_eq!(Settings::load(&path), s);
        std::fs::write(&path, b"{ not json").unwrap();
        assert_eq!(Settings::load(&path), Settings::default());
    }
}
