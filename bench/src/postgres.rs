//! A private PostgreSQL server for the tests and the cluster benchmark: `initdb` in a temporary directory, `postgres` listening on
//! a Unix socket only, one fresh database per test server.
//!
//! PostgreSQL refuses to run as root, so as root (CI) it runs as the `postgres` user the Debian package
//! creates. The server lives as long as the test program: it is started under a small shell that stops
//! it when the program's end closes its standard input, so nothing outlives a test run, not even one
//! that was killed.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};

/// Whether the end-to-end suites run against PostgreSQL instead of SQLite (`PINCHAT_TEST_STORE=postgres`).
pub fn selected() -> bool {
    std::env::var("PINCHAT_TEST_STORE").as_deref() == Ok("postgres")
}

/// A running PostgreSQL server.
pub struct Postgres {
    /// The directory of its Unix socket.
    socket_dir: PathBuf,
    data: PathBuf,
    bin: PathBuf,
    /// With TLS: the loopback TCP port it also listens on, and its certificate (PEM, self-signed).
    tls: Option<(u16, PathBuf)>,
    /// The supervising shell (its standard input keeps the server alive).
    child: Mutex<Option<Child>>,
    _dir: tempfile::TempDir,
}

/// The directory of PostgreSQL's programs (`initdb` and `postgres` are not on the PATH on Debian).
fn bin_dir() -> PathBuf {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").exists() {
            return dir;
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.flatten().map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    found.sort();
    found.pop().filter(|d| d.join("initdb").exists()).expect(
        "PostgreSQL is not installed: on Debian/Ubuntu, sudo apt-get install postgresql (./run deps does)",
    )
}

