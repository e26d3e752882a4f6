//! Harness for the end-to-end tests: the real `pinchat-server` binary, real SQLite files in a temporary
//! directory, a real HTTP client and real WebSocket streams.
//!
//! - [`Server`] starts the binary on `127.0.0.1:0` with a config file in its own temp dir, reads the
//!   bound address from its first stdout line, and can SIGKILL or SIGTERM it and start it again on the
//!   same database and port.
//! - [`Stream`] is a WebSocket client for the push stream, in either encoding, whose `recv` waits for the
//!   next frame with a deadline (a missing event fails the test; nothing sleeps).
//! - [`CountingProxy`] (shared with the benchmarks) sits between a client and the server and counts
//!   the bytes the server sends, so that wire sizes are measured, not computed.
//!
//! Negative assertions ("widget B never hears of X") use a barrier: after X, make a change B *does*
//! care about; events arrive in cursor order, so if B's next event is the barrier, X was never sent.

#![allow(clippy::missing_panics_doc)]

#[cfg(target_os = "linux")]
pub mod desktop;
/// A private PostgreSQL server (shared with the cluster benchmark).
#[cfg(unix)]
pub use pinchat_bench::postgres;
#[cfg(target_os = "linux")]
pub use pinchat_bench::prosody;

use futures_util::{SinkExt, StreamExt};
use pinchat_proto::codec::{self, Encoding};
use pinchat_proto::http::{ErrorResponse, LoginResponse};
use pinchat_proto::stream::{ClientFrame, ReqId, Resume, ServerFrame, Snapshot, SubId, Welcome};
use pinchat_proto::{AccountId, ErrorBody, PROTOCOL_VERSION};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, tungstenite::Message as WsMessage};

pub use pinchat_proto;
pub use reqwest::StatusCode;

/// How long any single expected event may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(15);

/// The password of every demo account.
pub const DEMO_PASSWORD: &str = "demo";

/// Path of the server binary: this crate's `pinchat-server-e2e`, which is `pinchat-server`'s one-line
/// `main` and which cargo builds, current, before running integration tests. With
/// `PINCHAT_E2E_BIN_DIR` set, the binaries (server, daemon, `pinchatctl`) come from that directory
/// instead — to run today's tests against another build, e.g. to show that a regression test fails
/// on the release before a fix.
pub fn server_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(dir) = std::env::var_os("PINCHAT_E2E_BIN_DIR") {
            return PathBuf::from(dir).join(format!("pinchat-server-e2e{}", std::env::consts::EXE_SUFFIX));
        }
        // Test executables live in target/<profile>/deps; binaries in target/<profile>.
        let exe = std::env::current_exe().expect("current_exe");
        let dir = exe.parent().and_then(Path::parent).expect("target/<profile>");
        let bin = dir.join(format!("pinchat-server-e2e{}", std::env::consts::EXE_SUFFIX));
        assert!(
            bin.exists(),
            "{} is missing: run the tests with cargo test",
            bin.display()
        );
        bin
    })
}

/// A running `pinchat-server` process with its own directory and database.
pub struct Server {
    child: Option<Child>,
    /// The address it listens on.
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
    database: PathBuf,
    /// The PostgreSQL database's connection string, when the server runs on one.
    store: Option<String>,
    config: PathBuf,
    /// HTTP client.
    pub http: reqwest::Client,
    stderr_log: PathBuf,
    /// Extra environment of the server process.
    env: Vec<(String, std::ffi::OsString)>,
}

impl Server {
    /// Starts a server with the demo world seeded and default settings tuned for tests.
    pub async fn start() -> Server {
        Server::start_with("").await
    }

    /// Starts a server with extra TOML appended to the test config. Top-level keys must come before any
    /// `[limits]` table in `extra`.
    pub async fn start_with(extra: &str) -> Server {
        Server::start_at(None, extra).await
    }

    /// Like [`Server::start_with`], with the database in `data` (a test's own file system, say)
    /// instead of the server's temporary directory.
    pub async fn start_at(data: Option<&Path>, extra: &str) -> Server {
        #[cfg(unix)]
        if postgres::selected() {
            return Server::start_on_store(&postgres::Postgres::shared().new_database(), extra).await;
        }
        Server::start_in(data, None, extra, &[]).await
    }

