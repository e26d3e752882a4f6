//! The `pinchat-server` command line: parses arguments, sets up logging, binds the socket and calls the
//! rest of the library. It lives in the library so that the release binary and the end-to-end tests'
//! binary are the same code: both are a one-line `main` calling [`main`].

use crate::config::{Config, LogFormat, TlsConfig};
use crate::{RunOptions, admin, demo, open_store};
use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use pinchat_proto::Presence;
use std::io::{BufRead, IsTerminal};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "pinchat-server",
    version,
    about = "The pinchat server: accounts, contacts, presence, messages and pinned-contact push."
)]
struct Cli {
    /// TOML configuration file (see docs/operations.md).
    #[arg(long, env = "PINCHAT_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// SQLite database file (overrides `database` in the config file).
    #[arg(long, env = "PINCHAT_DATABASE", global = true)]
    database: Option<PathBuf>,
    /// PostgreSQL connection string: keep the data there, as a node of a cluster (overrides `store`
    /// in the config file; see docs/operations.md, *Cluster mode*).
    #[arg(long, env = "PINCHAT_STORE", global = true, hide_env_values = true)]
    store: Option<String>,
    /// With `sslmode=require` in the connection string: a PEM file of the CA that signed PostgreSQL's
    /// certificate (overrides `store_ca` in the config file).
    #[arg(long, env = "PINCHAT_STORE_CA", global = true)]
    store_ca: Option<PathBuf>,
    /// Log format.
    #[arg(long, env = "PINCHAT_LOG_FORMAT", global = true, value_enum)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve clients (the default).
    Serve(ServeArgs),
    /// Try pinchat: create the demo world in a data directory and serve it, with contacts that change state
    /// and send messages now and then.
    Demo(DemoArgs),
    /// Create the demo world (user "demo", password "demo", 30 contacts) in the database.
    SeedDemo,
    /// Copy a SQLite database into the (empty) PostgreSQL database of `--store`, to move a server to
    /// cluster mode; stop the server first. Keys, cursors and the epoch are kept, so clients carry on.
    ImportSqlite {
        /// The SQLite file (`database` of the old server).
        file: PathBuf,
    },
    /// Manage accounts.
    #[command(subcommand)]
    Account(AccountCmd),
    /// Manage contact lists.
    #[command(subcommand)]
    Contacts(ContactsCmd),
}

#[derive(Args, Default)]
struct ServeArgs {
    /// Address to listen on, e.g. 127.0.0.1:7420 (port 0 picks a free port).
    #[arg(long, env = "PINCHAT_LISTEN")]
    listen: Option<SocketAddr>,
    /// PEM certificate chain for TLS.
    #[arg(long, env = "PINCHAT_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for TLS.
    #[arg(long, env = "PINCHAT_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Allow plain HTTP on a non-loopback address (development only).
    #[arg(long)]
    insecure_plaintext: bool,
}

#[derive(Args)]
struct DemoArgs {
    /// Where the demo database lives.
    #[arg(long, default_value = "demo-data")]
    data_dir: PathBuf,
    /// Seconds between demo events (0: no animation).
    #[arg(long, default_value_t = 4)]
    every: u64,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum AccountCmd {
    /// Create an account. The password is asked on the terminal, or read from stdin with --password-stdin.
    Create {
        /// Login name.
        login: String,
        /// Display name (default: the login).
        #[arg(long)]
        name: Option<String>,
        /// Read the password from the first line of stdin.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Disable an account and revoke its keys.
    Disable { login: String },
    /// Enable a disabled account.
    Enable { login: String },
    /// Set a new password (revokes every key of the account).
    SetPassword {
        login: String,
        /// Read the password from the first line of stdin.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Change the profile: display name, avatar image, signature, description, state, status.
    SetProfile {
        login: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        signature: Option<String>,
        #[arg(long)]
        description: Option<String>,
        /// PNG, JPEG, GIF or WebP file.
        #[arg(long)]
        avatar: Option<PathBuf>,
        /// offline, online, busy, idle or do_not_disturb.
        #[arg(long)]
        state: Option<Presence>,
        #[arg(long)]
        status: Option<String>,
    },
    /// Revoke every auth key of an account (logs out all its devices).
    RevokeKeys { login: String },
    /// Show an account.
    Show { login: String },
}

#[derive(Subcommand)]
enum ContactsCmd {
    /// Make two accounts contacts of each other.
    Link { a: String, b: String },
    /// List an account's contacts.
    List { login: String },
}

/// Writes a line of a command's output. A reader that went away (`pinchat-server contacts list demo |
/// head -1`) ends the command quietly — see [`main`] — instead of panicking as `println!` does.
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($t)*).map_err(anyhow::Error::from)?
    }};
}

