//! A `nats-server` child process with JetStream, on a free loopback port.
//!
//! `crm dev` uses it to run the pinned server in the data dir; every test uses it to get a
//! server of its own. The process is killed when the handle is dropped.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::error::LogError;

/// The nats-server release the project pins (see `scripts/setup-nats.sh`).
pub const PINNED_VERSION: &str = "2.12.8";

/// Why a started server is not ready: the port may have been taken (worth another port), or
/// anything else.
enum NotReady {
    PortTaken(LogError),
    Failed(LogError),
}

/// A running `nats-server`.
#[derive(Debug)]
pub struct NatsServer {
    child: Child,
    port: u16,
    /// The server's name (`-n`), told apart from another server on the same port by it.
    name: String,
    store_dir: PathBuf,
    extra_args: Vec<String>,
    _temp: Option<tempfile::TempDir>,
    /// What the server says: what it wrote before exiting says why it did.
    log: ServerLog,
}

/// Where a server's words go: its stderr always into an unnamed file of ours (flag errors
/// and anything said before its logger is set up go there), and its log into the caller's
/// log file when there is one (of which only what this start wrote counts: the file may
/// hold earlier runs).
#[derive(Debug)]
struct ServerLog {
    stderr: std::fs::File,
    file: Option<(PathBuf, u64)>,
}

impl ServerLog {
    /// A file for the stderr of a server about to start, and `log_file`'s current end.
    fn new(log_file: Option<&Path>) -> Result<Self, LogError> {
        let stderr = tempfile::tempfile()
            .map_err(|e| LogError::Server(format!("a file for nats-server's stderr: {e}")))?;
        let file = log_file.map(|path| {
            let len = std::fs::metadata(path).map_or(0, |m| m.len());
            (path.to_path_buf(), len)
        });
        Ok(Self { stderr, file })
    }

    /// A handle on the stderr file for the child.
    fn for_child(&self) -> Result<Stdio, LogError> {
        let dup = self
            .stderr
            .try_clone()
            .map_err(|e| LogError::Server(format!("a file for nats-server's stderr: {e}")))?;
        Ok(Stdio::from(dup))
    }

    /// What the server wrote since it started (at most the last 64 KiB of each file):
    /// its stderr, then its log file's new part. Read once it has exited.
    fn said(&self) -> String {
        let mut out = match self.stderr.try_clone() {
            Ok(f) => tail(f, 0),
            Err(_) => String::new(),
        };
        if let Some((path, from)) = &self.file
            && let Ok(f) = std::fs::File::open(path)
        {
            out.push_str(&tail(f, *from));
        }
        out
    }
}

/// The text of `file` after byte `from`, the last 64 KiB at most.
fn tail(mut file: std::fs::File, from: u64) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let len = file.seek(SeekFrom::End(0)).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(from.max(len.saturating_sub(64 * 1024))));
    let mut bytes = Vec::new();
    let _ = file.read_to_end(&mut bytes);
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Why a server that exited during start-up did, from what it said: a taken port (worth
/// another port) or anything else, with its last line.
fn exit_reason(what: &str, status: std::process::ExitStatus, said: &str) -> NotReady {
    let last = said
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("it said nothing");
    let e = LogError::Server(format!(
        "{what} exited during start-up ({status}): {}",
        last.trim()
    ));
    if said.contains("address already in use") {
        NotReady::PortTaken(e)
    } else {
        NotReady::Failed(e)
    }
}

/// How to start a server.
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    /// Client port; a free one is chosen when `None`.
    pub port: Option<u16>,
    /// JetStream store directory; a temporary one (deleted on drop) when `None`.
    pub store_dir: Option<PathBuf>,
    /// Explicit binary; otherwise [`find_binary`] decides.
    pub binary: Option<PathBuf>,
    /// Where the server writes its log; when `None`, a file of our own that is read only to
    /// say why the server exited during start-up.
    pub log_file: Option<PathBuf>,
    /// More command-line arguments (`--user`, `--auth`, …).
    pub extra_args: Vec<String>,
}