    /// Starts a server on a SQLite file whatever `PINCHAT_TEST_STORE` says (for tests about the file).
    pub async fn start_in_sqlite() -> Server {
        Server::start_in(None, None, "", &[]).await
    }

    /// Starts a server on a SQLite file with extra configuration and environment (the XMPP gateway,
    /// which runs only on the embedded store, trusting a test XMPP server through `SSL_CERT_FILE`).
    pub async fn start_in_sqlite_with(extra: &str, env: &[(&str, &std::ffi::OsStr)]) -> Server {
        Server::start_in(None, None, extra, env).await
    }

    /// Starts a server on the PostgreSQL database `url` as a node of its cluster (seeding the demo world
    /// if the database has none yet): several servers on one `url` are a cluster.
    pub async fn start_on_store(url: &str, extra: &str) -> Server {
        Server::start_in(None, Some(url), extra, &[]).await
    }

    async fn start_in(
        data: Option<&Path>,
        store: Option<&str>,
        extra: &str,
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = data.unwrap_or(dir.path()).join("pinchat.db");
        let config = dir.path().join("pinchat.toml");
        let (top, limits) = match extra.find("[limits]") {
            Some(i) => (&extra[..i], &extra[i + "[limits]".len()..]),
            None => (extra, ""),
        };
        let store_line = store.map_or(String::new(), |url| format!("store = {url:?}\n"));
        let text = format!(
            "database = {db:?}\n{store_line}external_poll_ms = 50\npresence_grace_secs = 1\n{top}\n[limits]\n{limits}\n",
            db = db.display().to_string()
        );
        std::fs::write(&config, text).expect("write config");
        let mut server = Server {
            child: None,
            addr: "127.0.0.1:0".parse().unwrap(),
            stderr_log: dir.path().join("server.log"),
            database: db,
            store: store.map(str::to_owned),
            dir,
            config,
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_os_string()))
                .collect(),
        };
        let out = server.admin(&["seed-demo"], None);
        assert!(
            out.status.success(),
            "seed-demo failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        server.spawn();
        server
    }

    /// The server's directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The database file.
    pub fn database(&self) -> PathBuf {
        self.database.clone()
    }

    /// The PostgreSQL connection string, when the server runs on PostgreSQL.
    pub fn store(&self) -> Option<&str> {
        self.store.as_deref()
    }

    /// Everything the server has stored, as bytes: the SQLite file and its WAL, or a dump of the
    /// PostgreSQL database's data. For "never stored in clear" checks.
    pub fn stored_bytes(&self) -> Vec<u8> {
        #[cfg(unix)]
        if let Some(url) = &self.store {
            let pg = postgres::Postgres::shared();
            return pg.dump(postgres::Postgres::database_of(url));
        }
        let mut bytes = std::fs::read(&self.database).expect("read the database");
        bytes.extend(std::fs::read(self.database.with_extension("db-wal")).unwrap_or_default());
        bytes
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }

    fn spawn(&mut self) {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.stderr_log)
            .unwrap();
        let mut child = Command::new(server_binary())
            .arg("--config")
            .arg(&self.config)
            .args(["serve", "--listen", &self.addr.to_string()])
            .env("RUST_LOG", "info,pinchat_server=debug")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn pinchat-server");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the server's first line");
        let url = line
            .trim()
            .strip_prefix("pinchat-server listening on ")
            .and_then(|r| r.strip_prefix("http://").or_else(|| r.strip_prefix("https://")))
            .unwrap_or_else(|| {
                panic!(
                    "unexpected first line {line:?}; server log:\n{}",
                    std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
                )
            });
        self.addr = url.parse().expect("address");
        self.child = Some(child);
    }

    /// SIGKILLs the server: no shutdown code runs.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Sends SIGTERM and waits for the process to exit; returns its exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("server running");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        child.wait().unwrap()
    }

    /// Starts the server again on the same database and port.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the server first");
        // Pooled keep-alive connections belong to the old process.
        self.http = reqwest::Client::builder().no_proxy().build().unwrap();
        self.spawn();
    }

    /// An admin subcommand on the same config and database, to be spawned by the caller.
    pub fn admin_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(server_binary());
        command.arg("--config").arg(&self.config).args(args);
        command
    }

    /// Runs SQL that changes rows in the server's database, behind its back (SQLite or PostgreSQL);
    /// returns how many rows it changed.
    pub fn execute_sql(&self, sql: &str) -> u64 {
        #[cfg(unix)]
        if let Some(url) = &self.store {
            return postgres::Postgres::shared().execute(postgres::Postgres::database_of(url), sql);
        }
        let db = rusqlite::Connection::open(&self.database).unwrap();
        db.busy_timeout(Duration::from_secs(10)).unwrap();
        db.execute(sql, []).unwrap() as u64
    }

    /// Runs an admin subcommand on the same config and database; `stdin` is piped in.
    pub fn admin(&self, args: &[&str], stdin: Option<&str>) -> std::process::Output {
        let mut child = self
            .admin_command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn admin command");
        if let Some(input) = stdin {
            child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        }
        drop(child.stdin.take());
        child.wait_with_output().unwrap()
    }

    /// Runs an admin subcommand and asserts it succeeded.
    pub fn admin_ok(&self, args: &[&str]) -> String {
        let out = self.admin(args, None);
        assert!(
            out.status.success(),
            "{args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Creates an account with password "demo".
    pub fn create_account(&self, login: &str) {
        let out = self.admin(&["account", "create", login, "--password-stdin"], Some("demo\n"));
        assert!(
            out.status.success(),
            "create {login}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `http://addr` + path.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Logs in; the error carries the HTTP status and the error body.
    pub async fn login(
        &self,
        account: &str,
        password: &str,
    ) -> Result<LoginResponse, (StatusCode, ErrorBody)> {
        let r = self
            .http
            .post(self.url("/v1/login"))
            .json(&serde_json::json!({ "account": account, "password": password }))
            .send()
            .await
            .unwrap();
        decode(r).await
    }

    /// Logs a demo account in and returns its key.
    pub async fn key(&self, account: &str) -> String {
        self.login(account, DEMO_PASSWORD)
            .await
            .unwrap_or_else(|e| panic!("login {account}: {e:?}"))
            .key
    }

    /// An authenticated GET.
    pub async fn get<T: DeserializeOwned>(
        &self,
        key: &str,
        path: &str,
    ) -> Result<T, (StatusCode, ErrorBody)> {
        decode(
            self.http
                .get(self.url(path))
                .bearer_auth(key)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    /// An authenticated request with a JSON body.
    pub async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        key: &str,
        path: &str,
        body: &B,
    ) -> Result<T, (StatusCode, ErrorBody)> {
        decode(
            self.http
                .request(method, self.url(path))
                .bearer_auth(key)
                .json(body)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    /// The image bytes of avatar `hash`.
    pub async fn avatar_bytes(&self, key: &str, hash: &str) -> Vec<u8> {
        self.http
            .get(self.url(&format!("/v1/avatars/{hash}")))
            .bearer_auth(key)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .to_vec()
    }

    /// An authenticated POST with a JSON body.
    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        key: &str,
        path: &str,
        body: &B,
    ) -> Result<T, (StatusCode, ErrorBody)> {
        self.call(reqwest::Method::POST, key, path, body).await
    }

    /// Sends `text` from the account of `key` to `to` (which must accept it).
    pub async fn send_text(
        &self,
        key: &str,
        to: AccountId,
        client_id: &str,
        text: &str,
    ) -> pinchat_proto::http::SendResponse {
        self.post(
            key,
            "/v1/messages",
            &pinchat_proto::http::SendRequest {
                to,
                client_id: client_id.into(),
                text: text.into(),
            },
        )
        .await
        .unwrap_or_else(|e| panic!("sending {text:?} failed: {e:?}"))
    }

    /// Sends `count` messages from the account of `key` to `to` over HTTP, from `tasks` tasks at once
    /// (texts "`tag` task-i"), in the background; the handle ends when all are stored.
    pub fn flood(
        &self,
        key: &str,
        to: AccountId,
        count: usize,
        tasks: usize,
        tag: &str,
    ) -> tokio::task::JoinHandle<()> {
        let (http, url, key, tag) = (
            self.http.clone(),
            self.url("/v1/messages"),
            key.to_owned(),
            tag.to_owned(),
        );
        tokio::spawn(async move {
            let mut all = tokio::task::JoinSet::new();
            for t in 0..tasks {
                let (http, url, key, tag) = (http.clone(), url.clone(), key.clone(), tag.clone());
                let share = count / tasks + usize::from(t < count % tasks);
                all.spawn(async move {
                    for i in 0..share {
                        let body = pinchat_proto::http::SendRequest {
                            to,
                            client_id: format!("{tag}{t}-{i}"),
                            text: format!("{tag} {t}-{i}"),
                        };
                        let r = http
                            .post(&url)
                            .bearer_auth(&key)
                            .json(&body)
                            .send()
                            .await
                            .unwrap();
                        assert!(r.status().is_success(), "{tag} {t}-{i}: {}", r.status());
                    }
                });
            }
            while let Some(done) = all.join_next().await {
                done.unwrap();
            }
        })
    }

    /// The account id of a login.
    pub async fn id_of(&self, key: &str, login: &str) -> AccountId {
        let list: pinchat_proto::http::ContactList = self.get(key, "/v1/contacts").await.unwrap();
        list.contacts
            .iter()
            .find(|c| c.login == login)
            .unwrap_or_else(|| panic!("{login} is not a contact"))
            .id
    }

    /// Opens a stream with `key`, says hello and returns it with the welcome.
    pub async fn stream(&self, key: &str, encoding: Encoding) -> Stream {
        self.stream_at(self.addr, key, encoding).await
    }

    /// Like [`Server::stream`] but through another address (a [`CountingProxy`]).
    pub async fn stream_at(&self, addr: SocketAddr, key: &str, encoding: Encoding) -> Stream {
        let mut stream = Stream::connect(addr, key, encoding)
            .await
            .expect("stream upgrade");
        stream
            .send(&ClientFrame::Hello {
                version: PROTOCOL_VERSION,
            })
            .await;
        match stream.recv().await {
            ServerFrame::Welcome(w) => stream.welcome = Some(w),
            other => panic!("expected welcome, got {other:?}"),
        }
        stream
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("---- server log ----\n{}", self.log());
        }
    }
}

/// Decodes a JSON success body or a protocol error body.
pub async fn decode<T: DeserializeOwned>(r: reqwest::Response) -> Result<T, (StatusCode, ErrorBody)> {
    let status = r.status();
    let bytes = r.bytes().await.unwrap();
    if status.is_success() {
        let text = if bytes.is_empty() {
            &b"null"[..]
        } else {
            &bytes[..]
        };
        Ok(serde_json::from_slice(text)
            .unwrap_or_else(|e| panic!("bad body {e}: {}", String::from_utf8_lossy(&bytes))))
    } else {
        let e: ErrorResponse = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "error body is not a protocol error ({e}): {}",
                String::from_utf8_lossy(&bytes)
            )
        });
        Err((status, e.error))
    }
}

/// A push-stream client.
pub struct Stream {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// The encoding chosen by the hello frame.
    pub encoding: Encoding,
    /// The server's welcome.
    pub welcome: Option<Welcome>,
    /// Wire bytes of the frames received (payload + 2/4/10-byte header).
    pub bytes_received: u64,
}

impl Stream {
    /// Upgrades to a stream without saying hello. The error is the HTTP rejection.
    pub async fn connect(addr: SocketAddr, key: &str, encoding: Encoding) -> Result<Stream, (u16, String)> {
        let mut request = format!("ws://{addr}/v1/stream").into_client_request().unwrap();
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {key}").parse().unwrap());
        match tokio_tungstenite::connect_async(request).await {
            Ok((ws, _)) => Ok(Stream {
                ws,
                encoding,
                welcome: None,
                bytes_received: 0,
            }),
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
                let body = r
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                Err((r.status().as_u16(), body))
            }
            Err(e) => panic!("cannot connect the stream: {e}"),
        }
    }

    /// The welcome's epoch.
    pub fn epoch(&self) -> u64 {
        self.welcome.as_ref().unwrap().epoch
    }

    /// Sends a frame in the stream's encoding.
    pub async fn send(&mut self, frame: &ClientFrame) {
        let bytes = codec::encode(self.encoding, frame);
        let msg = match self.encoding {
            Encoding::Binary => WsMessage::Binary(bytes.into()),
            Encoding::Json => WsMessage::Text(String::from_utf8(bytes).unwrap().into()),
        };
        self.ws.send(msg).await.expect("send");
    }

    /// Sends a raw WebSocket message.
    pub async fn send_raw(&mut self, msg: WsMessage) {
        self.ws.send(msg).await.expect("send raw");
    }

    /// The next data frame, or `Err(close frame)` when the server closed. Fails the test after
    /// [`DEADLINE`].
    pub async fn next(&mut self) -> Result<ServerFrame, Option<CloseFrame>> {
        loop {
            let msg = tokio::time::timeout(DEADLINE, self.ws.next())
                .await
                .expect("no frame within the deadline");
            let (bytes, encoding) = match msg {
                None => return Err(None),
                Some(Err(e)) => panic!("stream error: {e}"),
                Some(Ok(WsMessage::Close(c))) => return Err(c),
                Some(Ok(WsMessage::Binary(b))) => (b.to_vec(), Encoding::Binary),
                Some(Ok(WsMessage::Text(t))) => (t.as_bytes().to_vec(), Encoding::Json),
                Some(Ok(_)) => continue,
            };
            assert_eq!(
                encoding, self.encoding,
                "the server answered in the other encoding"
            );
            let len = bytes.len() as u64;
            self.bytes_received += len
                + if len < 126 {
                    2
                } else if len < 65536 {
                    4
                } else {
                    10
                };
            return Ok(codec::decode_server(encoding, &bytes).expect("the server sent an undecodable frame"));
        }
    }

    /// The next data frame; fails the test if the stream closes.
    pub async fn recv(&mut self) -> ServerFrame {
        self.next()
            .await
            .unwrap_or_else(|c| panic!("stream closed: {c:?}"))
    }

    /// Reads until the server closes; returns the close frame and the data frames seen before it.
    pub async fn until_close(&mut self) -> (Option<CloseFrame>, Vec<ServerFrame>) {
        let mut frames = vec![];
        loop {
            match self.next().await {
                Ok(f) => frames.push(f),
                Err(c) => return (c, frames),
            }
        }
    }

    /// Subscribes and returns the snapshot; panics on an error answer.
    pub async fn subscribe(
        &mut self,
        req: ReqId,
        sub: SubId,
        pins: &[AccountId],
        resume: Option<Resume>,
    ) -> Snapshot {
        self.send(&ClientFrame::Subscribe {
            req,
            sub,
            pins: pins.to_vec(),
            resume,
        })
        .await;
        match self.recv().await {
            ServerFrame::Snapshot(s) => s,
            other => panic!("expected a snapshot, got {other:?}"),
        }
    }

    /// Sends a ping (keepalive).
    pub async fn ping(&mut self) {
        self.ws.send(WsMessage::Ping(Vec::new().into())).await.unwrap();
    }
}

