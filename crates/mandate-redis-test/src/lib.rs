//! Private Redis servers for tests: a single `redis-server` (AOF on, so a killed server comes back
//! with its data) and a three-master Redis Cluster. Each process runs on a free loopback port with
//! its own temporary directory and is killed when its handle drops (also when a test panics). The
//! machine's shared instance on 6379 is never used.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SERVER_BIN: &str = "redis-server";
const SERVER_PACKAGE: &str = "redis-server";
const CLI_BIN: &str = "redis-cli";
const CLI_PACKAGE: &str = "redis-tools";
/// The machine's shared instance: never used.
const SHARED_PORT: u16 = 6379;
/// A cluster node also listens on `port + 10000` (the cluster bus).
const BUS_OFFSET: u16 = 10_000;
/// Cluster ports stay below this so that the bus port fits.
const MAX_CLUSTER_PORT: u16 = 55_535;
/// How long a server may take to answer PING.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a cluster may take to report `cluster_state:ok` after `--cluster create`.
const CLUSTER_OK_TIMEOUT: Duration = Duration::from_secs(15);
/// How long `redis-cli --cluster create` may take.
const CLUSTER_CREATE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one raw command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// How often readiness is polled.
const POLL_INTERVAL: Duration = Duration::from_millis(25);
/// How many ports `start` tries when the chosen one was taken before the server bound it.
const START_ATTEMPTS: usize = 5;
/// How many log lines an error shows.
const LOG_TAIL_LINES: usize = 30;
const CONFIG_FILE: &str = "redis.conf";
const LOG_FILE: &str = "redis.log";

/// A private `redis-server` on a free loopback port with its own temporary directory.
///
/// Configuration: bound to 127.0.0.1, `protected-mode yes`, AOF on (`appendonly yes`,
/// `appendfsync always`), `maxmemory-policy noeviction`, no RDB snapshots (`save ""`). The
/// config file (`redis.conf`), the log (`redis.log`) and the AOF live in [`RedisServer::dir`].
///
/// Dropping it kills the process (and waits for it) and removes the directory, unless the
/// directory was handed out with [`RedisServer::keep_dir`].
#[derive(Debug)]
pub struct RedisServer {
    node: Node,
}

impl RedisServer {
    /// Starts a private redis-server on a free loopback port with its own temporary directory,
    /// AOF on (`appendonly yes`, `appendfsync always`), `maxmemory-policy noeviction`, no RDB
    /// snapshots (`save ""`), `protected-mode yes`, bound to 127.0.0.1, and waits (up to 10 s)
    /// until it answers PING.
    ///
    /// Fails with "redis-server not found: install it (apt-get install redis-server)" when the
    /// binary is missing, and with the log's tail when the server does not come up.
    pub async fn start() -> anyhow::Result<Self> {
        Ok(Self {
            node: Node::start(false).await?,
        })
    }

    /// `redis://127.0.0.1:<port>/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.node.port)
    }

    /// The port it listens on (loopback only).
    pub fn port(&self) -> u16 {
        self.node.port
    }

    /// Its directory: config, log and AOF (`appendonlydir/`).
    pub fn dir(&self) -> &Path {
        &self.node.path
    }

    /// Hands the directory out: it is no longer removed on drop (the caller cleans it up).
    /// Returns its path.
    pub fn keep_dir(&mut self) -> PathBuf {
        self.node.keep_dir()
    }

    /// Whether the process is running (not killed, not exited).
    pub fn is_running(&mut self) -> bool {
        self.node.is_running()
    }

    /// Kills the server (SIGKILL: a crash, not a clean shutdown) and waits for it to exit.
    /// Does nothing when it is not running.
    pub fn kill(&mut self) {
        self.node.kill();
    }

    /// Starts it again on the same port and in the same directory (so the AOF replays), waiting
    /// (up to 10 s) until it answers PING. A server still running is killed first.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.node.kill();
        self.node.spawn()?;
        self.node.wait_ready().await.map_err(StartError::into_inner)
    }

    /// Runs `redis-cli -h 127.0.0.1 -p <port> <args…>` and returns its stdout (raw output, as
    /// redis-cli prints when not on a terminal: `OK\n`, a value, one line per array element).
    /// An error reply is *not* an `Err`: redis-cli exits 0 and prints it (`ERR …`,
    /// `NOPERM …`, `WRONGPASS …`), so ACL tests check the output. It is an `Err` when redis-cli
    /// cannot run or exits unsuccessfully (it cannot connect, say); the error holds its stdout
    /// and stderr.
    pub fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        run_cli(self.node.port, false, args)
    }
}

