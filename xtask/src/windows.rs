//! `cargo xtask package msi [--profile P] [--check]`: the Windows installer, built on Linux.
//!
//! The programs are cross-built for `x86_64-pc-windows-gnu` with MinGW (the tray app without its demo
//! server, the daemon, `pinchatctl`), `WebView2Loader.dll` is taken from the webview2-com-sys build
//! (wry loads it at run time), and `wixl` (Debian's msitools) turns `installers/windows/pinchat.wxs`
//! into `target/windows/pinchat-<version>-x64.msi`. Release MSIs can come from a Windows runner with
//! WiX 3 and the same source.
//!
//! `--check` also writes an MSI one patch version higher (for the upgrade test) and runs the Windows
//! end-to-end test under Wine (`tests/tests/windows.rs`): install, the programs over the real named pipe
//! against the Linux server, the tray app without WebView2, upgrade, uninstall.

use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "x86_64-pc-windows-gnu";
const OUT: &str = "target/windows";

pub struct Options {
    /// `release` unless told (`dist` for what users get).
    pub profile: String,
    pub check: bool,
}

impl Options {
    pub fn parse(args: &[String]) -> Result<Options, String> {
        let mut options = Options {
            profile: "release".into(),
            check: false,
        };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            match arg.as_str() {
                "--profile" => {
                    options.profile = it
                        .next()
                        .ok_or("--profile needs a value (release, dist)")?
                        .clone();
                }
                "--check" => options.check = true,
                other => return Err(format!("unknown option {other:?}")),
            }
        }
        Ok(options)
    }
}

/// Builds the programs and stages them with the loader DLL; returns the staging folder.
fn build(profile: &str) -> Result<PathBuf, String> {
    crate::need("x86_64-w64-mingw32-gcc", "gcc-mingw-w64-x86-64")?;
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().any(|l| l == TARGET))
        .unwrap_or(false);
    if !installed {
        crate::run(Command::new("rustup").args(["target", "add", TARGET]))?;
    }
    crate::build_programs(profile, Some(TARGET))?;
    let dir = profile_dir(profile);
    let stage = PathBuf::from(OUT).join("bin");
    std::fs::create_dir_all(&stage).map_err(|e| format!("cannot create {}: {e}", stage.display()))?;
    // Shipped without debug information, as the .deb is (cargo-deb --strip): a third of the size.
    crate::need("x86_64-w64-mingw32-strip", "binutils-mingw-w64-x86-64")?;
    for exe in [
        "pinchat.exe",
        "pinchatd.exe",
        "pinchatctl.exe",
        "pinchat-full.exe",
    ] {
        crate::run(
            Command::new("x86_64-w64-mingw32-strip")
                .arg("--strip-debug")
                .arg("-o")
                .arg(stage.join(exe))
                .arg(dir.join(exe)),
        )?;
    }
    copy(&webview2_loader(&dir)?, &stage.join("WebView2Loader.dll"))?;
    Ok(stage)
}

fn profile_dir(profile: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| PathBuf::from("target"), PathBuf::from);
    target
        .join(TARGET)
        .join(if profile == "dev" { "debug" } else { profile })
}

fn copy(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::copy(from, to)
        .map(|_| ())
        .map_err(|e| format!("cannot copy {} to {}: {e}", from.display(), to.display()))
}

/// The 64-bit `WebView2Loader.dll` that webview2-com-sys's build script puts in its output folder
/// (the newest, if it was built more than once).
fn webview2_loader(profile_dir: &Path) -> Result<PathBuf, String> {
    let build = profile_dir.join("build");
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(&build)
        .map_err(|e| format!("cannot list {}: {e}", build.display()))?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("webview2-com-sys-"))
        .map(|e| e.path().join("out/x64/WebView2Loader.dll"))
        .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
        .collect();
    found.sort();
    found.pop().map(|(_, p)| p).ok_or_else(|| {
        format!(
            "no WebView2Loader.dll under {}/webview2-com-sys-*/out/x64",
            build.display()
        )
    })
}

/// Writes the MSI for `version` from the staged programs.
fn msi(stage: &Path, version: &str, out: &Path) -> Result<(), String> {
    crate::need("wixl", "wixl")?;
    crate::run(
        Command::new("wixl")
            .args(["--arch", "x64", "-D"])
            .arg(format!("Version={version}"))
            .arg("-D")
            .arg(format!("BinDir={}", stage.display()))
            .args(["-D", "IconFile=installers/icons/pinchat.ico", "-o"])
            .arg(out)
            .arg("installers/windows/pinchat.wxs"),
    )
}

pub fn run(options: &Options) -> Result<(), String> {
    let version = env!("CARGO_PKG_VERSION");
    let stage = build(&options.profile)?;
    let out = PathBuf::from(OUT).join(format!("pinchat-{version}-x64.msi"));
    msi(&stage, version, &out)?;
    let size = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    println!("{} ({:.1} MB)", out.display(), size as f64 / 1e6);
    if options.check {
        // The same programs under the next patch version: what an upgrade installs.
        let mut parts: Vec<u32> = version.split('.').filter_map(|p| p.parse().ok()).collect();
        parts.resize(3, 0);
        parts[2] += 1;
        let next_version = format!("{}.{}.{}", parts[0], parts[1], parts[2]);
        let test_dir = PathBuf::from(OUT).join("upgrade-test");
        std::fs::create_dir_all(&test_dir).map_err(|e| e.to_string())?;
        let next = test_dir.join(format!("pinchat-{next_version}-x64.msi"));
        msi(&stage, &next_version, &next)?;
        crate::need("wine", "wine64")?;
        let absolute = |p: &Path| p.canonicalize().map_err(|e| format!("{}: {e}", p.display()));
        crate::run(
            Command::new(crate::cargo())
                // `--workspace`, as the suite builds, so that the dependencies it compiled are reused
                // (with `-p pinchat-tests` cargo unifies features differently and compiles some again).
                .args([
                    "test",
                    "--locked",
                    "--workspace",
                    "--test",
                    "windows",
                    "--",
                    "--ignored",
                ])
                .env("PINCHAT_MSI", absolute(&out)?)
                .env("PINCHAT_MSI_NEXT", absolute(&next)?)
                .env("PINCHAT_MSI_NEXT_VERSION", &next_version),
        )?;
    }
    Ok(())
}