pub use pinchat_bench::fault::{Fault, FaultProxy};
pub use pinchat_bench::proxy::CountingProxy;

/// Path of the daemon binary: this crate's `pinchatd-e2e`, the same one-line `main` as `pinchatd`.
pub fn daemon_binary() -> PathBuf {
    server_binary().with_file_name(format!("pinchatd-e2e{}", std::env::consts::EXE_SUFFIX))
}

/// A self-signed certificate for `localhost` and `127.0.0.1`, written as PEM files in its own directory,
/// for a server started with TLS.
pub struct TlsFiles {
    pub cert: rcgen::CertifiedKey<rcgen::KeyPair>,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl TlsFiles {
    pub fn generate() -> TlsFiles {
        let dir = tempfile::tempdir().expect("tempdir");
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
            .expect("a self-signed certificate");
        let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert_path, cert.cert.pem()).unwrap();
        std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
        TlsFiles {
            cert,
            cert_path,
            key_path,
            _dir: dir,
        }
    }

    /// The server configuration's `[tls]` table naming these files.
    pub fn config(&self) -> String {
        format!(
            "[tls]\ncert = {:?}\nkey = {:?}\n",
            self.cert_path.display().to_string(),
            self.key_path.display().to_string()
        )
    }
}

/// A running `pinchatd` with its own data directory and socket, using the session's real Secret
/// Service (run the tests with `cargo xtask test`, which provides one).
pub struct Daemon {
    child: Option<Child>,
    /// Holds the socket and the log (and the data, unless placed elsewhere).
    _dir: tempfile::TempDir,
    data: PathBuf,
    /// The local API's socket.
    pub socket: PathBuf,
    log: PathBuf,
    /// Environment variables the daemon runs with, on every start.
    env: Vec<(std::ffi::OsString, std::ffi::OsString)>,
}

