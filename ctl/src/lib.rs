//! `pinchatctl`: a command-line gadget over the daemon's local API (`pinchat-ipc`'s client). The command
//! line lives in this library so that the release binary and the end-to-end tests run the same one-line
//! `main`.
//!
//! Widgets are named by id or by account login. Passwords are read from the terminal, or with
//! `--password-stdin` from the first line of stdin — never from the command line.

mod names;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use erased::Show as _;
use names::Names;
use pinchat_ipc::api::*;
use pinchat_ipc::{Client, ClientError};
use std::collections::HashMap;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "pinchatctl",
    version,
    about = "Drive pinchat widgets through the daemon's local API."
)]
struct Cli {
    /// The daemon's socket (default: the platform's, or $PINCHAT_SOCKET).
    #[arg(long, env = "PINCHAT_SOCKET", global = true)]
    socket: Option<PathBuf>,
    /// Print answers as JSON.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The daemon's status and widgets.
    Status,
    /// Widgets, one line each.
    List,
    /// Add a widget: log in to a server with an account (then pick contacts with `pin`).
    Add {
        /// Server URL, e.g. http://127.0.0.1:7420.
        #[arg(long)]
        server: String,
        /// Account login.
        #[arg(long)]
        account: String,
        /// Read the password from the first line of stdin.
        #[arg(long)]
        password_stdin: bool,
    },
    /// The account's contacts (to pick pins from).
    Contacts {
        /// The widget: its id, or its account's login.
        widget: String,
    },
    /// Pin contacts (ids or logins, in display order); replaces the current pins.
    Pin {
        /// The widget: its id, or its account's login.
        widget: String,
        /// Contacts to pin (ids or logins), in the order the widget shows them.
        contacts: Vec<String>,
    },
    /// The widget: the account and each pinned contact with state and unread count.
    Show {
        /// The widget: its id, or its account's login.
        widget: String,
    },
    /// A live view: the widget, then every change as it happens (Ctrl-C to stop).
    Watch {
        /// The widget (id or account login); without it, every widget.
        widget: Option<String>,
    },
    /// Send a message to a pinned contact.
    Send {
        /// The widget: its id, or its account's login.
        widget: String,
        /// The contact: id or login.
        contact: String,
        /// The message (several words are joined with spaces).
        text: Vec<String>,
    },
    /// Show the unread messages from a pinned contact and mark them read.
    Read {
        /// The widget: its id, or its account's login.
        widget: String,
        /// The contact: id or login.
        contact: String,
        /// Only show them.
        #[arg(long)]
        keep_unread: bool,
    },
    /// The conversation with a pinned contact, newest last.
    History {
        /// The widget: its id, or its account's login.
        widget: String,
        /// The contact: id or login.
        contact: String,
        /// How many of the latest messages.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Fetch the pinned contacts' state from the server now.
    Refresh {
        /// The widget: its id, or its account's login.
        widget: String,
    },
    /// How the widget keeps current: push, poll or manual.
    Mode {
        /// The widget: its id, or its account's login.
        widget: String,
        /// push, poll or manual.
        mode: String,
        /// Seconds between polls (poll mode).
        #[arg(long)]
        interval: Option<u32>,
    },
    /// Log in again after the server refused the widget's key.
    Reauth {
        /// The widget: its id, or its account's login.
        widget: String,
        /// Read the password from the first line of stdin.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Bind the widget to another account (the old one is logged out and its data removed).
    Rebind {
        /// The widget: its id, or its account's login.
        widget: String,
        /// Server URL of the new account.
        #[arg(long)]
        server: String,
        /// The new account's login.
        #[arg(long)]
        account: String,
        /// Read the password from the first line of stdin.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Remove the widget (logs out, deletes its data and keyring entry).
    Remove {
        /// The widget: its id, or its account's login.
        widget: String,
    },
}

/// The command line's definition (its man page is made from it).
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

/// Runs `pinchatctl` with the process's arguments.
pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            match e.downcast_ref::<ClientError>() {
                Some(ClientError::Rpc(rpc)) => {
                    eprintln!("error: {} ({})", rpc.message, rpc.data.code);
                    if let Some(hint) = hint(&rpc.data.code) {
                        eprintln!("{hint}");
                    }
                }
                _ => eprintln!("error: {e:#}"),
            }
            std::process::ExitCode::FAILURE
        }
    }
}

