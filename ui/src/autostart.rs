//! Starting the app when the user logs in: off until the user turns it on (the tray menu's *Start at
//! login*, or `pinchat autostart on`), always for this user only, never system-wide.
//!
//! - Linux: an XDG autostart entry, `$XDG_CONFIG_HOME/autostart/pinchat.desktop`. It names the program
//!   in `TryExec` as well as `Exec`, so once the package is removed (dpkg never touches home
//!   directories) the session ignores the entry instead of failing to start a missing program.
//! - Windows: the value `pinchat` under `HKCU\Software\Microsoft\Windows\CurrentVersion\Run`, the
//!   program's path quoted (it lies under *Program Files*). The MSI runs `pinchat.exe autostart off`
//!   when pinchat is uninstalled, not when it is upgraded.
//! - macOS: the app bundle registers itself as a login item (`SMAppService.mainApp`, macOS 13+), which
//!   the system drops when the app is moved to the Bin; a program outside a bundle (a checkout's build)
//!   writes a LaunchAgent in `~/Library/LaunchAgents` instead.
//!
//! Windows and macOS go through the `auto-launch` crate; its Linux entry has neither `TryExec` nor
//! quoting and ignores `XDG_CONFIG_HOME`, so Linux has its own few lines here.

use anyhow::Context;

/// Whether the app starts at login.
pub fn enabled() -> anyhow::Result<bool> {
    imp::enabled()
}

/// Turns starting at login on or off (doing nothing when it already is as asked).
pub fn set(on: bool) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find this program's path")?;
    imp::set(on, &exe)
}

#[cfg(target_os = "linux")]
mod imp {
    use anyhow::Context;
    use std::path::{Path, PathBuf};

    /// `$XDG_CONFIG_HOME/autostart/pinchat.desktop` (`~/.config` when the variable is unset).
    pub(super) fn entry_path() -> anyhow::Result<PathBuf> {
        let dirs = directories::BaseDirs::new().context("cannot find the home directory")?;
        Ok(dirs.config_dir().join("autostart").join("pinchat.desktop"))
    }

    pub(super) fn enabled() -> anyhow::Result<bool> {
        Ok(entry_path()?.exists())
    }

    pub(super) fn set(on: bool, exe: &Path) -> anyhow::Result<()> {
        let path = entry_path()?;
        if !on {
            return match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(e).with_context(|| format!("cannot remove {}", path.display()))
                }
                _ => Ok(()),
            };
        }
        let exe = exe.to_str().context("this program's path is not valid UTF-8")?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        // Through a temporary file (not named *.desktop, so never read as an entry): the session reads
        // this file at login, and a half-written one must never be what it finds.
        let tmp = path.with_extension("desktop.tmp");
        std::fs::write(&tmp, entry(exe))
            .and_then(|()| std::fs::rename(&tmp, &path))
            .with_context(|| format!("cannot write {}", path.display()))
    }

    /// The desktop entry that starts `exe`.
    pub(super) fn entry(exe: &str) -> String {
        format!(
            "[Desktop Entry]\n\
             Type=Application\n\
             Name=pinchat\n\
             Comment=Your pinned contacts in the tray\n\
             Exec={}\n\
             TryExec={}\n\
             Icon=pinchat\n\
             Terminal=false\n\
             StartupNotify=false\n\
             X-GNOME-Autostart-enabled=true\n",
            exec_arg(exe),
            exe.replace('\\', "\\\\"),
        )
    }

    /// `exe` as the one argument of an `Exec` key: quoted when it has a reserved character, with the
    /// escapes of the Desktop Entry Specification (inside quotes, then for the string value).
    fn exec_arg(exe: &str) -> String {
        let plain = exe.chars().all(|c| c.is_alphanumeric() || "/._-+,:@".contains(c));
        if plain {
            return exe.to_owned();
        }
        let mut quoted = String::from("\"");
        for c in exe.chars() {
            match c {
                '"' | '`' | '$' => {
                    quoted.push_str("\\\\");
                    quoted.push(c);
                }
                '\\' => quoted.push_str("\\\\\\\\"),
                '%' => quoted.push_str("%%"),
                c => quoted.push(c),
            }
        }
        quoted.push('"');
        quoted
    }
}

#[cfg(any(windows, target_os = "macos"))]
mod imp {
    use std::path::Path;

    fn launcher(exe: &Path) -> anyhow::Result<auto_launch::AutoLaunch> {
        let mut builder = auto_launch::AutoLaunchBuilder::new();
        builder.set_app_name("pinchat");
        #[cfg(windows)]
        {
            // The Run value is a command line: a path with spaces must be quoted. Per user only: an
            // administrator's choice must not start pinchat for everyone.
            builder.set_app_path(&format!("\"{}\"", exe.display()));
            builder.set_windows_enable_mode(auto_launch::WindowsEnableMode::CurrentUser);
        }
        #[cfg(target_os = "macos")]
        {
            builder.set_app_path(&exe.to_string_lossy());
            let in_bundle = exe.parent().is_some_and(|d| d.ends_with("Contents/MacOS"));
            builder.set_macos_launch_mode(if in_bundle {
                auto_launch::MacOSLaunchMode::SMAppService
            } else {
                auto_launch::MacOSLaunchMode::LaunchAgent
            });
        }
        Ok(builder.build()?)
    }

    pub(super) fn enabled() -> anyhow::Result<bool> {
        let exe = std::env::current_exe()?;
        Ok(launcher(&exe)?.is_enabled()?)
    }

    pub(super) fn set(on: bool, exe: &Path) -> anyhow::Result<()> {
        let launcher = launcher(exe)?;
        if on {
            launcher.enable()?;
        } else {
            launcher.disable()?;
        }
        Ok(())
    }
}

#[cfg(not(any(target_os = "linux", windows, target_os = "macos")))]
mod imp {
    pub(super) fn enabled() -> anyhow::Result<bool> {
        Ok(false)
    }

    pub(super) fn set(_on: bool, _exe: &std::path::Path) -> anyhow::Result<()> {
        anyhow::bail!("starting at login is not supported on this system")
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::imp::entry;

    fn line<'a>(entry: &'a str, key: &str) -> &'a str {
        entry
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .unwrap_or_else(|| panic!("no {key} in {entry}"))
    }

    #[test]
    fn the_entry_names_the_program_twice_so_a_removed_program_is_skipped() {
        let e = entry("/usr/bin/pinchat");
        assert_eq!(line(&e, "Exec"), "/usr/bin/pinchat");
        assert_eq!(line(&e, "TryExec"), "/usr/bin/pinchat");
        assert!(e.starts_with("[Desktop Entry]\n"));
    }

    #[test]
    fn a_path_with_reserved_characters_is_quoted_and_escaped() {
        let e = entry("/home/a b/$x\"%/pinchat");
        assert_eq!(line(&e, "Exec"), r#""/home/a b/\\$x\\"%%/pinchat""#);
        assert_eq!(line(&e, "TryExec"), "/home/a b/$x\"%/pinchat");
    }
}