impl Daemon {
    /// Starts a daemon.
    pub fn start() -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        Daemon::start_with_data(dir, data)
    }

    /// Starts a daemon whose data directory is `data` (a test's own file system, say).
    pub fn start_in(data: &Path) -> Daemon {
        Daemon::start_with_data(tempfile::tempdir().expect("tempdir"), data.to_owned())
    }

    /// Starts a daemon with these environment variables (`SSL_CERT_FILE`, say).
    pub fn start_with_env(env: &[(&str, &std::ffi::OsStr)]) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let env = env.iter().map(|(k, v)| (k.into(), v.into())).collect();
        Daemon::start_with(dir, data, env)
    }

    fn start_with_data(dir: tempfile::TempDir, data: PathBuf) -> Daemon {
        Daemon::start_with(dir, data, Vec::new())
    }

    fn start_with(
        dir: tempfile::TempDir,
        data: PathBuf,
        env: Vec<(std::ffi::OsString, std::ffi::OsString)>,
    ) -> Daemon {
        assert!(
            std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some(),
            "the daemon tests need a session bus with a Secret Service: run them with `cargo xtask test`"
        );
        let socket = dir.path().join("run").join("daemon.sock");
        let log = dir.path().join("daemon.log");
        let mut d = Daemon {
            child: None,
            _dir: dir,
            data,
            socket,
            log,
            env,
        };
        d.spawn();
        d
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.data.clone()
    }

    /// What the daemon logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn spawn(&mut self) {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut child = Command::new(daemon_binary())
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--socket")
            .arg(&self.socket)
            .env("RUST_LOG", "info,pinchat_daemon=debug")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn pinchatd");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("read the daemon's first line");
        assert!(
            line.starts_with("pinchatd listening on"),
            "unexpected first line {line:?}; log:\n{}",
            self.log()
        );
        self.child = Some(child);
    }

    /// Connects a client.
    pub async fn client(&self) -> pinchat_ipc::Client {
        pinchat_ipc::Client::connect(&self.socket)
            .await
            .expect("connect to the daemon")
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILLs the daemon: no shutdown code runs.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("daemon running");
        assert!(
            Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .unwrap()
                .success()
        );
        child.wait().unwrap()
    }

    /// Starts the daemon again on the same data directory and socket.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the daemon first");
        self.spawn();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("---- daemon log ----\n{}", self.log());
        }
    }
}