/// Writes a status line of the server; if nobody reads stdout, the server goes on regardless.
fn note(line: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

/// `true` when the error is a closed standard output (the reader of a pipe exited).
fn closed_pipe(e: &anyhow::Error) -> bool {
    e.chain()
        .filter_map(|c| c.downcast_ref::<std::io::Error>())
        .any(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
}

/// Runs the command line with the process's arguments.
pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(real_main(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // Whoever read the output has all they wanted.
        Err(e) if closed_pipe(&e) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn real_main(cli: Cli) -> anyhow::Result<()> {
    let mut config = Config::load(cli.config.as_deref())?;
    // The TURN secret is best kept out of files: the environment wins.
    if let Some(key) = std::env::var_os("PINCHAT_GATEWAY_KEY") {
        let key = key
            .into_string()
            .map_err(|_| anyhow::anyhow!("PINCHAT_GATEWAY_KEY is not valid UTF-8"))?;
        config.gateway_key = Some(crate::config::Secret(key));
    }
    if let Some(secret) = std::env::var_os("PINCHAT_TURN_SECRET") {
        let secret = secret
            .into_string()
            .map_err(|_| anyhow::anyhow!("PINCHAT_TURN_SECRET is not valid UTF-8"))?;
        config.ice.turn_secret = Some(crate::config::Secret(secret));
    }
    if let Some(db) = cli.database {
        config.database = db;
    }
    if let Some(store) = cli.store {
        config.store = Some(crate::config::Secret(store));
    }
    if let Some(ca) = cli.store_ca {
        config.store_ca = Some(ca);
    }
    if let Some(f) = cli.log_format {
        config.log_format = f;
    }
    init_logging(config.log_format);
    match cli.command.unwrap_or(Command::Serve(ServeArgs::default())) {
        Command::Serve(args) => {
            apply_serve_args(&mut config, args);
            serve(config, RunOptions::default(), None).await
        }
        Command::Demo(args) => {
            std::fs::create_dir_all(&args.data_dir)
                .with_context(|| format!("cannot create {}", args.data_dir.display()))?;
            config.database = args.data_dir.join("pinchat.db");
            apply_serve_args(&mut config, args.serve);
            let animate = (args.every > 0).then(|| Duration::from_secs(args.every));
            serve(config, RunOptions { demo: true, animate }, Some(())).await
        }
        Command::SeedDemo => {
            let (store, writer) = open_store(&config, None).await?;
            let seeded = demo::seed(store.as_ref()).await?;
            finish(store, writer).await;
            if seeded.created {
                say!(
                    "created the demo world: log in as {:?} with password {:?}",
                    demo::DEMO_LOGIN,
                    demo::DEMO_PASSWORD
                );
            } else {
                say!(
                    "the demo world already exists: log in as {:?} with password {:?}",
                    demo::DEMO_LOGIN,
                    demo::DEMO_PASSWORD
                );
            }
            Ok(())
        }
        Command::ImportSqlite { file } => {
            let Some(url) = &config.store else {
                anyhow::bail!(
                    "import-sqlite copies into PostgreSQL: give its connection string with --store, PINCHAT_STORE \
                     or `store` in the config file"
                );
            };
            let done =
                crate::store::postgres::import_sqlite(&url.0, config.store_ca.as_deref(), &file).await?;
            say!(
                "imported {}: {} accounts, {} messages, {} rows in all; the cluster continues from cursor {}",
                file.display(),
                done.accounts,
                done.messages,
                done.rows,
                done.cursor
            );
            Ok(())
        }
        Command::Account(cmd) => account(&config, cmd).await,
        Command::Contacts(cmd) => contacts(&config, cmd).await,
    }
}

fn apply_serve_args(config: &mut Config, args: ServeArgs) {
    if let Some(l) = args.listen {
        config.listen = l;
    }
    if let (Some(cert), Some(key)) = (args.tls_cert, args.tls_key) {
        config.tls = Some(TlsConfig { cert, key });
    }
    config.insecure_plaintext |= args.insecure_plaintext;
}

async fn serve(config: Config, options: RunOptions, demo: Option<()>) -> anyhow::Result<()> {
    config.validate()?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (is another server running there? pick another with --listen)",
                config.listen
            )
        })?;
    let local = listener.local_addr()?;
    let scheme = if config.tls.is_some() { "https" } else { "http" };
    // Tests and scripts read this line to learn the port when listening on port 0.
    note(format_args!("pinchat-server listening on {scheme}://{local}"));
    if demo.is_some() {
        note(format_args!(
            "\nDemo world ready. Log in as {login:?} with password {pw:?}:\n\n  \
             curl -s -X POST {scheme}://{local}/v1/login -H 'content-type: application/json' \\\n    \
             -d '{{\"account\":\"{login}\",\"password\":\"{pw}\"}}'\n\n\
             then send the key as `Authorization: Bearer <key>`, e.g. GET /v1/contacts.\n\
             See docs/protocol.md for every endpoint. Press Ctrl-C to stop.",
            login = demo::DEMO_LOGIN,
            pw = demo::DEMO_PASSWORD,
        ));
    }
    let shutdown = CancellationToken::new();
    tokio::spawn(wait_for_signal(shutdown.clone()));
    crate::run(config, listener, shutdown, options).await
}

async fn wait_for_signal(shutdown: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
        else {
            tracing::error!("cannot install signal handlers");
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("shutting down");
    shutdown.cancel();
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Reads a password from stdin (`--password-stdin`) or asks twice on the terminal. Never from argv.
fn read_password(from_stdin: bool) -> anyhow::Result<String> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("cannot read the password from stdin")?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_owned());
    }
    if !std::io::stdin().is_terminal() {
        anyhow::bail!("no terminal to ask for the password: pipe it in and pass --password-stdin");
    }
    let first = rpassword::prompt_password("password: ")?;
    let second = rpassword::prompt_password("again: ")?;
    anyhow::ensure!(first == second, "the two passwords differ");
    Ok(first)
}

