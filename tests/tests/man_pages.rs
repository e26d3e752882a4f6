//! The Linux package's man pages (`installers/linux/man/*.1`) are the programs' own command lines,
//! rendered by clap_mangen: this test renders them again and fails when a committed page differs, so a
//! changed option cannot ship with a stale page. `PINCHAT_WRITE_MAN=1` rewrites the pages instead.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Each program's command line as the package ships it.
fn programs() -> Vec<clap::Command> {
    vec![
        // Packages build the app without its demo server, where `demo` is hidden.
        pinchat_ui::command().mut_subcommand("demo", |c| c.hide(true)),
        pinchat_daemon::cli::command(),
        pinchatctl::command(),
        pinchat_full::command(),
    ]
}

/// Renders every page (a program's and one per visible subcommand) into `dir`, the same whatever the
/// environment of the process: an option read from an environment variable names the variable, never
/// its current value.
fn render(dir: &Path) {
    for command in programs() {
        let command = command.mut_args(|a| a.hide_env_values(true));
        clap_mangen::generate_to(command, dir).expect("render the man pages");
    }
}

/// The pages in `dir`, by file name.
fn pages(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "1"))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

#[test]
fn the_packaged_man_pages_match_the_programs_command_lines() {
    let committed = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../installers/linux/man");
    let fresh = tempfile::tempdir().unwrap();
    render(fresh.path());
    let want = pages(fresh.path());
    assert!(want.contains_key("pinchatctl-send.1"), "{:?}", want.keys());
    if std::env::var_os("PINCHAT_WRITE_MAN").is_some() {
        let _ = std::fs::remove_dir_all(&committed);
        std::fs::create_dir_all(&committed).unwrap();
        for (name, page) in &want {
            std::fs::write(committed.join(name), page).unwrap();
        }
    }
    let got = pages(&committed);
    let stale: std::collections::BTreeSet<&String> = want
        .keys()
        .chain(got.keys())
        .filter(|name| want.get(*name) != got.get(*name))
        .collect();
    assert!(
        stale.is_empty(),
        "man pages differ from the programs: {stale:?}; run `PINCHAT_WRITE_MAN=1 cargo test -p pinchat-tests --test man_pages` and commit installers/linux/man"
    );
}