/// What to do about an error, for the codes where the message alone does not say it.
fn hint(code: &str) -> Option<&'static str> {
    match code {
        "auth.required" => Some(
            "the server no longer accepts this widget's key: log in again with `pinchatctl reauth <widget>`",
        ),
        "keyring.unavailable" => Some(
            "pinchat keeps each widget's key in the system keyring, which is locked or missing in this session: \
             unlock it (log in to your desktop, or on Linux start `gnome-keyring-daemon --unlock` in this \
             D-Bus session) and try again",
        ),
        _ => None,
    }
}

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
        bail!("no terminal to ask for the password: pipe it in and pass --password-stdin");
    }
    Ok(rpassword::prompt_password("password: ")?)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut client = match &cli.socket {
        Some(p) => Client::connect(p).await?,
        None => Client::connect_default().await?,
    };
    let json = cli.json;
    let print = |value: &dyn erased::Show| {
        if json {
            println!("{}", value.json());
        } else {
            value.show();
        }
    };
    match cli.command {
        Command::Status => print(&client.call::<Status>(NoParams {}).await?),
        Command::List => print(&client.call::<ListWidgets>(NoParams {}).await?),
        Command::Add {
            server,
            account,
            password_stdin,
        } => {
            let password = read_password(password_stdin)?;
            let created = client
                .call::<CreateWidget>(Login {
                    server,
                    account,
                    password,
                })
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&created)?);
            } else {
                println!(
                    "widget {} added for {} on {}",
                    created.widget.id, created.widget.account.login, created.widget.server
                );
                println!(
                    "pick up to {} contacts with: pinchatctl pin {} <id or login>...",
                    created.max_pins, created.widget.id
                );
                created.contacts.show();
            }
        }
        Command::Contacts { widget } => {
            let widget = resolve(&client, &widget).await?;
            print(&client.call::<Contacts>(WidgetRef { widget }).await?);
        }
        Command::Pin { widget, contacts } => {
            let widget = resolve(&client, &widget).await?;
            let list = client
                .call::<Contacts>(WidgetRef {
                    widget: widget.clone(),
                })
                .await?;
            let mut pins = vec![];
            for c in &contacts {
                let id = c.parse::<u64>().ok().or_else(|| {
                    list.iter()
                        .find(|x| x.login.eq_ignore_ascii_case(c))
                        .map(|x| x.id)
                });
                pins.push(
                    id.with_context(|| format!("{c:?} is neither a contact id nor a contact's login"))?,
                );
            }
            print(&client.call::<SetPins>(SetPinsParams { widget, pins }).await?);
        }
        Command::Show { widget } => {
            let widget = resolve(&client, &widget).await?;
            print(&client.call::<Snapshot>(WidgetRef { widget }).await?);
        }
        Command::Watch { widget } => {
            let widget = match widget {
                Some(w) => Some(resolve(&client, &w).await?),
                None => None,
            };
            let mut notifications = client.notifications().context("notifications already taken")?;
            client
                .call::<Subscribe>(SubscribeParams {
                    widgets: widget.clone().map(|w| vec![w]),
                })
                .await?;
            if let Some(w) = &widget {
                print(&client.call::<Snapshot>(WidgetRef { widget: w.clone() }).await?);
            }
            // Each widget's names, fetched once and kept from `widget.changed`.
            let mut names: HashMap<String, Names> = HashMap::new();
            while let Some(n) = notifications.recv().await {
                if json {
                    println!("{}", serde_json::to_string(&n)?);
                } else {
                    let w = n.widget().to_owned();
                    if let Notification::WidgetChanged { widget } = &n {
                        names.insert(w.clone(), Names::of(widget));
                    } else if !names.contains_key(&w)
                        && !matches!(n, Notification::WidgetRemoved { .. })
                        && let Ok(view) = client.call::<Snapshot>(WidgetRef { widget: w.clone() }).await
                    {
                        names.insert(w.clone(), Names::of(&view));
                    }
                    let known = names.get(&w).cloned().unwrap_or_default();
                    println!("{}", describe(&n, &known));
                }
                let _ = std::io::stdout().flush();
            }
            bail!("the daemon closed the connection");
        }
        Command::Send {
            widget,
            contact,
            text,
        } => {
            let widget = resolve(&client, &widget).await?;
            let contact = resolve_contact(&client, &widget, &contact).await?;
            let text = text.join(" ");
            let sent = client
                .call::<SendMessage>(SendParams {
                    widget: widget.clone(),
                    contact,
                    text,
                })
                .await?;
            if json {
                print(&sent);
            } else {
                let names = names_of(&client, &widget).await;
                println!("{}", names.message(&sent, chrono::Local::now()));
            }
        }
        Command::Read {
            widget,
            contact,
            keep_unread,
        } => {
            let widget = resolve(&client, &widget).await?;
            let contact = resolve_contact(&client, &widget, &contact).await?;
            let messages = client
                .call::<Unread>(UnreadParams::from(ContactRef {
                    widget: widget.clone(),
                    contact,
                }))
                .await?;
            show_messages(&client, &widget, &messages, json).await;
            if !keep_unread && let Some(last) = messages.last() {
                client
                    .call::<MarkRead>(MarkReadParams {
                        widget,
                        contact,
                        up_to: Some(last.id),
                    })
                    .await?;
            }
        }
        Command::History {
            widget,
            contact,
            limit,
        } => {
            let widget = resolve(&client, &widget).await?;
            let contact = resolve_contact(&client, &widget, &contact).await?;
            let mut page = client
                .call::<History>(HistoryParams {
                    widget: widget.clone(),
                    contact,
                    before: None,
                    limit: Some(limit),
                })
                .await?;
            page.messages.reverse();
            show_messages(&client, &widget, &page.messages, json).await;
        }
        Command::Refresh { widget } => {
            let widget = resolve(&client, &widget).await?;
            print(&client.call::<Refresh>(WidgetRef { widget }).await?);
        }
        Command::Mode {
            widget,
            mode,
            interval,
        } => {
            let widget = resolve(&client, &widget).await?;
            let mode: Mode = serde_json::from_value(serde_json::Value::String(mode.clone()))
                .map_err(|_| anyhow::anyhow!("unknown mode {mode:?}: use push, poll or manual"))?;
            print(
                &client
                    .call::<SetMode>(SetModeParams {
                        widget,
                        mode,
                        interval_secs: interval,
                    })
                    .await?,
            );
        }
        Command::Reauth {
            widget,
            password_stdin,
        } => {
            let widget = resolve(&client, &widget).await?;
            let password = read_password(password_stdin)?;
            print(&client.call::<Reauth>(ReauthParams { widget, password }).await?);
        }
        Command::Rebind {
            widget,
            server,
            account,
            password_stdin,
        } => {
            let widget = resolve(&client, &widget).await?;
            let password = read_password(password_stdin)?;
            let created = client
                .call::<RebindWidget>(Rebind {
                    widget,
                    login: Login {
                        server,
                        account,
                        password,
                    },
                })
                .await?;
            print(&created.widget);
        }
        Command::Remove { widget } => {
            let widget = resolve(&client, &widget).await?;
            client
                .call::<RemoveWidget>(WidgetRef {
                    widget: widget.clone(),
                })
                .await?;
            if !json {
                println!("removed widget {widget}");
            }
        }
    }
    Ok(())
}