/// Finds the pinned `nats-server` binary: `$CRM_NATS_SERVER`, then `.tools/` in the current
/// directory or any ancestor of it or of the running executable, then `nats-server` on PATH.
/// The version is checked at connect time, so an old binary found on PATH is refused there.
pub fn find_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CRM_NATS_SERVER") {
        return Some(PathBuf::from(p));
    }
    let rel = Path::new(".tools")
        .join(format!("nats-server-{PINNED_VERSION}"))
        .join("nats-server");
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        roots.push(cwd);
    }
    if let Ok(exe) = std::env::current_exe() {
        roots.push(exe);
    }
    if let Some(dir) = option_env!("CARGO_MANIFEST_DIR") {
        roots.push(PathBuf::from(dir));
    }
    for root in roots {
        for dir in root.ancestors() {
            let candidate = dir.join(&rel);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("nats-server"))
            .find(|p| p.is_file())
    })
}

/// A free TCP port on 127.0.0.1 (bound and released; a small race is accepted).
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The `server_name` of the INFO the server on `port` greets with, if one answers.
async fn info_name(port: u16) -> Option<String> {
    use tokio::io::AsyncBufReadExt;
    let read = async {
        let socket = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        let mut line = String::new();
        tokio::io::BufReader::new(socket)
            .read_line(&mut line)
            .await
            .ok()?;
        let info: serde_json::Value =
            serde_json::from_str(line.strip_prefix("INFO ")?.trim()).ok()?;
        Some(info.get("server_name")?.as_str()?.to_owned())
    };
    tokio::time::timeout(Duration::from_secs(2), read)
        .await
        .ok()
        .flatten()
}

impl NatsServer {
    /// Starts a server with a temporary store on a free port.
    pub async fn start() -> Result<Self, LogError> {
        Self::start_with(ServerOptions::default()).await
    }