/// A small tmpfs mounted for one test (Linux, as root — CI runs as root): a disk that can be filled up
/// or made read-only for real. Unmounted when dropped.
#[cfg(target_os = "linux")]
pub struct Tmpfs {
    dir: tempfile::TempDir,
    filler: PathBuf,
}

#[cfg(target_os = "linux")]
impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. "8m"), or returns `None` (saying why) when this process may not
    /// mount file systems.
    pub fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0755"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("run mount");
        if !out.status.success() {
            eprintln!(
                "cannot mount a tmpfs (needs root): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return None;
        }
        let filler = dir.path().join("filler");
        Some(Tmpfs { dir, filler })
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills the file system to the last byte.
    pub fn fill(&self) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.filler)
            .expect("open the filler");
        let chunk = vec![0xa5u8; 64 * 1024];
        // Whole chunks first, then the last bytes one at a time.
        while f.write_all(&chunk).is_ok() {}
        while f.write_all(&[0]).is_ok() {}
        let _ = f.sync_all();
    }

    /// Frees what [`Tmpfs::fill`] took.
    pub fn free(&self) {
        std::fs::remove_file(&self.filler).expect("remove the filler");
    }

    /// Remounts read-only (`true`) or read-write.
    pub fn read_only(&self, ro: bool) {
        let status = Command::new("mount")
            .args(["-o", if ro { "remount,ro" } else { "remount,rw" }])
            .arg(self.dir.path())
            .status()
            .expect("run mount");
        assert!(status.success(), "remount failed");
    }
}

