//! `cargo xtask package macos [--bin-dir DIR] [--check]`: the macOS app bundle, laid out exactly as it
//! ships, and — off macOS — a structural DMG holding it.
//!
//! `pinchat.app/Contents/{Info.plist, MacOS/{pinchat, pinchatd, pinchatctl, pinchat-full}, Resources/pinchat.icns}`
//! with the version from Cargo. The programs come from `--bin-dir` (universal binaries that
//! `installers/macos/make-dmg.sh` builds on a Mac); without it — on Linux, where macOS programs cannot
//! be linked — each is a placeholder script that says so, and the DMG's name says `layout-only`. The
//! shipped DMG is made on macOS by `make-dmg.sh` (codesign, hdiutil, notarytool); the one written here,
//! with apple-dmg (UDIF around a FAT32 volume: no symlinks, no Unix modes), proves the layout, the
//! plist, the entitlements and the icon.
//!
//! `--check` reads everything back: the Info.plist's keys, the entitlements, the icon's sizes, the DMG's
//! files, and shellcheck over the script.

use std::path::{Path, PathBuf};
use std::process::Command;

const PROGRAMS: [&str; 4] = ["pinchat", "pinchatd", "pinchatctl", "pinchat-full"];
const OUT: &str = "target/macos";

pub struct Options {
    pub bin_dir: Option<PathBuf>,
    pub check: bool,
}

impl Options {
    pub fn parse(args: &[String]) -> Result<Options, String> {
        let mut options = Options {
            bin_dir: None,
            check: false,
        };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            match arg.as_str() {
                "--bin-dir" => {
                    options.bin_dir = Some(it.next().ok_or("--bin-dir needs a directory")?.into());
                }
                "--check" => options.check = true,
                other => return Err(format!("unknown option {other:?}")),
            }
        }
        Ok(options)
    }
}

fn io(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> String {
    let path = path.display().to_string();
    let what = what.to_owned();
    move |e| format!("cannot {what} {path}: {e}")
}

/// Writes the bundle (and, off macOS, the DMG); returns the bundle's path and the DMG's, if any.
pub fn package(options: &Options) -> Result<(PathBuf, Option<PathBuf>), String> {
    let version = env!("CARGO_PKG_VERSION");
    let out = PathBuf::from(OUT);
    let app = out.join("pinchat.app");
    let _ = std::fs::remove_dir_all(&app);
    let contents = app.join("Contents");
    for dir in ["MacOS", "Resources"] {
        let d = contents.join(dir);
        std::fs::create_dir_all(&d).map_err(io("create", &d))?;
    }
    let plist = std::fs::read_to_string("installers/macos/Info.plist.in")
        .map_err(|e| format!("cannot read installers/macos/Info.plist.in: {e}"))?
        .replace("@VERSION@", version);
    std::fs::write(contents.join("Info.plist"), plist).map_err(io("write", &contents))?;
    std::fs::copy(
        "installers/icons/pinchat.icns",
        contents.join("Resources/pinchat.icns"),
    )
    .map_err(io("copy", Path::new("installers/icons/pinchat.icns")))?;
    for program in PROGRAMS {
        let dest = contents.join("MacOS").join(program);
        match &options.bin_dir {
            Some(dir) => {
                let src = dir.join(program);
                std::fs::copy(&src, &dest).map_err(io("copy", &src))?;
            }
            None => {
                let script = format!(
                    "#!/bin/sh\n# Placeholder: this bundle was laid out on a machine that cannot link macOS programs.\n\
                     echo '{program}: placeholder; build the real app on macOS with installers/macos/make-dmg.sh' >&2\nexit 1\n"
                );
                std::fs::write(&dest, script).map_err(io("write", &dest))?;
            }
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o755))
                .map_err(io("set the mode of", &dest))?;
        }
    }
    println!("{}", app.display());
    if cfg!(target_os = "macos") {
        // hdiutil makes the real DMG there (make-dmg.sh), after signing.
        return Ok((app, None));
    }
    let name = if options.bin_dir.is_some() {
        format!("pinchat-{version}-unsigned.dmg")
    } else {
        format!("pinchat-{version}-layout-only.dmg")
    };
    let dmg = out.join(name);
    // A volume with room for the programs: the bundle's size, doubled, and at least 64 MB (FAT32's
    // smallest comfortable size), in 512-byte sectors.
    let size = dir_size(&app).map_err(io("measure", &app))?;
    let sectors = ((size * 2).max(64 << 20) / 512) as u32;
    apple_dmg::create_dmg(&app, &dmg, "pinchat", sectors)
        .map_err(|e| format!("cannot write the DMG: {e:#}"))?;
    println!(
        "{}{}",
        dmg.display(),
        if options.bin_dir.is_none() {
            "  (layout only: placeholder programs; the shipped DMG is built on macOS by installers/macos/make-dmg.sh)"
        } else {
            "  (unsigned, FAT32: for checking; the shipped DMG is built on macOS by installers/macos/make-dmg.sh)"
        }
    );
    Ok((app, Some(dmg)))
}

