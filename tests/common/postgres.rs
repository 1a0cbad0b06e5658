//! A throwaway PostgreSQL server for a test: `initdb` into a temporary folder, `pg_ctl start`
//! on a free loopback port, stopped (`immediate`) and deleted when dropped. As root, the
//! server runs as the unprivileged `postgres` user (PostgreSQL refuses to run as root).
//! `SONDE_SKIP_POSTGRES=1` skips the PostgreSQL tests, loudly; without it a missing server
//! is a failure that says what to install. Self-contained, so the PostgreSQL bench includes
//! it too.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A running server with one database per [`Cluster::database`] call.
pub struct Cluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// The loopback port it listens on.
    pub port: u16,
    /// Set as root: the user the server runs as.
    run_as: Option<&'static str>,
}

/// The server, or `None` when `SONDE_SKIP_POSTGRES=1` (after saying so on stderr).
pub fn start(test: &str) -> Option<Cluster> {
    if std::env::var("SONDE_SKIP_POSTGRES").as_deref() == Ok("1") {
        eprintln!("SKIPPED {test}: SONDE_SKIP_POSTGRES=1 (these tests need PostgreSQL)");
        return None;
    }
    let bin = binaries().unwrap_or_else(|| {
        panic!(
            "{test} needs PostgreSQL's server binaries (initdb, pg_ctl): \
             apt-get install -y postgresql, or set SONDE_SKIP_POSTGRES=1 to skip"
        )
    });
    let root = is_root();
    let dir = tempfile::Builder::new()
        .prefix("sonde-pg-")
        .tempdir()
        .expect("temp dir");
    let run_as = root.then_some("postgres");
    if run_as.is_some() {
        run(Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path()));
    }
    let cluster = Cluster {
        dir,
        bin,
        port: free_port(),
        run_as,
    };
    let data = cluster.data();
    cluster.as_server(
        &[
            "initdb",
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-sync",
            "-D",
        ],
        &[&data],
    );
    cluster.start_server();
    Some(cluster)
}

impl Cluster {
    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Runs one of the server's programs, as the server's user; it must succeed.
    fn as_server(&self, args: &[&str], paths: &[&Path]) -> Output {
        run(&mut self.server_command(args, paths))
    }

    /// One of the server's programs, to run as the server's user.
    fn server_command(&self, args: &[&str], paths: &[&Path]) -> Command {
        let program = self.bin.join(args[0]);
        let mut command = match self.run_as {
            Some(user) => {
                let mut command = Command::new("runuser");
                command.args(["-u", user, "--"]).arg(program);
                command
            }
            None => Command::new(program),
        };
        command
            .args(&args[1..])
            .args(paths)
            .current_dir(self.dir.path());
        command
    }

    fn start_server(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=100",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log");
        self.as_server(
            &["pg_ctl", "-w", "-t", "60", "-o", &options, "-l"],
            &[&log, Path::new("-D"), &self.data(), Path::new("start")],
        );
    }

    /// Stops the server at once (as a crash would), without a checkpoint.
    pub fn stop(&self) {
        self.as_server(
            &["pg_ctl", "-w", "-m", "immediate", "-D"],
            &[&self.data(), Path::new("stop")],
        );
    }

    /// Starts the server again after [`Cluster::stop`], on the same port.
    pub fn start_again(&self) {
        self.start_server();
    }

    /// Turns TLS on with a certificate for `127.0.0.1` and `localhost` signed by a CA made
    /// for it (openssl), restarting the server; returns the CA's PEM file, for
    /// `[store] ca_file`.
    pub fn enable_tls(&self) -> PathBuf {
        let dir = self.dir.path();
        let openssl = |args: &[&str]| {
            run(Command::new("openssl").args(args).current_dir(dir));
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=sonde test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ]);
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ]);
        std::fs::write(
            dir.join("san.ext"),
            "subjectAltName = IP:127.0.0.1, DNS:localhost\nbasicConstraints = CA:FALSE\n",
        )
        .expect("write the extension file");
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "server.crt",
        ]);
        let data = self.data();
        for file in ["server.crt", "server.key"] {
            std::fs::copy(dir.join(file), data.join(file)).expect("copy into the data folder");
        }
        if let Some(user) = self.run_as {
            run(Command::new("chown")
                .arg(format!("{user}:{user}"))
                .arg(data.join("server.crt"))
                .arg(data.join("server.key")));
        }
        run(Command::new("chmod")
            .arg("600")
            .arg(data.join("server.key")));
        let conf = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).expect("read postgresql.conf");
        text.push_str("\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
        std::fs::write(&conf, text).expect("write postgresql.conf");
        self.stop();
        self.start_server();
        dir.join("ca.pem")
    }

    /// What `during` returns, and the bytes of WAL the server wrote meanwhile (all of its
    /// writers', so the others should be idle).
    pub fn wal_written<T>(&self, during: impl FnOnce() -> T) -> (T, u64) {
        let lsn = self.psql("postgres", "SELECT pg_current_wal_insert_lsn()");
        let out = during();
        let sql = format!(
            "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '{}')::bigint",
            lsn.trim()
        );
        let bytes = self
            .psql("postgres", &sql)
            .trim()
            .parse()
            .expect("a WAL distance");
        (out, bytes)
    }

    /// Runs `sql` with psql in database `db` as the server's superuser; its output, one
    /// unaligned row a line.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let port = self.port.to_string();
        let output = self.as_server(
            &[
                "psql",
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-d",
                db,
                "-tAc",
                sql,
            ],
            &[],
        );
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// A new empty database; its URL.
    pub fn database(&self, name: &str) -> String {
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.data();
        let _ = self
            .server_command(
                &["pg_ctl", "-w", "-m", "immediate", "-D"],
                &[&data, Path::new("stop")],
            )
            .output();
    }
}

fn run(command: &mut Command) -> Output {
    let output = command.output().expect("run a PostgreSQL program");
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The folder of `initdb`, `pg_ctl` and `psql`: Debian's versioned folder (the newest), or
/// the real folder of an `initdb` on `PATH` (often a link into it).
fn binaries() -> Option<PathBuf> {
    let debian = std::fs::read_dir("/usr/lib/postgresql")
        .ok()
        .and_then(|versions| {
            let mut bins: Vec<PathBuf> = versions
                .filter_map(|entry| entry.ok().map(|entry| entry.path().join("bin")))
                .filter(|bin| bin.join("initdb").is_file())
                .collect();
            bins.sort();
            bins.pop()
        });
    debian.or_else(|| {
        let paths = std::env::var_os("PATH")?;
        std::env::split_paths(&paths)
            .map(|dir| dir.join("initdb"))
            .find(|initdb| initdb.is_file())
            .and_then(|initdb| std::fs::canonicalize(initdb).ok())
            .and_then(|initdb| initdb.parent().map(Path::to_path_buf))
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
}