#[cfg(target_os = "linux")]
impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

/// Waits for the first notification for which `pick` returns something, skipping others. Fails the
/// test after [`DEADLINE`].
pub async fn until<T>(
    rx: &mut tokio::sync::mpsc::Receiver<pinchat_ipc::api::Notification>,
    mut pick: impl FnMut(&pinchat_ipc::api::Notification) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let n = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("the expected notification did not come within the deadline")
            .expect("the daemon closed the connection");
        if let Some(t) = pick(&n) {
            return t;
        }
    }
}

/// A running `pinchat-full --headless`, logged in as a demo account, registered in a daemon's runtime
/// directory. Its program is a copy of `pinchat-full-e2e` named `pinchat-full`, as the daemon requires.
pub struct FullClient {
    child: Option<Child>,
    /// Its standard output's lines after the first, read by a thread (so a test can wait with a
    /// deadline, and the program never writes into a closed pipe).
    lines: std::sync::mpsc::Receiver<String>,
    dir: tempfile::TempDir,
    /// Its process id.
    pub pid: u32,
}

impl FullClient {
    /// The program, under the name the daemon accepts, in `dir`.
    pub fn program(dir: &Path) -> PathBuf {
        let program = dir.join(format!("pinchat-full{}", std::env::consts::EXE_SUFFIX));
        let built =
            server_binary().with_file_name(format!("pinchat-full-e2e{}", std::env::consts::EXE_SUFFIX));
        // A hard link where it can be: a copy is written through a file descriptor that a process
        // forked meanwhile by another test inherits until it execs, and running the copy in that
        // moment fails with "Text file busy" (ETXTBSY; seen in CI). A link writes nothing.
        if std::fs::hard_link(&built, &program).is_err() {
            std::fs::copy(&built, &program).expect("copy pinchat-full-e2e");
        }
        program
    }