fn dir_size(dir: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            dir_size(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

pub fn run(options: &Options) -> Result<(), String> {
    let (app, dmg) = package(options)?;
    if options.check {
        check_bundle(&app)?;
        if let Some(dmg) = dmg {
            check_dmg(&dmg)?;
        }
        check_script()?;
    }
    Ok(())
}

fn check_bundle(app: &Path) -> Result<(), String> {
    let contents = app.join("Contents");
    let info: plist::Dictionary = plist::from_file(contents.join("Info.plist"))
        .map_err(|e| format!("Info.plist does not parse: {e}"))?;
    let string = |key: &str| {
        info.get(key)
            .and_then(plist::Value::as_string)
            .ok_or_else(|| format!("Info.plist has no string {key}"))
    };
    let executable = string("CFBundleExecutable")?;
    if !contents.join("MacOS").join(executable).is_file() {
        return Err(format!(
            "CFBundleExecutable names {executable}, which is not in Contents/MacOS"
        ));
    }
    if string("CFBundleIdentifier")? != "io.pinchat.pinchat" {
        return Err("CFBundleIdentifier is not io.pinchat.pinchat".into());
    }
    let version = env!("CARGO_PKG_VERSION");
    if string("CFBundleShortVersionString")? != version {
        return Err(format!(
            "CFBundleShortVersionString is not Cargo's version {version}"
        ));
    }
    let minimum = string("LSMinimumSystemVersion")?;
    let major: u32 = minimum
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    if major < 13 {
        return Err(format!(
            "LSMinimumSystemVersion {minimum} is older than 13 (Start at login uses SMAppService)"
        ));
    }
    if info.get("LSUIElement").and_then(plist::Value::as_boolean) != Some(true) {
        return Err("LSUIElement is not true: the app would show a Dock icon".into());
    }
    for key in ["NSCameraUsageDescription", "NSMicrophoneUsageDescription"] {
        if string(key)?.trim().is_empty() {
            return Err(format!(
                "{key} is empty: macOS would refuse the device without asking"
            ));
        }
    }
    let icon = string("CFBundleIconFile")?;
    let icns = std::fs::read(contents.join("Resources").join(format!("{icon}.icns")))
        .map_err(|e| format!("the icon {icon}.icns: {e}"))?;
    let kinds = icns_kinds(&icns)?;
    for want in ["ic07", "ic08", "ic09", "ic11", "ic12", "ic13", "ic14"] {
        if !kinds.iter().any(|k| k == want) {
            return Err(format!("the icon has no {want} image (it has {kinds:?})"));
        }
    }
    let entitlements: plist::Dictionary = plist::from_file("installers/macos/entitlements.plist")
        .map_err(|e| format!("entitlements.plist does not parse: {e}"))?;
    for key in [
        "com.apple.security.device.camera",
        "com.apple.security.device.audio-input",
    ] {
        if entitlements.get(key).and_then(plist::Value::as_boolean) != Some(true) {
            return Err(format!("the entitlements do not grant {key}"));
        }
    }
    println!(
        "xtask: pinchat.app: Info.plist, entitlements and icon ({}) check out",
        kinds.join(" ")
    );
    Ok(())
}

/// The image types in an ICNS file.
fn icns_kinds(icns: &[u8]) -> Result<Vec<String>, String> {
    if icns.len() < 8 || &icns[..4] != b"icns" {
        return Err("the icon is not an ICNS file".into());
    }
    let mut kinds = Vec::new();
    let mut at = 8;
    while at + 8 <= icns.len() {
        let len = u32::from_be_bytes([icns[at + 4], icns[at + 5], icns[at + 6], icns[at + 7]]) as usize;
        kinds.push(String::from_utf8_lossy(&icns[at..at + 4]).into_owned());
        if len < 8 {
            return Err("the icon has a broken entry".into());
        }
        at += len;
    }
    Ok(kinds)
}

/// Reads the DMG back (the UDIF container, then the FAT32 volume in it) and compares its files with
/// the bundle's.
fn check_dmg(dmg: &Path) -> Result<(), String> {
    let mut reader =
        apple_dmg::DmgReader::open(dmg).map_err(|e| format!("the DMG does not read back: {e:#}"))?;
    let partitions = reader.plist().partitions().len();
    let fat = (0..partitions)
        .find(|&i| reader.partition_name(i).starts_with("FAT32"))
        .ok_or("the DMG holds no FAT32 volume")?;
    let volume = reader
        .partition_data(fat)
        .map_err(|e| format!("the DMG's volume does not read back: {e:#}"))?;
    let fs = fatfs::FileSystem::new(std::io::Cursor::new(volume), fatfs::FsOptions::new())
        .map_err(|e| format!("the DMG's volume is not FAT32: {e}"))?;
    let mut in_dmg = Vec::new();
    list_fat(&fs.root_dir(), "", &mut in_dmg)?;
    in_dmg.sort();
    let mut in_app = Vec::new();
    list_dir(
        Path::new(OUT),
        Path::new(OUT).join("pinchat.app").as_path(),
        &mut in_app,
    )
    .map_err(|e| format!("cannot list the bundle: {e}"))?;
    in_app.sort();
    if in_dmg != in_app {
        return Err(format!(
            "the DMG holds {in_dmg:#?}\nbut the bundle is {in_app:#?}"
        ));
    }
    println!(
        "xtask: {} read back: {} files, as in the bundle:",
        dmg.display(),
        in_dmg.len()
    );
    for (path, size) in &in_dmg {
        println!("    {path}  {size} bytes");
    }
    Ok(())
}

type Listing = Vec<(String, u64)>;

fn list_fat<T: fatfs::ReadWriteSeek>(
    dir: &fatfs::Dir<'_, T>,
    prefix: &str,
    out: &mut Listing,
) -> Result<(), String> {
    for entry in dir.iter() {
        let entry = entry.map_err(|e| e.to_string())?;
        let name = entry.file_name();
        if name == "." || name == ".." {
            continue;
        }
        let path = format!("{prefix}/{name}");
        if entry.is_dir() {
            list_fat(&entry.to_dir(), &path, out)?;
        } else {
            out.push((path, entry.len()));
        }
    }
    Ok(())
}

fn list_dir(base: &Path, dir: &Path, out: &mut Listing) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            list_dir(base, &path, out)?;
        } else {
            let rel = path.strip_prefix(base).map_err(std::io::Error::other)?;
            out.push((format!("/{}", rel.to_string_lossy()), entry.metadata()?.len()));
        }
    }
    Ok(())
}

fn check_script() -> Result<(), String> {
    crate::need("shellcheck", "shellcheck")?;
    let status = Command::new("shellcheck")
        .arg("installers/macos/make-dmg.sh")
        .status()
        .map_err(|e| format!("cannot run shellcheck: {e}"))?;
    if !status.success() {
        return Err("shellcheck finds fault with installers/macos/make-dmg.sh".into());
    }
    println!("xtask: shellcheck installers/macos/make-dmg.sh: clean");
    Ok(())
}