fn as_root() -> bool {
    // SAFETY-free check: the effective user id via `id -u`.
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A command run as the user PostgreSQL runs as.
fn as_postgres(program: &Path) -> Command {
    if as_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

impl Postgres {
    /// The test program's server, started on first use.
    pub fn shared() -> &'static Postgres {
        static PG: OnceLock<Postgres> = OnceLock::new();
        PG.get_or_init(Postgres::start)
    }

    /// Creates a cluster and starts its server; returns once it accepts connections.
    pub fn start() -> Postgres {
        Postgres::start_with(false)
    }

    /// Like [`Postgres::start`], and also listening on a loopback TCP port with TLS required there, with
    /// a self-signed certificate for `127.0.0.1` and `localhost` ([`Postgres::tls`] says where).
    pub fn start_with_tls() -> Postgres {
        Postgres::start_with(true)
    }

    fn start_with(tls: bool) -> Postgres {
        let bin = bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("pinchat-pg-")
            .tempdir()
            .expect("tempdir");
        let data = dir.path().join("data");
        let socket_dir = dir.path().join("socket");
        std::fs::create_dir_all(&socket_dir).unwrap();
        if as_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .expect("chown");
            assert!(
                status.success(),
                "cannot give {} to the postgres user",
                dir.path().display()
            );
        }
        let out = as_postgres(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--locale=C",
            ])
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let tls = tls.then(|| {
            let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
                .expect("a self-signed certificate");
            let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
            std::fs::write(&cert_path, cert.cert.pem()).unwrap();
            std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
            // PostgreSQL refuses a key others can read.
            std::fs::set_permissions(&key_path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
            if as_root() {
                let status = Command::new("chown")
                    .arg("postgres:postgres")
                    .arg(&cert_path)
                    .arg(&key_path)
                    .status()
                    .expect("chown");
                assert!(
                    status.success(),
                    "cannot give the certificate to the postgres user"
                );
            }
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            (port, cert_path)
        });
        let pg = Postgres {
            socket_dir,
            data,
            bin,
            tls,
            child: Mutex::new(None),
            _dir: dir,
        };
        pg.run();
        pg
    }

    /// Starts the server on the existing data directory and waits until it is ready.
    fn run(&self) {
        let postgres = self.bin.join("postgres");
        // The shell stops the server (fast shutdown) when its input closes: when the test program ends.
        let script = r#"pg="$1"; shift; "$pg" "$@" & pid=$!; read _; kill -INT $pid; wait $pid"#;
        let mut command = as_postgres(Path::new("sh"));
        command
            .args(["-c", script, "sh"])
            .arg(&postgres)
            .arg("-D")
            .arg(&self.data)
            .arg("-k")
            .arg(&self.socket_dir);
        match &self.tls {
            Some((port, cert)) => {
                let dir = cert.parent().expect("the certificate's directory");
                command.args([
                    "-p",
                    &port.to_string(),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    "ssl=on",
                ]);
                command
                    .arg("-c")
                    .arg(format!("ssl_cert_file={}", cert.display()))
                    .arg("-c")
                    .arg(format!("ssl_key_file={}", dir.join("key.pem").display()));
                // Over TCP, only TLS: a client that tries without is refused, not served in the clear.
                std::fs::write(
                    self.data.join("pg_hba.conf"),
                    "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 0.0.0.0/0 reject\n",
                )
                .expect("pg_hba.conf");
            }
            None => {
                command.args(["-c", "listen_addresses="]);
            }
        }
        let mut child = command
            .args([
                "-c",
                "max_connections=300",
                // The tests kill servers and nodes, not the machine: what PostgreSQL wrote reaches the
                // file system, so syncing it to disk only slows the tests.
                "-c",
                "fsync=off",
                "-c",
                "log_min_messages=warning",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start postgres");
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let mut seen = String::new();
        loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if line.contains("database system is ready to accept connections") {
                        break;
                    }
                    seen.push_str(&line);
                    seen.push('\n');
                }
                _ => panic!("postgres ended before it was ready:\n{seen}"),
            }
        }
        // Keep reading its log so that it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
        *self.child.lock().unwrap() = Some(child);
    }

    /// Stops the server abruptly (SIGKILL of the postmaster's whole group is not possible from here;
    /// an immediate shutdown is what a crash looks like to clients).
    pub fn crash(&self) {
        let out = as_postgres(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(["stop", "-m", "immediate", "-w"])
            .output()
            .expect("pg_ctl stop");
        assert!(
            out.status.success(),
            "pg_ctl stop: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if let Some(mut child) = self.child.lock().unwrap().take() {
            drop(child.stdin.take());
            let _ = child.wait();
        }
    }

    /// Starts the server again after [`Postgres::crash`].
    pub fn restart(&self) {
        self.run();
    }

    /// A fresh, empty database; returns its connection string.
    pub fn new_database(&self) -> String {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "pinchat_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        match &self.tls {
            Some((port, _)) => format!(
                "host={} port={port} user=postgres dbname={name}",
                self.socket_dir.display()
            ),
            None => format!("host={} user=postgres dbname={name}", self.socket_dir.display()),
        }
    }

    /// The port arguments of psql and pg_dump (the socket's name has the port in it).
    fn port_args(&self) -> Vec<String> {
        match &self.tls {
            Some((port, _)) => vec!["-p".into(), port.to_string()],
            None => vec![],
        }
    }

    /// With [`Postgres::start_with_tls`]: its TCP port and the certificate (PEM) to trust.
    pub fn tls(&self) -> Option<(u16, &Path)> {
        self.tls.as_ref().map(|(port, cert)| (*port, cert.as_path()))
    }

    /// Runs SQL with psql in `database`; returns what it printed (unaligned, tuples only).
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let psql = self.bin.join("psql");
        let psql = if psql.exists() {
            psql
        } else {
            PathBuf::from("psql")
        };
        let mut child = Command::new(psql)
            .arg("-h")
            .arg(&self.socket_dir)
            .args(self.port_args())
            .args(["-U", "postgres", "-d", database, "-v", "ON_ERROR_STOP=1", "-qAt"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run psql");
        child.stdin.take().unwrap().write_all(sql.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "psql {sql:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs one data-changing statement in `database`; returns how many rows it changed (from psql's
    /// command tag, e.g. `UPDATE 1`).
    pub fn execute(&self, database: &str, sql: &str) -> u64 {
        let out = Command::new(self.bin.join("psql"))
            .arg("-h")
            .arg(&self.socket_dir)
            .args(self.port_args())
            .args([
                "-U",
                "postgres",
                "-d",
                database,
                "-v",
                "ON_ERROR_STOP=1",
                "-At",
                "-c",
                sql,
            ])
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql {sql:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .last()
            .and_then(|tag| tag.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no row count in psql's output {text:?}"))
    }

    /// The whole content of `database`, as `pg_dump` writes it.
    pub fn dump(&self, database: &str) -> Vec<u8> {
        let out = Command::new(self.bin.join("pg_dump"))
            .arg("-h")
            .arg(&self.socket_dir)
            .args(self.port_args())
            .args(["-U", "postgres", "--data-only", database])
            .output()
            .expect("run pg_dump");
        assert!(
            out.status.success(),
            "pg_dump: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// The database name in a connection string from [`Postgres::new_database`].
    pub fn database_of(url: &str) -> &str {
        url.rsplit("dbname=").next().unwrap_or_default()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            drop(child.stdin.take());
            let _ = child.wait();
        }
    }
}