/// A widget's names (empty when its snapshot cannot be had: ids are printed then).
async fn names_of(client: &Client, widget: &str) -> Names {
    client
        .call::<Snapshot>(WidgetRef {
            widget: widget.to_owned(),
        })
        .await
        .map(|v| Names::of(&v))
        .unwrap_or_default()
}

/// Messages, oldest first: one line each with names and local times, or JSON.
async fn show_messages(client: &Client, widget: &str, messages: &[MessageView], json: bool) {
    if json {
        println!("{}", serde_json::to_string_pretty(messages).unwrap_or_default());
        return;
    }
    if messages.is_empty() {
        println!("no messages");
        return;
    }
    let names = names_of(client, widget).await;
    let now = chrono::Local::now();
    for m in messages {
        println!("{}", names.message(m, now));
    }
}

/// A widget id, from an id or an account login.
async fn resolve(client: &Client, name: &str) -> anyhow::Result<String> {
    let widgets = client.call::<ListWidgets>(NoParams {}).await?;
    if let Some(w) = widgets
        .iter()
        .find(|w| w.id == name || w.login.eq_ignore_ascii_case(name))
    {
        return Ok(w.id.clone());
    }
    bail!("no widget {name:?}; `pinchatctl list` shows them")
}

/// A pinned contact's id, from an id or a login.
async fn resolve_contact(client: &Client, widget: &str, name: &str) -> anyhow::Result<u64> {
    if let Ok(id) = name.parse() {
        return Ok(id);
    }
    let list = client
        .call::<Contacts>(WidgetRef {
            widget: widget.to_owned(),
        })
        .await?;
    list.iter()
        .find(|c| c.login.eq_ignore_ascii_case(name))
        .map(|c| c.id)
        .with_context(|| format!("no contact {name:?}"))
}

fn state(s: pinchat_proto::Presence) -> &'static str {
    match s {
        pinchat_proto::Presence::Online => "● online",
        pinchat_proto::Presence::Busy => "● busy",
        pinchat_proto::Presence::Idle => "◐ idle",
        pinchat_proto::Presence::DoNotDisturb => "⊘ dnd",
        pinchat_proto::Presence::Offline => "○ offline",
    }
}