    /// Starts it as `account` on `server`, registering beside the daemon's socket `socket`, and waits
    /// until it says it is ready.
    pub fn start(server: &Server, account: &str, socket: &Path) -> FullClient {
        let dir = tempfile::tempdir().expect("tempdir");
        let program = FullClient::program(dir.path());
        let log = std::fs::File::create(dir.path().join("full.log")).unwrap();
        let mut child = Command::new(program)
            .args([
                "--headless",
                "--server",
                &format!("http://{}", server.addr),
                "--account",
                account,
            ])
            .arg("--runtime-dir")
            .arg(socket.parent().expect("the socket's directory"))
            .env("PINCHAT_PASSWORD", DEMO_PASSWORD)
            .env("RUST_LOG", "info")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn pinchat-full");
        let mut line = String::new();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        stdout
            .read_line(&mut line)
            .expect("read pinchat-full's first line");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let pid = child.id();
        let full = FullClient {
            child: Some(child),
            lines,
            dir,
            pid,
        };
        assert!(
            line.starts_with("pinchat-full ready"),
            "unexpected first line {line:?}; log:\n{}",
            full.log()
        );
        full
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("full.log")).unwrap_or_default()
    }

    /// Writes a command (`logout`, `quit`) on its standard input.
    pub fn command(&mut self, line: &str) {
        use std::io::Write;
        let stdin = self.child.as_mut().expect("running").stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// Waits until it says it knows its contact list (`pinchat-full knows its N contacts`); returns N.
    pub fn contacts_known(&mut self) -> usize {
        loop {
            let line = self
                .lines
                .recv_timeout(DEADLINE)
                .unwrap_or_else(|e| panic!("it never knew its contacts ({e}); log:\n{}", self.log()));
            if let Some(n) = line
                .strip_prefix("pinchat-full knows its ")
                .and_then(|rest| rest.strip_suffix(" contacts"))
            {
                return n.parse().expect("a count");
            }
        }
    }

    /// Asks for the contact list (`contacts`) and returns its lines (`contact ID STATE unread=N NAME`),
    /// or `None` while the client does not know it yet.
    pub fn contacts(&mut self) -> Option<Vec<String>> {
        while self.lines.try_recv().is_ok() {}
        self.command("contacts");
        let mut contacts = vec![];
        loop {
            let line = self
                .lines
                .recv_timeout(DEADLINE)
                .unwrap_or_else(|e| panic!("no answer to `contacts` ({e}); log:\n{}", self.log()));
            match line.strip_prefix("contacts: ") {
                Some("not yet known") => return None,
                Some(_) => return Some(contacts),
                None if line.starts_with("contact ") => contacts.push(line),
                None => {}
            }
        }
    }

    /// SIGKILLs it: no clean-up runs (its registration stays behind).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        assert!(
            Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .unwrap()
                .success()
        );
        child.wait().unwrap()
    }
}

