//! `cargo xtask package deb`: the Linux package, and the checks that prove it installs what users need.
//!
//! The programs are built first (the tray app without its demo server, the daemon, `pinchatctl`, the
//! full client `pinchat-full`), then
//! cargo-deb assembles the package from `[package.metadata.deb]` in `ui/Cargo.toml`, and the path of the
//! .deb is printed. With `--check`, the package is then linted (lintian, desktop-file-validate), its
//! file list compared with what it must hold, and its programs run from an unpacked copy: each one's
//! `--version`, and a daemon answering `pinchatctl status` on a socket of its own. With `--system-test`
//! (CI only: it changes the machine) it is also installed with apt and run from `/usr/bin`, *Start at
//! login* turned on, upgraded to a second version (the user's files and choice kept), and purged; the
//! machine's file list is compared before and after.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// What the .deb must hold, besides directories, Debian's own documentation files and the man pages
/// (every page in `installers/linux/man`, gzipped).
const DEB_FILES: &[&str] = &[
    "./usr/bin/pinchat",
    "./usr/bin/pinchat-full",
    "./usr/bin/pinchatctl",
    "./usr/bin/pinchatd",
    "./usr/share/applications/pinchat-full.desktop",
    "./usr/share/applications/pinchat.desktop",
    "./usr/share/doc/pinchat/README",
    "./usr/share/doc/pinchat/copyright",
    "./usr/share/icons/hicolor/128x128/apps/pinchat.png",
    "./usr/share/icons/hicolor/16x16/apps/pinchat.png",
    "./usr/share/icons/hicolor/22x22/apps/pinchat.png",
    "./usr/share/icons/hicolor/24x24/apps/pinchat.png",
    "./usr/share/icons/hicolor/256x256/apps/pinchat.png",
    "./usr/share/icons/hicolor/32x32/apps/pinchat.png",
    "./usr/share/icons/hicolor/48x48/apps/pinchat.png",
    "./usr/share/icons/hicolor/512x512/apps/pinchat.png",
    "./usr/share/icons/hicolor/64x64/apps/pinchat.png",
    "./usr/share/metainfo/io.pinchat.pinchat.metainfo.xml",
];

pub struct Options {
    /// The cargo profile the programs are built with: `dist` (what users get) unless told. The test
    /// suite checks a `dev` build: the same files, built mostly from what the tests already compiled
    /// (about 4 minutes, where a profile of its own takes 16 on two cores). cargo-deb warns that it is
    /// meant for release profiles; the warning is expected there.
    pub profile: String,
    pub check: bool,
    pub system_test: bool,
}

impl Options {
    pub fn parse(args: &[String]) -> Result<Options, String> {
        let mut options = Options {
            profile: "dist".into(),
            check: false,
            system_test: false,
        };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            match arg.as_str() {
                "--profile" => {
                    options.profile = it
                        .next()
                        .ok_or("--profile needs a value (dist, release, dev)")?
                        .clone();
                }
                "--check" => options.check = true,
                "--system-test" => {
                    options.check = true;
                    options.system_test = true;
                }
                other => return Err(format!("unknown option {other:?}")),
            }
        }
        Ok(options)
    }
}