/// A Redis Cluster of three masters (no replicas), each a private `redis-server` with
/// `cluster-enabled yes` on a free loopback port (whose bus port, `port + 10000`, is free too),
/// with its own temporary directory and `cluster-config-file`. Otherwise configured like
/// [`RedisServer`].
///
/// Dropping it kills every node (and waits) and removes their directories.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<Node>,
}

impl RedisCluster {
    /// Starts three cluster-enabled redis-server processes, joins them with
    /// `redis-cli --cluster create … --cluster-replicas 0 --cluster-yes` and waits until
    /// `CLUSTER INFO` reports `cluster_state:ok` on every node.
    pub async fn start() -> anyhow::Result<Self> {
        let mut nodes = Vec::with_capacity(3);
        for _ in 0..3 {
            // Each running node holds its port and bus port, so the next one picks others.
            nodes.push(Node::start(true).await?);
        }
        let cluster = Self { nodes };
        cluster.create().await?;
        cluster.wait_ok().await?;
        Ok(cluster)
    }

    /// `redis://127.0.0.1:<port>` for each node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|node| format!("redis://127.0.0.1:{}", node.port))
            .collect()
    }

    /// Each node's port.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|node| node.port).collect()
    }

    /// Runs `redis-cli -c -h 127.0.0.1 -p <port of node> <args…>` (`-c`: follows MOVED/ASK
    /// redirections) and returns its stdout.
    pub fn cli(&self, node: usize, args: &[&str]) -> anyhow::Result<String> {
        let port = self
            .nodes
            .get(node)
            .map(|node| node.port)
            .with_context(|| format!("no cluster node {node} (there are {})", self.nodes.len()))?;
        run_cli(port, true, args)
    }

    async fn create(&self) -> anyhow::Result<()> {
        let mut command = tokio::process::Command::new(CLI_BIN);
        command.arg("--cluster").arg("create");
        for node in &self.nodes {
            command.arg(format!("127.0.0.1:{}", node.port));
        }
        command
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let child = command
            .spawn()
            .map_err(|error| spawn_error(error, CLI_BIN, CLI_PACKAGE))?;
        let output = tokio::time::timeout(CLUSTER_CREATE_TIMEOUT, child.wait_with_output())
            .await
            .map_err(|_| {
                anyhow!(
                    "redis-cli --cluster create did not finish within {CLUSTER_CREATE_TIMEOUT:?}"
                )
            })??;
        if !output.status.success() {
            bail!(
                "redis-cli --cluster create failed ({}):\n{}\n{}",
                output.status,
                String::from_utf8_lossy(&output.stdout).trim(),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(())
    }

    async fn wait_ok(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + CLUSTER_OK_TIMEOUT;
        for node in &self.nodes {
            loop {
                let info = command(node.port, &["CLUSTER", "INFO"]).await;
                if matches!(&info, Ok(info) if info.contains("cluster_state:ok")) {
                    break;
                }
                if Instant::now() >= deadline {
                    let last = match info {
                        Ok(info) => info,
                        Err(error) => format!("{error:#}"),
                    };
                    bail!(
                        "cluster node on port {} did not report cluster_state:ok within \
                         {CLUSTER_OK_TIMEOUT:?}; last CLUSTER INFO:\n{last}\nlog tail:\n{}",
                        node.port,
                        node.log_tail()
                    );
                }
                tokio::time::sleep(POLL_INTERVAL).await;
            }
        }
        Ok(())
    }
}

/// Why a start failed: the port was taken (try another) or something else (give up).
#[derive(Debug)]
enum StartError {
    PortTaken(anyhow::Error),
    Failed(anyhow::Error),
}

impl StartError {
    fn into_inner(self) -> anyhow::Error {
        match self {
            Self::PortTaken(error) | Self::Failed(error) => error,
        }
    }
}

/// One redis-server process and its directory.
#[derive(Debug)]
struct Node {
    port: u16,
    cluster: bool,
    path: PathBuf,
    /// `None` once handed out with `keep_dir`.
    dir: Option<TempDir>,
    child: Option<Child>,
    /// The log's length when the current process was spawned.
    log_offset: u64,
}

impl Node {
    /// A running node on a free port, retrying with other ports when one is taken in between.
    async fn start(cluster: bool) -> anyhow::Result<Self> {
        let mut last = None;
        for _ in 0..START_ATTEMPTS {
            let port = free_port(cluster)?;
            let dir = tempfile::Builder::new()
                .prefix("mandate-redis-")
                .tempdir()
                .context("creating a temporary directory for redis-server")?;
            let mut node = Self {
                port,
                cluster,
                path: dir.path().to_path_buf(),
                dir: Some(dir),
                child: None,
                log_offset: 0,
            };
            node.spawn()?;
            match node.wait_ready().await {
                Ok(()) => return Ok(node),
                Err(StartError::PortTaken(error)) => last = Some(error),
                Err(StartError::Failed(error)) => return Err(error),
            }
        }
        let error = last.unwrap_or_else(|| anyhow!("no attempt made"));
        Err(error.context(format!(
            "redis-server could not bind a free port in {START_ATTEMPTS} attempts"
        )))
    }

    fn config(&self) -> String {
        let dir = self
            .path
            .to_string_lossy()
            .replace('\\', "\\\\")
            .replace('"', "\\\"");
        let mut config = format!(
            "port {port}\n\
             bind 127.0.0.1\n\
             protected-mode yes\n\
             daemonize no\n\
             dir \"{dir}\"\n\
             logfile \"\"\n\
             appendonly yes\n\
             appendfsync always\n\
             maxmemory-policy noeviction\n\
             save \"\"\n",
            port = self.port
        );
        if self.cluster {
            config.push_str(
                "cluster-enabled yes\n\
                 cluster-config-file nodes.conf\n\
                 cluster-node-timeout 5000\n",
            );
        }
        config
    }

    /// Writes the config and starts the process (logging to `redis.log`, appended).
    fn spawn(&mut self) -> anyhow::Result<()> {
        if self.port == SHARED_PORT {
            bail!("refusing to start redis-server on the shared port {SHARED_PORT}");
        }
        let config_path = self.path.join(CONFIG_FILE);
        fs::write(&config_path, self.config())
            .with_context(|| format!("writing {}", config_path.display()))?;
        let log_path = self.path.join(LOG_FILE);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        self.log_offset = log.metadata().map(|meta| meta.len()).unwrap_or(0);
        let child = Command::new(SERVER_BIN)
            .arg(&config_path)
            .current_dir(&self.path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|error| spawn_error(error, SERVER_BIN, SERVER_PACKAGE))?;
        self.child = Some(child);
        Ok(())
    }

    /// Polls until the server answers PING (and is ours: `INFO server` names our process),
    /// up to [`READY_TIMEOUT`]. Kills the process on failure.
    async fn wait_ready(&mut self) -> Result<(), StartError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let pid = match self.child.as_mut() {
                None => return Err(StartError::Failed(anyhow!("redis-server is not running"))),
                Some(child) => match child.try_wait() {
                    Ok(None) => child.id(),
                    Ok(Some(status)) => {
                        self.child = None;
                        let tail = self.log_tail();
                        let error = anyhow!(
                            "redis-server on port {} exited during startup ({status}); \
                             log tail ({}):\n{tail}",
                            self.port,
                            self.path.join(LOG_FILE).display()
                        );
                        return Err(if tail.contains("Address already in use") {
                            StartError::PortTaken(error)
                        } else {
                            StartError::Failed(error)
                        });
                    }
                    Err(error) => {
                        self.kill();
                        return Err(StartError::Failed(
                            anyhow::Error::new(error).context("checking on redis-server"),
                        ));
                    }
                },
            };
            if matches!(command(self.port, &["PING"]).await, Ok(reply) if reply == "PONG") {
                let info = command(self.port, &["INFO", "server"]).await;
                match info.as_deref().map(process_id) {
                    Ok(Some(id)) if id == pid => return Ok(()),
                    Ok(_) => {
                        // Someone else's server answered on the port we picked.
                        self.kill();
                        return Err(StartError::PortTaken(anyhow!(
                            "another redis-server answered on port {}",
                            self.port
                        )));
                    }
                    // Not ready after all (loading, say): poll again.
                    Err(_) => {}
                }
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(StartError::Failed(anyhow!(
                    "redis-server on port {} did not answer PING within {READY_TIMEOUT:?}; \
                     log tail ({}):\n{}",
                    self.port,
                    self.path.join(LOG_FILE).display(),
                    self.log_tail()
                )));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    fn is_running(&mut self) -> bool {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            Some(Ok(Some(_))) => {
                self.child = None;
                false
            }
            Some(Err(_)) | None => false,
        }
    }

    /// SIGKILL and wait.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Fails only when it has already exited; the wait reaps it either way.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn keep_dir(&mut self) -> PathBuf {
        match self.dir.take() {
            Some(dir) => dir.keep(),
            None => self.path.clone(),
        }
    }

    /// The last lines the current process logged.
    fn log_tail(&self) -> String {
        match read_from(&self.path.join(LOG_FILE), self.log_offset) {
            Ok(log) => {
                let lines: Vec<&str> = log.lines().collect();
                let start = lines.len().saturating_sub(LOG_TAIL_LINES);
                lines.get(start..).unwrap_or_default().join("\n")
            }
            Err(error) => format!("(log unreadable: {error})"),
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
        // `dir` (a TempDir, unless handed out) is removed after this, with the fields.
    }
}

fn read_from(path: &Path, offset: u64) -> io::Result<String> {
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(offset))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// A free loopback port (never 6379). For a cluster node, one below 55535 whose bus port
/// (`port + 10000`) is free too.
fn free_port(cluster: bool) -> anyhow::Result<u16> {
    for _ in 0..200 {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .context("binding 127.0.0.1:0 to find a free port")?;
        let port = listener.local_addr()?.port();
        if port == SHARED_PORT {
            continue;
        }
        if !cluster {
            return Ok(port);
        }
        if port >= MAX_CLUSTER_PORT || port + BUS_OFFSET == SHARED_PORT {
            continue;
        }
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port + BUS_OFFSET)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free loopback port found (cluster: {cluster})")
}

fn spawn_error(error: io::Error, bin: &str, package: &str) -> anyhow::Error {
    if error.kind() == io::ErrorKind::NotFound {
        anyhow!("{bin} not found: install it (apt-get install {package})")
    } else {
        anyhow::Error::new(error).context(format!("starting {bin}"))
    }
}

/// `redis-cli -h 127.0.0.1 -p <port> [-c] <args…>`, returning stdout.
fn run_cli(port: u16, cluster: bool, args: &[&str]) -> anyhow::Result<String> {
    if port == SHARED_PORT {
        bail!("refusing to run redis-cli against the shared port {SHARED_PORT}");
    }
    let mut command = Command::new(CLI_BIN);
    command.args(["-h", "127.0.0.1", "-p", &port.to_string()]);
    if cluster {
        command.arg("-c");
    }
    let output = command
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|error| spawn_error(error, CLI_BIN, CLI_PACKAGE))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!(
            "redis-cli -p {port} {} failed ({}): {} {}",
            args.join(" "),
            output.status,
            stdout.trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(stdout)
}

/// The `process_id` field of an `INFO server` reply.
fn process_id(info: &str) -> Option<u32> {
    info.lines()
        .find_map(|line| line.strip_prefix("process_id:"))
        .and_then(|id| id.trim().parse().ok())
}

/// Sends one command over a raw connection and returns a simple-string, integer or bulk reply
/// (an error reply is an `Err`).
async fn command(port: u16, args: &[&str]) -> anyhow::Result<String> {
    tokio::time::timeout(COMMAND_TIMEOUT, command_inner(port, args))
        .await
        .map_err(|_| anyhow!("redis on port {port} did not reply within {COMMAND_TIMEOUT:?}"))?
}

async fn command_inner(port: u16, args: &[&str]) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await?;
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    stream.write_all(request.as_bytes()).await?;
    let mut buffer = Vec::new();
    let mut chunk = [0_u8; 4096];
    loop {
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            bail!("redis on port {port} closed the connection");
        }
        buffer.extend_from_slice(chunk.get(..read).unwrap_or_default());
        if let Some(reply) = parse_reply(&buffer) {
            return reply;
        }
    }
}

