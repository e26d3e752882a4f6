//! A private Prosody (Debian's `prosody` package) for the XMPP gateway's tests and benchmark: the domain
//! `localhost` on a loopback port, STARTTLS offered with a fresh self-signed certificate (the gateway
//! must verify it: point its `SSL_CERT_FILE` at [`Prosody::certificate`]), stream management, offline
//! storage, and accounts and rosters written straight into Prosody's file storage (faster than
//! registering hundreds of users).
//!
//! The world: `owner` (the account a pinchat user links) with `contacts` roster items `c00000…`
//! (mutual subscriptions, named "Contact N"), every contact with `owner` in its roster, and `stranger`,
//! in nobody's roster. Every password is [`Prosody::PASSWORD`].

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running Prosody.
pub struct Prosody {
    /// The c2s port on 127.0.0.1.
    pub port: u16,
    config: PathBuf,
    certificate: PathBuf,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

/// The login of contact `i`.
pub fn contact(i: usize) -> String {
    format!("c{i:05}")
}

fn lua_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

impl Prosody {
    /// The XMPP domain.
    pub const DOMAIN: &'static str = "localhost";
    /// Every account's password.
    pub const PASSWORD: &'static str = "xmpp-test-password";

    /// Writes the world and starts Prosody; fails when it does not listen within 30 s.
    pub fn start(contacts: usize) -> anyhow::Result<Prosody> {
        let dir = tempfile::tempdir()?;
        let data = dir.path().join("data");
        write_world(&data, contacts)?;
        let cert = rcgen::generate_simple_self_signed(vec![Self::DOMAIN.into()])?;
        let certificate = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&certificate, cert.cert.pem())?;
        std::fs::write(&key, cert.signing_key.serialize_pem())?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let config = dir.path().join("prosody.cfg.lua");
        let d = |p: &Path| lua_string(&p.display().to_string());
        std::fs::write(
            &config,
            format!(
                r#"
daemonize = false
-- CI machines run as root; this private instance listens on loopback only.
run_as_root = true
pidfile = {pid}
data_path = {data}
log = {{ info = {log} }}
authentication = "internal_plain"
-- The gateway insists on STARTTLS; the tests' own XMPP clients (standing for the contacts) may use
-- plain TCP on loopback.
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
c2s_ports = {{ {port} }}
c2s_interfaces = {{ "127.0.0.1" }}
s2s_ports = {{ }}
http_ports = {{ }}
https_ports = {{ }}
modules_enabled = {{ "roster", "saslauth", "tls", "disco", "ping", "smacks", "offline", "carbons", "vcard", "mam" }}
modules_disabled = {{ "s2s" }}
ssl = {{ certificate = {cert}; key = {key}; }}
VirtualHost "{domain}"
    ssl = {{ certificate = {cert}; key = {key}; }}
"#,
                pid = d(&dir.path().join("prosody.pid")),
                data = d(&data),
                log = d(&dir.path().join("prosody.log")),
                cert = d(&certificate),
                key = d(&key),
                domain = Self::DOMAIN,
            ),
        )?;
        let mut p = Prosody {
            port,
            config,
            certificate,
            child: None,
            dir,
        };
        p.spawn()?;
        Ok(p)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let child = Command::new("prosody")
            .arg("--config")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start prosody (Debian: apt-get install prosody): {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        // Prosody says nothing on a pipe when it is ready: its port accepting is the sign.
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                anyhow::bail!("prosody exited ({status}); its log:\n{}", self.log());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "prosody did not listen within 30 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// The PEM certificate it presents (self-signed, for `localhost`).
    pub fn certificate(&self) -> &Path {
        &self.certificate
    }

    /// `127.0.0.1:port`, the `server` of a link.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Prosody's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prosody.log")).unwrap_or_default()
    }

    /// Stops it with SIGTERM (it closes its streams and keeps its storage) and waits.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and storage.
    pub fn start_again(&mut self) -> anyhow::Result<()> {
        self.spawn()
    }
}

impl Drop for Prosody {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Accounts and rosters in Prosody's internal file storage.
fn write_world(data: &Path, contacts: usize) -> anyhow::Result<()> {
    let host = data.join(Prosody::DOMAIN);
    std::fs::create_dir_all(host.join("accounts"))?;
    std::fs::create_dir_all(host.join("roster"))?;
    let account = format!(
        "return {{\n\t[\"password\"] = {};\n}};\n",
        lua_string(Prosody::PASSWORD)
    );
    let names: Vec<String> = ["owner".to_owned(), "stranger".to_owned()]
        .into_iter()
        .chain((0..contacts).map(contact))
        .collect();
    for user in &names {
        std::fs::write(host.join("accounts").join(format!("{user}.dat")), &account)?;
    }
    let mut roster = String::from("return {\n\t[false] = { [\"version\"] = 1; [\"pending\"] = {}; };\n");
    for i in 0..contacts {
        roster.push_str(&format!(
            "\t[{}] = {{ [\"subscription\"] = \"both\"; [\"groups\"] = {{}}; [\"name\"] = {}; }};\n",
            lua_string(&format!("{}@{}", contact(i), Prosody::DOMAIN)),
            lua_string(&format!("Contact {i}"))
        ));
    }
    roster.push_str("};\n");
    std::fs::write(host.join("roster").join("owner.dat"), roster)?;
    let back = format!(
        "return {{\n\t[false] = {{ [\"version\"] = 1; [\"pending\"] = {{}}; }};\n\t[{}] = {{ [\"subscription\"] = \"both\"; [\"groups\"] = {{}}; }};\n}};\n",
        lua_string(&format!("owner@{}", Prosody::DOMAIN))
    );
    for i in 0..contacts {
        std::fs::write(host.join("roster").join(format!("{}.dat", contact(i))), &back)?;
    }
    Ok(())
}