    /// Starts a server and waits until it accepts connections. On a port chosen here, a
    /// server that finds the port taken (another process bound it between the choice and the
    /// start) is started again on another one.
    pub async fn start_with(opts: ServerOptions) -> Result<Self, LogError> {
        let binary = opts.binary.clone().or_else(find_binary).ok_or_else(|| {
            LogError::Server(
                "nats-server not found: run scripts/setup-nats.sh or set CRM_NATS_SERVER".into(),
            )
        })?;
        let (store_dir, temp) = match &opts.store_dir {
            Some(dir) => (dir.clone(), None),
            None => {
                let t = tempfile::tempdir().map_err(|e| LogError::Server(e.to_string()))?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        std::fs::create_dir_all(&store_dir)
            .map_err(|e| LogError::Server(format!("{}: {e}", store_dir.display())))?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let port = match opts.port {
                Some(p) => p,
                None => free_port().map_err(|e| LogError::Server(e.to_string()))?,
            };
            let mut server = Self::spawn(&binary, &opts, port, &store_dir)?;
            match server.wait_ready().await {
                Ok(()) => {
                    server._temp = temp;
                    return Ok(server);
                }
                Err(NotReady::PortTaken(e)) if opts.port.is_none() && attempt < 5 => {
                    tracing::debug!(port, error = %e, "nats-server did not start; another port");
                    server.kill().await;
                }
                Err(NotReady::PortTaken(e) | NotReady::Failed(e)) => return Err(e),
            }
        }
    }

    fn spawn(
        binary: &Path,
        opts: &ServerOptions,
        port: u16,
        store_dir: &Path,
    ) -> Result<Self, LogError> {
        // A name of its own: readiness is this server answering on the port, not another.
        let name = format!("crm-{}", uuid::Uuid::new_v4().simple());
        let mut cmd = Command::new(binary);
        cmd.arg("-a")
            .arg("127.0.0.1")
            .arg("-p")
            .arg(port.to_string())
            .arg("-n")
            .arg(&name)
            .arg("-js")
            .arg("-sd")
            .arg(store_dir)
            .args(&opts.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true);
        // A process group of its own: Ctrl-C in a terminal signals the whole foreground
        // group, and the server must outlive the services still draining on it (the owner
        // stops it last).
        #[cfg(unix)]
        cmd.process_group(0);
        let log = ServerLog::new(opts.log_file.as_deref())?;
        if let Some(f) = &opts.log_file {
            cmd.arg("-l").arg(f);
        }
        cmd.stderr(log.for_child()?);
        let child = cmd
            .spawn()
            .map_err(|e| LogError::Server(format!("starting {}: {e}", binary.display())))?;
        Ok(NatsServer {
            child,
            port,
            name,
            store_dir: store_dir.to_path_buf(),
            extra_args: opts.extra_args.clone(),
            _temp: None,
            log,
        })
    }

    /// Waits until this server (by its name in the INFO it sends) accepts connections.
    async fn wait_ready(&mut self) -> Result<(), NotReady> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self
                .child
                .try_wait()
                .map_err(|e| NotReady::Failed(LogError::Server(e.to_string())))?
            {
                return Err(exit_reason("nats-server", status, &self.log.said()));
            }
            match info_name(self.port).await {
                Some(name) if name == self.name => return Ok(()),
                Some(other) => {
                    return Err(NotReady::PortTaken(LogError::Server(format!(
                        "port {} is another nats-server's ({other})",
                        self.port
                    ))));
                }
                None => {}
            }
            if tokio::time::Instant::now() > deadline {
                return Err(NotReady::Failed(LogError::Server(
                    "nats-server did not start within 15s".into(),
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The JetStream store directory.
    pub fn store_dir(&self) -> &Path {
        &self.store_dir
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Stops the server (SIGKILL) and waits for it to exit. The store directory stays.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// Stops the server gracefully: SIGTERM, then SIGKILL if it has not exited in 5 s.
    pub async fn stop(&mut self) {
        if let Some(pid) = self
            .child
            .id()
            .and_then(|pid| rustix::process::Pid::from_raw(i32::try_from(pid).ok()?))
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
                .await
                .is_ok()
            {
                return;
            }
        }
        self.kill().await;
    }

    /// Stops the server gracefully (SIGTERM via the `--signal` flag is not portable, so the
    /// child is killed; JetStream's file store is crash-safe) and starts it again on the same
    /// port and store.
    pub async fn restart(&mut self, binary: Option<PathBuf>) -> Result<(), LogError> {
        self.kill().await;
        let opts = ServerOptions {
            port: Some(self.port),
            store_dir: Some(self.store_dir.clone()),
            binary,
            log_file: None,
            extra_args: self.extra_args.clone(),
        };
        let temp = self._temp.take();
        let mut fresh = NatsServer::start_with(opts).await?;
        fresh._temp = temp;
        *self = fresh;
        Ok(())
    }
}

/// The log file of a cluster node, in its store directory.
const NODE_LOG: &str = "nats.log";

/// A cluster of `nats-server`s with JetStream on loopback (tests of replication and
/// fail-over). Each node has its own store; nodes are killed on drop.
#[derive(Debug)]
pub struct NatsCluster {
    pub nodes: Vec<Option<Child>>,
    ports: Vec<u16>,
    /// Node `i` is called `{prefix}{i}`: a name of this cluster's own, so readiness is these
    /// nodes answering, not another server that took a port.
    prefix: String,
    /// What each node says (its stderr, and its log in its store dir).
    logs: Vec<ServerLog>,
    _dirs: Vec<tempfile::TempDir>,
}

impl NatsCluster {
    /// Starts `n` nodes routed to each other and waits until all accept connections. Ports
    /// are chosen free; when another process takes one between the choice and the start,
    /// the cluster is started again on other ports (up to 5 times).
    pub async fn start(n: usize) -> Result<Self, LogError> {
        let binary =
            find_binary().ok_or_else(|| LogError::Server("nats-server not found".into()))?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let err = |e: std::io::Error| LogError::Server(e.to_string());
            let ports = || (0..n).map(|_| free_port()).collect::<Result<Vec<_>, _>>();
            let (client, cluster) = (ports().map_err(err)?, ports().map_err(err)?);
            match Self::try_start(&binary, client, &cluster).await {
                Ok(cluster) => return Ok(cluster),
                // The nodes started so far are killed as the half-built cluster drops.
                Err(NotReady::PortTaken(e)) if attempt < 5 => {
                    tracing::debug!(error = %e, "nats cluster did not start; other ports");
                }
                Err(NotReady::PortTaken(e) | NotReady::Failed(e)) => return Err(e),
            }
        }
    }

    /// Starts one node per client port, node `i` routing on `cluster_ports[i]`. On
    /// failure every node started is killed and waited for.
    async fn try_start(
        binary: &Path,
        ports: Vec<u16>,
        cluster_ports: &[u16],
    ) -> Result<Self, NotReady> {
        let n = ports.len();
        let mut cluster = Self {
            nodes: Vec::with_capacity(n),
            ports,
            prefix: format!("crm-{}-node-", uuid::Uuid::new_v4().simple()),
            logs: Vec::with_capacity(n),
            _dirs: Vec::with_capacity(n),
        };
        match cluster.launch(binary, cluster_ports).await {
            Ok(()) => Ok(cluster),
            Err(e) => {
                for i in 0..n {
                    cluster.kill(i).await;
                }
                Err(e)
            }
        }
    }

    /// Spawns the nodes and waits until each answers with its name on its client port and
    /// listens on its route port.
    async fn launch(&mut self, binary: &Path, cluster_ports: &[u16]) -> Result<(), NotReady> {
        let n = self.ports.len();
        let err = |e: std::io::Error| NotReady::Failed(LogError::Server(e.to_string()));
        for i in 0..n {
            let dir = tempfile::tempdir().map_err(err)?;
            let routes: Vec<String> = cluster_ports
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, p)| format!("nats://127.0.0.1:{p}"))
                .collect();
            let log_file = dir.path().join(NODE_LOG);
            let log = ServerLog::new(Some(&log_file)).map_err(NotReady::Failed)?;
            let child = Command::new(binary)
                .args([
                    "-a",
                    "127.0.0.1",
                    "-p",
                    &self.ports[i].to_string(),
                    "-js",
                    "-n",
                    &self.name(i),
                ])
                .arg("-sd")
                .arg(dir.path())
                .arg("-l")
                .arg(&log_file)
                .args([
                    "--cluster_name",
                    "crm-test",
                    "--cluster",
                    &format!("nats://127.0.0.1:{}", cluster_ports[i]),
                ])
                .args(["--routes", &routes.join(",")])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log.for_child().map_err(NotReady::Failed)?)
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| {
                    NotReady::Failed(LogError::Server(format!(
                        "starting {}: {e}",
                        binary.display()
                    )))
                })?;
            self.nodes.push(Some(child));
            self.logs.push(log);
            self._dirs.push(dir);
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let late = || NotReady::Failed(LogError::Server("cluster did not start within 20s".into()));
        for (i, &route_port) in cluster_ports.iter().enumerate() {
            // The client port first: this node's name in the greeting.
            loop {
                self.exited(i)?;
                match info_name(self.ports[i]).await {
                    Some(name) if name == self.name(i) => break,
                    Some(other) => {
                        return Err(NotReady::PortTaken(LogError::Server(format!(
                            "port {} is another nats-server's ({other})",
                            self.ports[i]
                        ))));
                    }
                    None => {}
                }
                if tokio::time::Instant::now() > deadline {
                    return Err(late());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // Then the route port, which nats-server opens after the client port (and
            // exits if it cannot).
            while tokio::net::TcpStream::connect(("127.0.0.1", route_port))
                .await
                .is_err()
            {
                self.exited(i)?;
                if tokio::time::Instant::now() > deadline {
                    return Err(late());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        // A node that found its route port held by another process exits just after that
        // process answered for it.
        tokio::time::sleep(Duration::from_millis(100)).await;
        (0..n).try_for_each(|i| self.exited(i))
    }

    /// An error if node `i` has exited: a taken port when its log says so.
    fn exited(&mut self, i: usize) -> Result<(), NotReady> {
        let Some(child) = &mut self.nodes[i] else {
            return Ok(());
        };
        let Some(status) = child
            .try_wait()
            .map_err(|e| NotReady::Failed(LogError::Server(e.to_string())))?
        else {
            return Ok(());
        };
        Err(exit_reason(
            &format!("cluster node {i}"),
            status,
            &self.logs[i].said(),
        ))
    }

    /// The server name of node `i`.
    fn name(&self, i: usize) -> String {
        format!("{}{i}", self.prefix)
    }

    /// The node a server name (a stream's leader, say) belongs to.
    pub fn node_named(&self, name: &str) -> Option<usize> {
        name.strip_prefix(&self.prefix)?
            .parse()
            .ok()
            .filter(|&i| i < self.ports.len())
    }

    /// All client URLs, comma-separated (what a client should be given).
    pub fn urls(&self) -> String {
        self.ports
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The client URL of one node.
    pub fn url(&self, node: usize) -> String {
        format!("nats://127.0.0.1:{}", self.ports[node])
    }

    /// SIGKILLs one node.
    pub async fn kill(&mut self, node: usize) {
        if let Some(mut child) = self.nodes[node].take() {
            let _ = child.kill().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cluster node whose port another process holds is told apart from a slow start: the
    /// attempt fails at once as a taken port (so `start` tries other ports), and no node
    /// of it is left running.
    #[tokio::test]
    async fn a_cluster_on_a_taken_port_is_refused_as_taken() -> anyhow::Result<()> {
        let binary = find_binary().ok_or_else(|| {
            anyhow::anyhow!(
                "nats-server not found: run scripts/setup-nats.sh or set CRM_NATS_SERVER"
            )
        })?;
        let held = std::net::TcpListener::bind("127.0.0.1:0")?;
        let taken = held.local_addr()?.port();
        let client = vec![free_port()?, taken];
        let routes = [free_port()?, free_port()?];
        let started = tokio::time::Instant::now();
        match NatsCluster::try_start(&binary, client.clone(), &routes).await {
            Err(NotReady::PortTaken(e)) => {
                let e = e.to_string();
                assert!(
                    e.contains("node 1") && e.contains("address already in use"),
                    "{e}"
                );
            }
            Err(NotReady::Failed(e)) => anyhow::bail!("not seen as a taken port: {e}"),
            Ok(_) => anyhow::bail!("a node started on a port another process holds"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{:?}",
            started.elapsed()
        );
        // Node 0 went with the failed attempt (whatever may answer on its port now).
        let node0 = info_name(client[0]).await;
        assert!(
            node0.as_deref().is_none_or(|n| !n.ends_with("-node-0")),
            "{node0:?}"
        );

        let cluster = NatsCluster::start(2).await?;
        let name = info_name(cluster.ports[1])
            .await
            .ok_or_else(|| anyhow::anyhow!("node 1 does not answer"))?;
        assert_eq!(cluster.node_named(&name), Some(1));
        assert_eq!(cluster.node_named("crm-node-1"), None);
        Ok(())
    }

    /// A server that exits during start-up says why, in the server's own words: a port
    /// held by another process is a taken port, and anything else (here an unknown flag)
    /// fails at once instead of being retried on other ports.
    #[tokio::test]
    async fn a_server_that_exits_at_start_up_says_why() -> anyhow::Result<()> {
        let held = std::net::TcpListener::bind("127.0.0.1:0")?;
        let taken = held.local_addr()?.port();
        let on_taken = NatsServer::start_with(ServerOptions {
            port: Some(taken),
            ..ServerOptions::default()
        })
        .await
        .map(|_| ())
        .expect_err("the port is held");
        assert!(
            on_taken.to_string().contains("address already in use"),
            "{on_taken}"
        );

        let started = tokio::time::Instant::now();
        let bad_flag = NatsServer::start_with(ServerOptions {
            extra_args: vec!["--no-such-flag".into()],
            ..ServerOptions::default()
        })
        .await
        .map(|_| ())
        .expect_err("an unknown flag");
        let text = bad_flag.to_string();
        assert!(
            text.contains("nats-server exited during start-up"),
            "{text}"
        );
        assert!(!text.contains("address already in use"), "{text}");
        assert!(text.contains("no-such-flag"), "{text}");
        // Not retried: one start of a server that fails at once.
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        Ok(())
    }

    /// The pinned nats-server version is written in several files (the script that fetches
    /// it, the scripts that point at it, the deployment images): they all name this one,
    /// so bumping one of them alone fails here rather than on a clean clone.
    #[test]
    fn every_file_pins_the_same_nats_server() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        for (file, pin) in [
            (
                "scripts/setup-nats.sh",
                format!("VERSION=\"{PINNED_VERSION}\""),
            ),
            (
                "scripts/dev.sh",
                format!(".tools/nats-server-{PINNED_VERSION}/nats-server"),
            ),
            (
                "scripts/test.sh",
                format!(".tools/nats-server-{PINNED_VERSION}/nats-server"),
            ),
            (
                "deploy/compose.yaml",
                format!("image: nats:{PINNED_VERSION}"),
            ),
            (
                "deploy/k8s/nats.yaml",
                format!("image: nats:{PINNED_VERSION}"),
            ),
        ] {
            let text = std::fs::read_to_string(root.join(file)).expect(file);
            assert!(text.contains(&pin), "{file} does not pin {pin}");
        }
    }
}