fn describe(n: &Notification, names: &Names) -> String {
    let now = chrono::Local::now();
    match n {
        Notification::ContactChanged {
            widget,
            contact,
            fields,
        } => {
            format!(
                "{widget} {}: {}",
                names.name(*contact),
                serde_json::to_string(fields).unwrap_or_default()
            )
        }
        Notification::WidgetChanged { widget } => {
            format!("{} changed: {} pins", widget.id, widget.pins.len())
        }
        Notification::WidgetRemoved { widget } => format!("{widget} removed"),
        Notification::MessageReceived { widget, message, .. } => {
            format!("{widget} {}", names.message(message, now))
        }
        Notification::MessageDelivery {
            widget,
            message,
            error,
        } => {
            format!(
                "{widget} {}{}",
                names.message(message, now),
                error.as_deref().map(|e| format!(" — {e}")).unwrap_or_default()
            )
        }
        Notification::UnreadChanged {
            widget,
            contact,
            unread,
            total,
        } => {
            format!(
                "{widget} unread from {}: {unread} (total {total})",
                names.name(*contact)
            )
        }
        Notification::ConnectionChanged {
            widget,
            connection,
            via,
            stale,
        } => {
            format!(
                "{widget} connection: {connection:?}{}{}",
                carrier(*via),
                if *stale { " (stale)" } else { "" }
            )
        }
        Notification::AuthRequired { widget, message } => {
            format!("{widget} needs the password again: {message} — run `pinchatctl reauth {widget}`")
        }
        Notification::CallIncoming {
            widget,
            call,
            contact,
            video,
        } => format!(
            "{widget} {} is calling ({}), call {call}",
            names.name(*contact),
            if *video { "video" } else { "voice" }
        ),
        Notification::CallChanged {
            widget,
            call,
            contact,
            state,
        } => format!("{widget} call {call} with {}: {state:?}", names.name(*contact)),
        Notification::CallSignal {
            widget,
            call,
            contact,
            signal,
        } => {
            let kind = match signal {
                pinchat_proto::stream::CallSignal::Offer { .. } => "offer",
                pinchat_proto::stream::CallSignal::Answer { .. } => "answer",
                pinchat_proto::stream::CallSignal::Ice { .. } => "ICE candidate",
                _ => "signal",
            };
            format!("{widget} call {call}: {kind} from {}", names.name(*contact))
        }
        Notification::CallEnded {
            widget,
            call,
            contact,
            reason,
        } => format!(
            "{widget} call {call} with {} ended: {}",
            names.name(*contact),
            reason.as_str()
        ),
    }
}

/// Printing answers for people or as JSON.
mod erased {
    use super::*;

    pub trait Show {
        fn show(&self);
        fn json(&self) -> String;
    }

    macro_rules! json_of {
        () => {
            fn json(&self) -> String {
                serde_json::to_string_pretty(self).unwrap_or_default()
            }
        };
    }

    impl Show for DaemonStatus {
        fn show(&self) {
            println!(
                "pinchatd {} (API {}), pid {}, up {} s",
                self.version, self.api_version, self.pid, self.uptime_secs
            );
            self.widgets.show();
        }
        json_of!();
    }

    impl Show for Vec<WidgetSummary> {
        fn show(&self) {
            if self.is_empty() {
                println!("no widgets; add one with: pinchatctl add --server URL --account NAME");
            }
            for w in self {
                println!(
                    "{:<18} {:<14} {:<22} {:<13} unread {:>3}  pins {}",
                    w.id,
                    w.login,
                    w.name,
                    format!("{:?}{}", w.connection, carrier(w.via)),
                    w.unread,
                    w.pins
                );
            }
        }
        json_of!();
    }

    impl Show for Vec<ContactIdentity> {
        fn show(&self) {
            for c in self {
                println!("{:>6}  {:<14} {:<22} {}", c.id, c.login, c.name, c.signature);
            }
        }
        json_of!();
    }

    impl Show for WidgetView {
        fn show(&self) {
            let stale = if self.stale { ", stale" } else { "" };
            println!(
                "{} — {} ({}) on {} [{:?}{}, {:?}{stale}]",
                self.id,
                self.account.name,
                self.account.login,
                self.server,
                self.connection,
                carrier(self.via),
                self.mode
            );
            for p in &self.pins {
                let unread = if p.unread > 0 {
                    format!("{:>3} unread", p.unread)
                } else {
                    String::new()
                };
                println!(
                    "  {:>6}  {:<22} {:<10} {:<10} {}",
                    p.id,
                    p.name,
                    state(p.state),
                    unread,
                    p.signature
                );
            }
        }
        json_of!();
    }

    impl Show for MessageView {
        fn show(&self) {
            println!("message to {} is {:?}", self.to, self.state);
        }
        json_of!();
    }
}

/// Whose connection carries a widget, in words (nothing for its own).
fn carrier(via: Via) -> String {
    match via {
        Via::Own => String::new(),
        Via::FullClient { pid } => format!(" via pinchat-full (pid {pid})"),
    }
}
