//! PostgreSQL for tests, with no server assumed: each test gets a fresh database on the server
//! at `PORTCULLIS_TEST_DATABASE_URL` or, when that is not set, on a private cluster this test
//! binary starts once (initdb on a temp dir, a free port) and that dies with it. Tests that stop
//! and start the database get a private cluster of their own (`PgCluster`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use portcullis::store::SqlStore;

/// The admin URL tests create their databases on.
pub fn shared_admin_url() -> String {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        std::env::var("PORTCULLIS_TEST_DATABASE_URL").unwrap_or_else(|_| start_shared_cluster())
    })
    .clone()
}

/// Where PostgreSQL's server programs are: on the PATH, else Debian's versioned directory.
fn pg_program(name: &str) -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join(name))
        .find(|p| p.is_file());
    if let Some(found) = on_path {
        return found;
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin").join(name))
        .filter(|p| p.is_file())
        .collect();
    versions.sort();
    versions.pop().unwrap_or_else(|| {
        panic!("PostgreSQL's {name} is needed by this test: install the postgresql server package (make test does)")
    })
}

/// The postgres user's uid and gid, when we are root (the server refuses to run as root).
fn postgres_ids() -> Option<(u32, u32)> {
    if !is_root() {
        return None;
    }
    let id = |flag: &str| -> u32 {
        let out = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .expect("id postgres");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("the postgres user exists (installed with the server)")
    };
    Some((id("-u"), id("-g")))
}

/// Prefix of the shared clusters' directories, followed by the owning test process's pid.
const SHARED_PREFIX: &str = "portcullis-pgshared-";

/// Removes directories of shared clusters whose test process has gone.
fn remove_stale_clusters() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix(SHARED_PREFIX) else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Starts this process's shared cluster: `postgres` in the foreground as a child of a thread
/// that lives as long as the process, with a parent-death signal, so it stops when the test
/// binary exits however it exits. Returns its admin URL.
fn start_shared_cluster() -> String {
    use std::os::unix::process::CommandExt as _;
    remove_stale_clusters();
    let dir = std::env::temp_dir().join(format!("{SHARED_PREFIX}{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("cluster dir");
    let ids = postgres_ids();
    let data = init_cluster(&dir);
    let port = free_port();
    let log = std::fs::File::create(dir.join("postgres.log")).expect("log file");
    let mut cmd = Command::new(pg_program("postgres"));
    cmd.arg("-D")
        .arg(&data)
        .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1"])
        .arg("-c")
        .arg(format!("unix_socket_directories={}", dir.display()))
        .args(["-c", "fsync=off", "-c", "max_connections=300"])
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log);
    if let Some((uid, gid)) = ids {
        cmd.uid(uid).gid(gid);
    }
    // SAFETY: prctl is async-signal-safe; it runs after the uid change, which would clear it.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGINT) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || match cmd.spawn() {
        Ok(mut child) => {
            let _ = tx.send(Ok(()));
            let _ = child.wait();
        }
        Err(e) => {
            let _ = tx.send(Err(e));
        }
    });
    rx.recv()
        .expect("starter thread")
        .unwrap_or_else(|e| panic!("cannot start postgres: {e}"));
    let host = format!("--port={port}");
    for _ in 0..300 {
        let ready = Command::new(pg_program("pg_isready"))
            .args(["-h", "127.0.0.1", &host, "-q"])
            .status()
            .is_ok_and(|s| s.success());
        if ready {
            return format!("postgres://postgres@127.0.0.1:{port}/postgres");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!(
        "private PostgreSQL did not become ready: {}",
        std::fs::read_to_string(dir.join("postgres.log")).unwrap_or_default()
    );
}

/// A new cluster's data directory under `dir` (owned by the postgres user when we are root,
/// since the server refuses to run as root), initialized with trust authentication.
fn init_cluster(dir: &Path) -> PathBuf {
    if is_root() {
        let ok = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir)
            .status()
            .expect("chown");
        assert!(ok.success());
    }
    let data = dir.join("data");
    let out = pg_tool(
        "initdb",
        &[
            "-D",
            path(&data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
        ],
    );
    assert!(
        out.status.success(),
        "initdb failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    data
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("free port")
        .local_addr()
        .expect("addr")
        .port()
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A database of its own on a server; dropped with the guard.
pub struct PgDatabase {
    admin_url: String,
    name: String,
    pub url: String,
}

impl PgDatabase {
    pub async fn create(admin_url: &str) -> PgDatabase {
        let admin = SqlStore::connect(admin_url, 1)
            .await
            .expect("admin url parses");
        let name = format!("portcullis_test_{:016x}", rand::random::<u64>());
        admin
            .execute_raw(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {admin_url} is required for this test: {e}"));
        admin.close().await;
        let (base, _) = admin_url.rsplit_once('/').expect("url has a database");
        PgDatabase {
            admin_url: admin_url.to_owned(),
            url: format!("{base}/{name}"),
            name,
        }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("rt");
            rt.block_on(async {
                if let Ok(admin) = SqlStore::connect(&admin_url, 1).await {
                    let _ = admin
                        .execute_raw(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                    admin.close().await;
                }
            });
        })
        .join();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false)
}

/// Runs a PostgreSQL tool, as the `postgres` user when we are root (initdb refuses root).
fn pg_tool(tool: &str, args: &[&str]) -> std::process::Output {
    let program = pg_program(tool);
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    cmd.args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {tool}: {e}"))
}

/// A private cluster this test may stop and start.
pub struct PgCluster {
    dir: tempfile::TempDir,
    pub port: u16,
}

impl PgCluster {
    pub fn start() -> PgCluster {
        let dir = tempfile::Builder::new()
            .prefix("portcullis-pg")
            .tempdir()
            .expect("tempdir");
        init_cluster(dir.path());
        let port = free_port();
        let cluster = PgCluster { dir, port };
        cluster.resume();
        cluster
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Starts (again) and waits until it accepts connections.
    pub fn resume(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off",
            self.port,
            path(self.dir.path())
        );
        let log = self.dir.path().join("postgres.log");
        let out = pg_tool(
            "pg_ctl",
            &[
                "-D",
                path(&self.data()),
                "-l",
                path(&log),
                "-o",
                &options,
                "-w",
                "start",
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// Stops at once (fast shutdown: connections are cut).
    pub fn stop(&self) {
        let out = pg_tool(
            "pg_ctl",
            &["-D", path(&self.data()), "-m", "fast", "-w", "stop"],
        );
        assert!(
            out.status.success(),
            "pg_ctl stop failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = pg_tool(
            "pg_ctl",
            &["-D", path(&self.data()), "-m", "immediate", "-w", "stop"],
        );
    }
}