/// Parses one RESP reply: `None` while incomplete.
fn parse_reply(buffer: &[u8]) -> Option<anyhow::Result<String>> {
    let line_end = buffer.windows(2).position(|pair| pair == b"\r\n")?;
    let (&kind, _) = buffer.split_first()?;
    let line = String::from_utf8_lossy(buffer.get(1..line_end).unwrap_or_default()).into_owned();
    match kind {
        b'+' | b':' => Some(Ok(line)),
        b'-' => Some(Err(anyhow!("redis error: {line}"))),
        b'$' => {
            let Ok(length) = line.parse::<i64>() else {
                return Some(Err(anyhow!("bad bulk length: {line}")));
            };
            let Ok(length) = usize::try_from(length) else {
                return Some(Ok(String::new())); // nil
            };
            let start = line_end + 2;
            let body = buffer.get(start..start + length)?;
            buffer.get(start + length..start + length + 2)?;
            Some(Ok(String::from_utf8_lossy(body).into_owned()))
        }
        other => Some(Err(anyhow!(
            "unexpected reply type {:?}",
            char::from(other)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refuses(port: u16) -> bool {
        std::net::TcpStream::connect_timeout(
            &(Ipv4Addr::LOCALHOST, port).into(),
            Duration::from_millis(500),
        )
        .is_err()
    }

    #[tokio::test]
    async fn starts_and_answers_ping() {
        let server = RedisServer::start().await.unwrap();
        assert_ne!(server.port(), SHARED_PORT);
        assert_eq!(server.cli(&["PING"]).unwrap().trim(), "PONG");
        assert_eq!(
            server.url(),
            format!("redis://127.0.0.1:{}/0", server.port())
        );
        assert!(server.dir().join(CONFIG_FILE).is_file());
        assert!(server.dir().join(LOG_FILE).is_file());
        let config = |name: &str| server.cli(&["CONFIG", "GET", name]).unwrap();
        assert_eq!(config("appendonly"), "appendonly\nyes\n");
        assert_eq!(config("appendfsync"), "appendfsync\nalways\n");
        assert_eq!(config("maxmemory-policy"), "maxmemory-policy\nnoeviction\n");
        assert_eq!(config("save"), "save\n\n");
        assert_eq!(config("protected-mode"), "protected-mode\nyes\n");
        assert_eq!(config("bind"), "bind\n127.0.0.1\n");
        // An error reply comes back in the output (redis-cli exits 0).
        let unknown = server.cli(&["NOSUCHCOMMAND"]).unwrap();
        assert!(unknown.starts_with("ERR unknown command"), "{unknown}");
    }

    #[tokio::test]
    async fn aof_survives_a_kill() {
        let mut server = RedisServer::start().await.unwrap();
        let port = server.port();
        let dir = server.dir().to_path_buf();
        assert_eq!(
            server.cli(&["SET", "durable", "yes it is"]).unwrap().trim(),
            "OK"
        );
        server.kill();
        assert!(!server.is_running());
        assert!(refuses(port), "killed server still accepts connections");
        server.restart().await.unwrap();
        assert!(server.is_running());
        assert_eq!(server.port(), port);
        assert_eq!(server.dir(), dir);
        assert_eq!(server.cli(&["GET", "durable"]).unwrap().trim(), "yes it is");
        // Restarting a running server kills it first.
        server.restart().await.unwrap();
        assert_eq!(server.cli(&["GET", "durable"]).unwrap().trim(), "yes it is");
    }

    #[tokio::test]
    async fn servers_are_separate_and_drop_stops_them() {
        let first = RedisServer::start().await.unwrap();
        let second = RedisServer::start().await.unwrap();
        assert_ne!(first.port(), second.port());
        assert_ne!(first.dir(), second.dir());
        first.cli(&["SET", "only-in-first", "1"]).unwrap();
        assert_eq!(
            second.cli(&["EXISTS", "only-in-first"]).unwrap().trim(),
            "0"
        );

        let (port, dir) = (first.port(), first.dir().to_path_buf());
        drop(first);
        assert!(refuses(port), "dropped server still accepts connections");
        assert!(!dir.exists(), "dropped server's directory remains");
        assert_eq!(second.cli(&["PING"]).unwrap().trim(), "PONG");
    }

    #[tokio::test]
    async fn a_panicking_test_still_stops_its_server() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let server = RedisServer::start().await.unwrap();
            tx.send((server.port(), server.dir().to_path_buf()))
                .unwrap();
            panic!("deliberate panic with a running redis-server (expected in test output)");
        });
        assert!(task.await.unwrap_err().is_panic());
        let (port, dir) = rx.await.unwrap();
        assert!(refuses(port), "server outlived the panicking test");
        assert!(!dir.exists());
    }

    #[tokio::test]
    async fn a_handed_out_dir_survives_drop() {
        let mut server = RedisServer::start().await.unwrap();
        server.cli(&["SET", "k", "v"]).unwrap();
        let port = server.port();
        let dir = server.keep_dir();
        drop(server);
        assert!(refuses(port));
        assert!(dir.join(LOG_FILE).is_file());
        assert!(dir.join("appendonlydir").is_dir());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn cluster_of_three_masters() {
        let cluster = RedisCluster::start().await.unwrap();
        let ports = cluster.ports();
        assert_eq!(ports.len(), 3);
        assert_eq!(
            cluster.urls(),
            ports
                .iter()
                .map(|port| format!("redis://127.0.0.1:{port}"))
                .collect::<Vec<_>>()
        );
        for port in &ports {
            assert!(*port < MAX_CLUSTER_PORT);
        }
        let info = cluster.cli(0, &["CLUSTER", "INFO"]).unwrap();
        assert!(info.contains("cluster_state:ok"), "{info}");
        assert!(info.contains("cluster_known_nodes:3"), "{info}");
        assert!(info.contains("cluster_size:3"), "{info}");
        // Keys in different slots, written through one node and read through another.
        for key in ["alpha", "bravo", "charlie", "delta"] {
            assert_eq!(cluster.cli(1, &["SET", key, key]).unwrap().trim(), "OK");
            assert_eq!(cluster.cli(2, &["GET", key]).unwrap().trim(), key);
        }
        assert!(cluster.cli(3, &["PING"]).is_err());

        drop(cluster);
        for port in ports {
            assert!(
                refuses(port),
                "dropped cluster node {port} still accepts connections"
            );
            assert!(refuses(port + BUS_OFFSET), "bus port {port} still open");
        }
    }

    #[test]
    fn a_missing_binary_is_named() {
        let error = Command::new("redis-server-that-does-not-exist")
            .spawn()
            .map_err(|error| spawn_error(error, SERVER_BIN, SERVER_PACKAGE))
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "redis-server not found: install it (apt-get install redis-server)"
        );
    }

    #[test]
    fn parses_replies() {
        assert!(parse_reply(b"+PO").is_none());
        assert_eq!(parse_reply(b"+PONG\r\n").unwrap().unwrap(), "PONG");
        assert_eq!(parse_reply(b":42\r\n").unwrap().unwrap(), "42");
        assert!(parse_reply(b"-LOADING busy\r\n").unwrap().is_err());
        assert!(parse_reply(b"$5\r\nhel").is_none());
        assert!(parse_reply(b"$5\r\nhello").is_none());
        assert_eq!(parse_reply(b"$5\r\nhello\r\n").unwrap().unwrap(), "hello");
        assert_eq!(parse_reply(b"$-1\r\n").unwrap().unwrap(), "");
        assert!(parse_reply(b"\r\n").unwrap().is_err());
        assert_eq!(process_id("# Server\r\nprocess_id:1234\r\n"), Some(1234));
    }
}