async fn finish(store: std::sync::Arc<dyn crate::store::Store>, writer: crate::store::StoreThreads) {
    drop(store);
    let _ = tokio::task::spawn_blocking(move || writer.join()).await;
}

async fn account(config: &Config, cmd: AccountCmd) -> anyhow::Result<()> {
    // Read the password before opening the database, so that a typo does not hold a connection open.
    let password = match &cmd {
        AccountCmd::Create { password_stdin, .. } | AccountCmd::SetPassword { password_stdin, .. } => {
            Some(read_password(*password_stdin)?)
        }
        _ => None,
    };
    let avatar = match &cmd {
        AccountCmd::SetProfile {
            avatar: Some(path), ..
        } => Some(std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?),
        _ => None,
    };
    let (store, writer) = open_store(config, None).await?;
    let s = store.as_ref();
    let result = async {
        match cmd {
            AccountCmd::Create { login, name, .. } => {
                let id =
                    admin::create_account(s, &login, &password.unwrap_or_default(), name.as_deref()).await?;
                say!("created account {login:?} (id {id})");
            }
            AccountCmd::Disable { login } => {
                s.set_disabled(admin::account(s, &login).await?, true).await?;
                say!("disabled {login:?} and revoked its keys");
            }
            AccountCmd::Enable { login } => {
                s.set_disabled(admin::account(s, &login).await?, false).await?;
                say!("enabled {login:?}");
            }
            AccountCmd::SetPassword { login, .. } => {
                admin::set_password(s, &login, &password.unwrap_or_default()).await?;
                say!("password of {login:?} changed; its keys are revoked");
            }
            AccountCmd::SetProfile {
                login,
                name,
                signature,
                description,
                state,
                status,
                ..
            } => {
                let args = admin::ProfileArgs {
                    name,
                    signature,
                    description,
                    avatar,
                    state,
                    status,
                };
                admin::set_profile(s, &login, args).await?;
                say!("profile of {login:?} updated");
            }
            AccountCmd::RevokeKeys { login } => {
                let n = s.revoke_all_keys(admin::account(s, &login).await?).await?;
                say!("revoked {n} key(s) of {login:?}");
            }
            AccountCmd::Show { login } => {
                let me = s.me(admin::account(s, &login).await?).await?;
                say!("{}", serde_json::to_string_pretty(&me)?);
            }
        }
        anyhow::Ok(())
    }
    .await;
    finish(store, writer).await;
    result
}

async fn contacts(config: &Config, cmd: ContactsCmd) -> anyhow::Result<()> {
    let (store, writer) = open_store(config, None).await?;
    let s = store.as_ref();
    let result = async {
        match cmd {
            ContactsCmd::Link { a, b } => {
                let (ia, ib) = (admin::account(s, &a).await?, admin::account(s, &b).await?);
                s.link(ia, ib).await?;
                say!("{a:?} and {b:?} are contacts");
            }
            ContactsCmd::List { login } => {
                for c in s.contacts(admin::account(s, &login).await?).await? {
                    say!("{}\t{}\t{}", c.id, c.login, c.name);
                }
            }
        }
        anyhow::Ok(())
    }
    .await;
    finish(store, writer).await;
    result
}
