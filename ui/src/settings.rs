//! The app's own settings, in `settings.json` in the platform's config directory: the language chosen
//! in the tray menu and "do not disturb" (which widgets, until when, and which pinned contacts still
//! get through). Everything else (widgets, pins, update modes) belongs to the daemon.

use crate::i18n::Lang;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// What the app remembers between runs.
#[derive(Serialize, Deserialize, Debug, Default, Clone, PartialEq, Eq)]
#[serde(default)]
pub struct Settings {
    /// The language picked in the menu; the OS locale's when `None`.
    pub lang: Option<Lang>,
    /// Widgets whose new messages raise no notification.
    pub do_not_disturb: BTreeSet<String>,
    /// When "do not disturb" ends for a widget (Unix milliseconds); a widget in `do_not_disturb` and not
    /// here is quiet until it is turned off.
    pub quiet_until: BTreeMap<String, u64>,
    /// Per widget, the pinned contacts whose messages are shown even in "do not disturb".
    pub break_through: BTreeMap<String, BTreeSet<u64>>,
    /// The panel's size and place as the person last left them.
    pub panel: PanelPlace,
    /// Per widget, the pinned contacts with a tray icon of their own.
    pub in_tray: BTreeMap<String, BTreeSet<u64>>,
}

/// A panel window's size and place, as the person left them.
#[derive(Serialize, Deserialize, Debug, Default, Clone, Copy, PartialEq, Eq)]
#[serde(default)]
pub struct PanelPlace {
    /// Inner size in logical pixels; the default size when `None`.
    pub size: Option<(u32, u32)>,
    /// Top-left corner in physical pixels, when the person moved the panel away from the tray icon;
    /// next to the icon when `None`.
    pub position: Option<(i32, i32)>,
}

/// Adds `contact` to `widget`'s set in `map`, or takes it out; no empty sets are kept.
fn toggle(map: &mut BTreeMap<String, BTreeSet<u64>>, widget: &str, contact: u64) {
    let contacts = map.entry(widget.to_owned()).or_default();
    if !contacts.remove(&contact) {
        contacts.insert(contact);
    }
    if contacts.is_empty() {
        map.remove(widget);
    }
}

/// One hour, in milliseconds.
pub const HOUR_MS: u64 = 3_600_000;

impl Settings {
    /// Whether `widget` is in "do not disturb" at `now` (Unix ms).
    pub fn quiet(&self, widget: &str, now: u64) -> bool {
        self.do_not_disturb.contains(widget) && self.quiet_until.get(widget).is_none_or(|&end| now < end)
    }

    /// Whether a message from `contact` to `widget` raises a notification at `now`.
    pub fn notify_for(&self, widget: &str, contact: u64, now: u64) -> bool {
        !self.quiet(widget, now)
            || self
                .break_through
                .get(widget)
                .is_some_and(|c| c.contains(&contact))
    }

    /// Turns "do not disturb" on for `widget` until `until` (Unix ms), or until it is turned off.
    pub fn set_quiet(&mut self, widget: &str, until: Option<u64>) {
        self.do_not_disturb.insert(widget.to_owned());
        match until {
            Some(end) => self.quiet_until.insert(widget.to_owned(), end),
            None => self.quiet_until.remove(widget),
        };
    }

    /// Turns "do not disturb" off for `widget`.
    pub fn clear_quiet(&mut self, widget: &str) {
        self.do_not_disturb.remove(widget);
        self.quiet_until.remove(widget);
    }

    /// Lets `contact`'s messages through "do not disturb" on `widget`, or stops doing so.
    pub fn toggle_break_through(&mut self, widget: &str, contact: u64) {
        toggle(&mut self.break_through, widget, contact);
    }

    /// Gives `contact` of `widget` a tray icon of their own, or takes it away.
    pub fn toggle_in_tray(&mut self, widget: &str, contact: u64) {
        toggle(&mut self.in_tray, widget, contact);
    }

    /// Whether `contact` of `widget` has a tray icon of their own.
    pub fn is_in_tray(&self, widget: &str, contact: u64) -> bool {
        self.in_tray.get(widget).is_some_and(|c| c.contains(&contact))
    }

    /// Ends the "do not disturb" periods that are over at `now`; `true` when one was.
    pub fn expire(&mut self, now: u64) -> bool {
        let over: Vec<String> = self
            .quiet_until
            .iter()
            .filter(|&(_, &end)| end <= now)
            .map(|(w, _)| w.clone())
            .collect();
        for w in &over {
            self.clear_quiet(w);
        }
        !over.is_empty()
    }

    /// When the next "do not disturb" period ends (Unix ms).
    pub fn next_expiry(&self) -> Option<u64> {
        self.quiet_until.values().min().copied()
    }

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
            quiet_until: [("w1".to_owned(), 5)].into(),
            break_through: [("w1".to_owned(), [7].into())].into(),
            panel: PanelPlace {
                size: Some((420, 640)),
                position: Some((-8, 30)),
            },
            in_tray: [("w1".to_owned(), [9].into())].into(),
        };
        s.save(&path).unwrap();
        assert_eq!(Settings::load(&path), s);
        std::fs::write(&path, b"{ not json").unwrap();
        assert_eq!(Settings::load(&path), Settings::default());
    }

    #[test]
    fn settings_of_an_earlier_version_still_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("settings.json");
        std::fs::write(&path, br#"{"lang":"en","do_not_disturb":["w1"]}"#).unwrap();
        let s = Settings::load(&path);
        assert!(s.quiet("w1", 0) && s.quiet("w1", u64::MAX));
        assert_eq!(s.next_expiry(), None);
    }

    #[test]
    fn do_not_disturb_ends_when_its_time_is_up_and_lets_chosen_contacts_through() {
        let mut s = Settings::default();
        assert!(s.notify_for("w1", 7, 1_000));
        s.set_quiet("w1", Some(1_000 + HOUR_MS));
        s.set_quiet("w2", None);
        assert!(s.quiet("w1", 1_000) && !s.notify_for("w1", 7, 1_000));
        assert_eq!(s.next_expiry(), Some(1_000 + HOUR_MS));
        s.toggle_break_through("w1", 7);
        assert!(s.notify_for("w1", 7, 1_000) && !s.notify_for("w1", 8, 1_000));
        // Not over yet, then over: w1 is loud again, w2 (no end) stays quiet.
        assert!(!s.expire(HOUR_MS));
        assert!(s.expire(1_000 + HOUR_MS));
        assert!(!s.quiet("w1", 1_000 + HOUR_MS) && s.notify_for("w1", 8, 1_000 + HOUR_MS));
        assert!(s.quiet("w2", u64::MAX));
        assert_eq!(s.next_expiry(), None);
        // Turned on again without an end: no timer left over.
        s.set_quiet("w1", Some(5));
        s.set_quiet("w1", None);
        assert!(s.quiet("w1", u64::MAX));
        s.toggle_break_through("w1", 7);
        assert!(s.break_through.is_empty());
    }
}