fn output(command: &mut Command) -> Result<String, String> {
    let shown = format!("{command:?}");
    let out = command
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run {shown}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{shown} failed ({})", out.status));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Assembles the package from the built programs into `out`, as version `version` when given (the
/// upgrade test's "next" package holds the same programs); returns its path.
fn assemble(profile: &str, out: &Path, version: Option<&str>) -> Result<PathBuf, String> {
    let cargo = crate::cargo();
    std::fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    // cargo-deb maps the manifest's `target/release/` to the chosen profile's directory; the binaries
    // are built above, with the features the package needs, so it must not build them again.
    let printed = output(
        Command::new(&cargo)
            .args([
                "deb",
                "--no-build",
                "--locked",
                "-p",
                "pinchat-ui",
                "--profile",
                profile,
                "--strip",
            ])
            .args(version.map(|v| ["--deb-version", v]).into_iter().flatten())
            .arg("-o")
            .arg(out),
    )?;
    let deb = printed
        .lines()
        .rev()
        .find(|l| l.trim_end().ends_with(".deb"))
        .map(|l| PathBuf::from(l.trim()))
        .ok_or_else(|| format!("cargo deb printed no package path: {printed:?}"))?;
    Ok(deb)
}

pub fn deb(options: &Options) -> Result<(), String> {
    crate::need("cargo-deb", "cargo install cargo-deb --version 3.8.0 --locked")?;
    crate::need("dpkg-shlibdeps", "dpkg-dev")?;
    crate::build_programs(&options.profile, None)?;
    // The upgrade test's second package comes first: cargo-deb deletes the other versions of a
    // package it finds in target/debian, so this one goes elsewhere and the main one is made last.
    let next = if options.system_test {
        Some(assemble(
            &options.profile,
            Path::new("target/deb-upgrade-test"),
            Some(NEXT_VERSION),
        )?)
    } else {
        None
    };
    let deb = assemble(&options.profile, Path::new("target/debian"), None)?;
    let size = std::fs::metadata(&deb).map(|m| m.len()).unwrap_or(0);
    println!("{} ({:.1} MB)", deb.display(), size as f64 / 1e6);
    if options.check {
        check_deb(&deb)?;
    }
    if let Some(next) = next {
        system_test_deb(&deb, &next)?;
    }
    Ok(())
}

fn check_deb(deb: &Path) -> Result<(), String> {
    crate::need("lintian", "lintian")?;
    crate::need("desktop-file-validate", "desktop-file-utils")?;
    // Lintian's errors fail the check; its warnings are printed for a person to read.
    crate::run(
        Command::new("lintian")
            .args([
                "--fail-on",
                "error",
                "--tag-display-limit",
                "0",
                "--suppress-tags",
            ])
            .arg(LINTIAN_OVERRIDDEN.join(","))
            .arg(deb),
    )?;
    crate::run(Command::new("desktop-file-validate").args([
        "installers/linux/pinchat.desktop",
        "installers/linux/pinchat-full.desktop",
    ]))?;

    let listing = output(Command::new("dpkg-deb").arg("-c").arg(deb))?;
    let files: Vec<&str> = listing
        .lines()
        .filter(|l| !l.starts_with('d'))
        .filter_map(|l| l.split_whitespace().nth(5))
        .filter(|f| !f.ends_with("changelog.Debian.gz"))
        .collect();
    let mut want: Vec<String> = DEB_FILES.iter().map(|f| (*f).to_owned()).collect();
    want.extend(
        man_pages()?
            .iter()
            .map(|p| format!("./usr/share/man/man1/{p}.gz")),
    );
    want.sort_unstable();
    let mut got: Vec<String> = files.iter().map(|f| (*f).to_owned()).collect();
    got.sort_unstable();
    if got != want {
        return Err(format!("the package holds {got:#?}\nbut should hold {want:#?}"));
    }
    let control = output(Command::new("dpkg-deb").args(["-f"]).arg(deb))?;
    let depends = control
        .lines()
        .find(|l| l.starts_with("Depends:"))
        .ok_or("the package declares no dependencies")?;
    for lib in [
        "libwebkit2gtk-4.1-0",
        "libgtk-3-0",
        "libgstreamer1.0-0",
        "libgstreamer-plugins-bad1.0-0",
        "gstreamer1.0-plugins-good",
        "gstreamer1.0-nice",
    ] {
        if !depends.contains(lib) {
            return Err(format!("the package does not depend on {lib}: {depends}"));
        }
    }

    // The programs, from an unpacked copy, as an installed system would run them.
    let root = std::env::temp_dir().join(format!("pinchat-deb-check-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    crate::run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&root))?;
    let result = smoke(&root.join("usr/bin"), &root.join("user"));
    let _ = std::fs::remove_dir_all(&root);
    result
}

/// The file names of the man pages the package ships.
fn man_pages() -> Result<Vec<String>, String> {
    let dir = Path::new("installers/linux/man");
    let entries = std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let mut pages: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".1"))
        .collect();
    pages.sort_unstable();
    if pages.is_empty() {
        return Err(format!("no man pages in {}", dir.display()));
    }
    Ok(pages)
}

/// Tags lintian reports that do not apply, each with its reason.
const LINTIAN_OVERRIDDEN: &[&str] = &[
    // The changelog is the project's git history; cargo-deb writes none.
    "no-changelog",
];

/// Runs the programs in `bin`: versions, then a daemon on a socket in `user` (a stand-in for the user's
/// home), with its data there, asked for its status.
fn smoke(bin: &Path, user: &Path) -> Result<(), String> {
    let version = env!("CARGO_PKG_VERSION");
    for program in ["pinchat", "pinchatd", "pinchatctl", "pinchat-full"] {
        let out = output(Command::new(bin.join(program)).arg("--version"))?;
        if !out.contains(version) {
            return Err(format!(
                "{program} --version printed {out:?}, not version {version}"
            ));
        }
        println!("xtask: {program} --version: {}", out.trim());
    }
    let out = output(Command::new(bin.join("pinchat")).arg("--help"))?;
    if out.lines().any(|l| l.trim_start().starts_with("demo ")) {
        return Err("the packaged pinchat offers `demo`, which needs the server it leaves out".into());
    }
    std::fs::create_dir_all(user).map_err(|e| e.to_string())?;
    let socket = user.join("api.sock");
    let mut daemon = Command::new(bin.join("pinchatd"))
        .arg("--socket")
        .arg(&socket)
        .arg("--data-dir")
        .arg(user.join("data"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start pinchatd: {e}"))?;
    // The daemon says when it listens; reading that line is the wait.
    let ready = {
        use std::io::BufRead;
        let stdout = daemon.stdout.take().ok_or("no stdout")?;
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        line
    };
    let status = if ready.starts_with("pinchatd listening on") {
        output(
            Command::new(bin.join("pinchatctl"))
                .arg("--socket")
                .arg(&socket)
                .arg("status"),
        )
    } else {
        Err(format!("pinchatd did not start: {ready:?}"))
    };
    let _ = daemon.kill();
    let _ = daemon.wait();
    let status = status?;
    println!("xtask: pinchatctl status (packaged daemon): {}", status.trim());
    Ok(())
}

/// The version of the upgrade test's second package (the same programs).
const NEXT_VERSION: &str = "0.1.1-1";

/// Installs the package with apt and runs it from /usr/bin; turns *Start at login* on; upgrades to
/// `next` (the user's files untouched, the choice kept); purges it; checks nothing is left but the
/// user's files, whose login entry is then skipped (its `TryExec` program is gone).
fn system_test_deb(deb: &Path, next: &Path) -> Result<(), String> {
    let before = installed_files()?;
    let user = std::env::temp_dir().join(format!("pinchat-deb-user-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&user);
    let result = install_upgrade(deb, next, &user);
    let purged = crate::run(Command::new("dpkg").args(["--purge", "pinchat"]));
    let entry = user.join("config/autostart/pinchat.desktop");
    let kept = result.and(purged).and_then(|()| {
        if !entry.exists() {
            return Err("purging the package removed the user's login entry".into());
        }
        if Path::new("/usr/bin/pinchat").exists() {
            return Err("/usr/bin/pinchat is still there after purging".into());
        }
        Ok(())
    });
    let _ = std::fs::remove_dir_all(&user);
    kept?;
    let after = installed_files()?;
    let left: Vec<_> = after.iter().filter(|f| !before.contains(*f)).collect();
    if !left.is_empty() {
        return Err(format!("purging the package left {left:?}"));
    }
    println!(
        "xtask: installed with apt, ran from /usr/bin, upgraded to {NEXT_VERSION} keeping the user's files and Start at login, purged: nothing left behind, the login entry skipped"
    );
    Ok(())
}

fn install_upgrade(deb: &Path, next: &Path, user: &Path) -> Result<(), String> {
    let version = format!("{}-1", env!("CARGO_PKG_VERSION"));
    apt_install(deb, &version)?;
    smoke(Path::new("/usr/bin"), user)?;
    if autostart(user, Some("on"))? != "start at login: on" {
        return Err("pinchat autostart on did not turn it on".into());
    }
    let entry = user.join("config/autostart/pinchat.desktop");
    let text =
        std::fs::read_to_string(&entry).map_err(|e| format!("no login entry at {}: {e}", entry.display()))?;
    if !text.lines().any(|l| l == "TryExec=/usr/bin/pinchat") {
        return Err(format!(
            "the login entry does not name /usr/bin/pinchat in TryExec:\n{text}"
        ));
    }
    let files = user_files(user)?;
    apt_install(next, NEXT_VERSION)?;
    if user_files(user)? != files {
        return Err("upgrading the package changed the user's files".into());
    }
    if autostart(user, None)? != "start at login: on" {
        return Err("upgrading the package turned Start at login off".into());
    }
    smoke(Path::new("/usr/bin"), user)
}

/// `apt-get install ./<deb>`, then checks dpkg has `version` installed.
fn apt_install(deb: &Path, version: &str) -> Result<(), String> {
    let deb = deb
        .canonicalize()
        .map_err(|e| format!("cannot find {}: {e}", deb.display()))?;
    crate::run(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .arg(&deb)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    let installed = output(Command::new("dpkg-query").args(["-W", "-f", "${Version}", "pinchat"]))?;
    if installed != version {
        return Err(format!("dpkg has pinchat {installed:?} installed, not {version}"));
    }
    println!("xtask: apt installed pinchat {version}");
    Ok(())
}

/// `/usr/bin/pinchat autostart [state]` for the user whose configuration is in `user/config`.
fn autostart(user: &Path, state: Option<&str>) -> Result<String, String> {
    let out = output(
        Command::new("/usr/bin/pinchat")
            .arg("autostart")
            .args(state)
            .env("XDG_CONFIG_HOME", user.join("config")),
    )?;
    Ok(out.trim().to_owned())
}

/// Every file under `dir` with its contents.
fn user_files(dir: &Path) -> Result<std::collections::BTreeMap<PathBuf, Vec<u8>>, String> {
    let mut files = std::collections::BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).map_err(|e| format!("cannot read {}: {e}", d.display()))? {
            let e = e.map_err(|e| e.to_string())?;
            let kind = e.file_type().map_err(|e| e.to_string())?;
            if kind.is_dir() {
                todo.push(e.path());
            } else if kind.is_file() {
                let bytes = std::fs::read(e.path()).map_err(|e| e.to_string())?;
                files.insert(e.path(), bytes);
            }
        }
    }
    Ok(files)
}

/// The files in the places the package installs into (those that exist).
fn installed_files() -> Result<std::collections::BTreeSet<String>, String> {
    let places: Vec<&str> = [
        "/usr/bin",
        "/usr/share/applications",
        "/usr/share/metainfo",
        "/usr/share/icons/hicolor",
        "/usr/share/doc",
        "/usr/share/man/man1",
    ]
    .into_iter()
    .filter(|p| Path::new(p).exists())
    .collect();
    let out = output(Command::new("find").args(places))?;
    Ok(out.lines().map(str::to_owned).collect())
}