impl Drop for FullClient {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("---- pinchat-full log ----\n{}", self.log());
        }
    }
}

/// Expects a delta about `contact`; returns its cursor and fields.
pub fn delta(frame: ServerFrame, contact: AccountId) -> (u64, Vec<pinchat_proto::Field>) {
    match frame {
        ServerFrame::Delta {
            contact: c,
            cursor,
            fields,
            ..
        } if c == contact => (cursor, fields),
        other => panic!("expected a delta about {contact}, got {other:?}"),
    }
}

/// Expects a message; returns its cursor and the message.
pub fn message(frame: ServerFrame) -> (u64, pinchat_proto::Message) {
    match frame {
        ServerFrame::Message { cursor, message, .. } => (cursor, message),
        other => panic!("expected a message, got {other:?}"),
    }
}

/// Expects an error; returns its code.
pub fn error_code(frame: ServerFrame) -> pinchat_proto::ErrorCode {
    match frame {
        ServerFrame::Error { error, .. } => error.code,
        other => panic!("expected an error, got {other:?}"),
    }
}

/// Sends a text message over HTTP; panics on an error.
pub async fn send(
    s: &Server,
    key: &str,
    to: AccountId,
    client_id: &str,
    text: &str,
) -> pinchat_proto::http::SendResponse {
    s.post(
        key,
        "/v1/messages",
        &pinchat_proto::http::SendRequest {
            to,
            client_id: client_id.into(),
            text: text.into(),
        },
    )
    .await
    .unwrap()
}

/// Waits until `check` holds, looking again every 20 ms; fails the test after [`DEADLINE`]. For
/// states that announce themselves nowhere but in a log or a metric.
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Server {
    /// `/metrics`, whole.
    pub async fn metrics_text(&self) -> String {
        self.http
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The value of a metric on `/metrics`.
    pub async fn metric(&self, name: &str) -> i64 {
        self.metrics_text()
            .await
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
            .unwrap_or_else(|| panic!("no metric {name}"))
            .trim()
            .parse()
            .unwrap()
    }
}

/// Binds a widget to the demo account `account` of `s` (password "demo") through the daemon's API.
pub async fn create_widget(
    client: &pinchat_ipc::Client,
    s: &Server,
    account: &str,
) -> pinchat_ipc::api::Created {
    client
        .call::<pinchat_ipc::api::CreateWidget>(pinchat_ipc::api::Login {
            server: format!("http://{}", s.addr),
            account: account.into(),
            password: DEMO_PASSWORD.into(),
        })
        .await
        .unwrap_or_else(|e| panic!("create widget for {account}: {e}"))
}
