//! What every measurement needs: uniquely named databases and queues that are removed at the
//! end, a pipelined publisher with confirms, the worker as a child process, `/proc` readings,
//! the benchmark's messages and percentiles.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use lapin::PublisherConfirm;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeleteOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use serde_json::json;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection as _};

use capture_worker::config::Settings;
use capture_worker::queue::topology::Topology;
use capture_worker::storage::Store;

/// The run's shared context and the registry of what it created.
pub struct BenchEnv {
    pub settings: Settings,
    pub worker_binary: PathBuf,
    /// Short unique id of this run; part of every name it creates.
    pub run_id: String,
    /// Worker logs go here; removed at the end unless something failed.
    pub log_dir: PathBuf,
    server: PgConnectOptions,
    /// The PostgreSQL and RabbitMQ processes serving this run, for CPU accounting.
    pub services: Services,
    databases: Mutex<Vec<String>>,
    /// Settings the worker runs with other than its configuration's (`CAPTURE__…` variables
    /// and values): none unless `--concurrency` or `--prefetch` were given.
    pub overrides: Vec<(String, String)>,
    topologies: Mutex<Vec<Topology>>,
    next: std::sync::atomic::AtomicU32,
}

impl BenchEnv {
    pub fn new(
        settings: &Settings,
        worker_binary: PathBuf,
        overrides: Vec<(String, String)>,
    ) -> anyhow::Result<BenchEnv> {
        let server = PgConnectOptions::from_str(settings.database.url.expose())
            .context("parsing database.url")?
            .disable_statement_logging();
        let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
        let log_dir = std::env::temp_dir().join(format!("capture-worker-bench-{run_id}"));
        std::fs::create_dir_all(&log_dir)
            .with_context(|| format!("creating {}", log_dir.display()))?;
        let amqp_port = reqwest::Url::parse(settings.amqp.url.expose())
            .ok()
            .and_then(|u| u.port())
            .unwrap_or(5672);
        let services = Services {
            postmaster: listening_pid(server.get_port()),
            rabbitmq: listening_pid(amqp_port),
        };
        Ok(BenchEnv {
            settings: settings.clone(),
            worker_binary,
            run_id,
            log_dir,
            server,
            services,
            databases: Mutex::new(Vec::new()),
            overrides,
            topologies: Mutex::new(Vec::new()),
            next: std::sync::atomic::AtomicU32::new(0),
        })
    }

    /// A name unique to this run and this use: `<prefix>_<run>_<n>`.
    pub fn unique(&self, prefix: &str) -> String {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("{prefix}_{}_{n}", self.run_id)
    }

    /// Creates and migrates a fresh database; returns its URL (for the worker) and a store.
    pub async fn fresh_database(&self, max_connections: u32) -> anyhow::Result<(String, Store)> {
        let (url, pool) = self.fresh_empty_database(max_connections).await?;
        let store = Store::from_pool(pool);
        store
            .migrate()
            .await
            .with_context(|| format!("migrating {url}"))?;
        Ok((url, store))
    }

    /// Creates a fresh, empty database; returns its URL and a pool.
    pub async fn fresh_empty_database(
        &self,
        max_connections: u32,
    ) -> anyhow::Result<(String, sqlx::PgPool)> {
        let name = self.unique("cw_bench");
        let mut admin = sqlx::PgConnection::connect_with(&self.server.clone().database("postgres"))
            .await
            .context("connecting to PostgreSQL's maintenance database (database.url)")?;
        sqlx::query(sqlx::AssertSqlSafe(format!("create database {name}")))
            .execute(&mut admin)
            .await
            .with_context(|| format!("creating database {name}"))?;
        let _ = admin.close().await;
        if let Ok(mut dbs) = self.databases.lock() {
            dbs.push(name.clone());
        }
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(self.server.clone().database(&name))
            .await
            .with_context(|| format!("connecting to {name}"))?;
        let mut url = reqwest::Url::parse(self.settings.database.url.expose())
            .context("database.url is not a URL")?;
        url.set_path(&format!("/{name}"));
        Ok((url.to_string(), pool))
    }

    /// A uniquely named topology (exchange, quorum queue, dead-letter pair), declared now.
    pub async fn fresh_topology(&self) -> anyhow::Result<Topology> {
        let tag = self.unique("bench");
        let topology = Topology::new(
            format!("fulfillment-{tag}"),
            format!("capture-worker-{tag}"),
        );
        if let Ok(mut t) = self.topologies.lock() {
            t.push(topology.clone());
        }
        let conn = self.amqp().await?;
        let channel = conn.create_channel().await?;
        topology
            .declare(&channel)
            .await
            .context("declaring the benchmark's topology")?;
        let _ = channel.close(200, "declared".into()).await;
        let _ = conn.close(200, "declared".into()).await;
        Ok(topology)
    }

    pub async fn amqp(&self) -> anyhow::Result<Connection> {
        Connection::connect(
            self.settings.amqp.url.expose(),
            ConnectionProperties::default().with_connection_name("capture-worker-bench".into()),
        )
        .await
        .context("connecting to RabbitMQ (amqp.url)")
    }

    /// Removes every database, queue and exchange this run created. Best effort: reports what
    /// it could not remove.
    pub async fn cleanup(&self) {
        let topologies: Vec<Topology> = self
            .topologies
            .lock()
            .map(|mut t| std::mem::take(&mut *t))
            .unwrap_or_default();
        if !topologies.is_empty() {
            match self.amqp().await {
                Ok(conn) => {
                    if let Ok(ch) = conn.create_channel().await {
                        for t in &topologies {
                            for q in [t.queue.clone(), t.dead_letter()] {
                                if let Err(e) = ch
                                    .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                                    .await
                                {
                                    eprintln!("bench: could not delete queue {q}: {e}");
                                }
                            }
                            for x in [
                                t.exchange.clone(),
                                t.dead_letter(),
                                format!("{}.outcomes", t.exchange),
                            ] {
                                let _ = ch
                                    .exchange_delete(
                                        x.as_str().into(),
                                        ExchangeDeleteOptions::default(),
                                    )
                                    .await;
                            }
                        }
                        let _ = ch.close(200, "cleaned up".into()).await;
                    }
                    let _ = conn.close(200, "cleaned up".into()).await;
                }
                Err(e) => eprintln!("bench: could not remove the benchmark's queues: {e:#}"),
            }
        }
        let databases: Vec<String> = self
            .databases
            .lock()
            .map(|mut d| std::mem::take(&mut *d))
            .unwrap_or_default();
        if !databases.is_empty() {
            match sqlx::PgConnection::connect_with(&self.server.clone().database("postgres")).await
            {
                Ok(mut admin) => {
                    for db in databases {
                        if let Err(e) = sqlx::query(sqlx::AssertSqlSafe(format!(
                            "drop database if exists {db} with (force)"
                        )))
                        .execute(&mut admin)
                        .await
                        {
                            eprintln!("bench: could not drop database {db}: {e}");
                        }
                    }
                    let _ = admin.close().await;
                }
                Err(e) => eprintln!("bench: could not drop the benchmark's databases: {e}"),
            }
        }
        let _ = std::fs::remove_dir_all(&self.log_dir);
    }
}

/// Confirms a publisher keeps outstanding before it waits for the oldest.
pub const PUBLISH_WINDOW: usize = 256;

/// Publishes with confirms, keeping up to `window` confirms outstanding (as a warehouse's
/// publisher would under load), and fails on a nack or an unroutable message.
pub struct PipelinedPublisher {
    channel: Channel,
    exchange: String,
    window: usize,
    outstanding: VecDeque<PublisherConfirm>,
    pub published: u64,
}

impl PipelinedPublisher {
    pub async fn open(
        conn: &Connection,
        exchange: &str,
        window: usize,
    ) -> anyhow::Result<PipelinedPublisher> {
        let channel = conn.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(PipelinedPublisher {
            channel,
            exchange: exchange.to_owned(),
            window: window.max(1),
            outstanding: VecDeque::new(),
            published: 0,
        })
    }

    pub async fn publish(&mut self, routing_key: &str, body: &[u8]) -> anyhow::Result<()> {
        if self.outstanding.len() >= self.window
            && let Some(c) = self.outstanding.pop_front()
        {
            settle(c).await?;
        }
        let confirm = self
            .channel
            .basic_publish(
                self.exchange.as_str().into(),
                routing_key.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                body,
                BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_content_type("application/json".into())
                    .with_headers(FieldTable::default()),
            )
            .await
            .context("publishing")?;
        self.outstanding.push_back(confirm);
        self.published += 1;
        Ok(())
    }

    /// Waits for every outstanding confirm, then closes the channel.
    pub async fn close(mut self) -> anyhow::Result<()> {
        self.flush().await?;
        let _ = self.channel.close(200, "published".into()).await;
        Ok(())
    }

    /// Waits for every outstanding confirm.
    pub async fn flush(&mut self) -> anyhow::Result<()> {
        while let Some(c) = self.outstanding.pop_front() {
            settle(c).await?;
        }
        Ok(())
    }
}

async fn settle(confirm: PublisherConfirm) -> anyhow::Result<()> {
    let confirmation = confirm.await.context("waiting for a publisher confirm")?;
    if confirmation.is_nack() {
        bail!("the broker refused a message (nack)");
    }
    if confirmation.take_message().is_some() {
        bail!("a message was unroutable (no queue bound)");
    }
    Ok(())
}

/// The real worker binary running as a child process, killed when dropped.
pub struct WorkerProcess {
    child: Child,
    pub http: SocketAddr,
    pub log: PathBuf,
}

impl WorkerProcess {
    /// Starts `capture-worker run` on the given database, topology and provider URL. Other
    /// settings come from the environment and `config/`, as for any `run`.
    pub fn spawn(
        env: &BenchEnv,
        database_url: &str,
        topology: &Topology,
        sandbox_url: &str,
        name: &str,
    ) -> anyhow::Result<WorkerProcess> {
        let http = free_port().context("finding a free port for the worker's health server")?;
        let log = env.log_dir.join(format!("{name}.log"));
        let log_file = std::fs::File::create(&log)
            .with_context(|| format!("creating the worker log {}", log.display()))?;
        let mut command = Command::new(&env.worker_binary);
        command.envs(env.overrides.iter().map(|(k, v)| (k, v)));
        let child = command
            .arg("run")
            .env("CAPTURE__DATABASE__URL", database_url)
            .env("CAPTURE__AMQP__URL", env.settings.amqp.url.expose())
            .env("CAPTURE__AMQP__EXCHANGE", &topology.exchange)
            .env("CAPTURE__AMQP__QUEUE", &topology.queue)
            // outcome events on: every transition's event is written and published
            .env(
                "CAPTURE__AMQP__OUTCOMES_EXCHANGE",
                format!("{}.outcomes", topology.exchange),
            )
            .env(
                "CAPTURE__OUTBOX__RELAY",
                env.settings.outbox.relay.to_string(),
            )
            .env("CAPTURE__HTTP__LISTEN", http.to_string())
            .env("CAPTURE__SANDBOX__EMBEDDED", "false")
            .env("CAPTURE__PROVIDERS__SANDBOX__BASE_URL", sandbox_url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log_file))
            .spawn()
            .with_context(|| format!("starting {}", env.worker_binary.display()))?;
        Ok(WorkerProcess { child, http, log })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until `/readyz` says the worker consumes and reaches its database.
    pub async fn wait_ready(&mut self, within: Duration) -> anyhow::Result<()> {
        let client = reqwest::Client::new();
        let url = format!("http://{}/readyz", self.http);
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                bail!(
                    "the worker exited during start-up ({status}); see {}",
                    self.log.display()
                );
            }
            if let Ok(r) = client.get(&url).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the worker was not ready within {within:?}; see {}",
                    self.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// CPU time (user + system) used so far, in seconds.
    pub fn cpu_seconds(&self) -> Option<f64> {
        proc_cpu_seconds(self.pid())
    }

    /// Resident set size now, in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        proc_status_kib(self.pid(), "VmRSS:")
    }

    /// Peak resident set size so far, in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        proc_status_kib(self.pid(), "VmHWM:")
    }

    /// SIGTERM (graceful: stop consuming, record what is in flight), then SIGKILL after
    /// `grace`.
    pub async fn stop(mut self, grace: Duration) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn free_port() -> std::io::Result<SocketAddr> {
    let l = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    l.local_addr()
}

/// Linux's USER_HZ: `/proc/<pid>/stat` counts CPU time in 1/100 s on every architecture the
/// kernel exposes to user space.
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;

/// utime + stime of every thread of `pid`, from `/proc/<pid>/stat`.
pub fn proc_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: split after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / CLOCK_TICKS_PER_SECOND)
}

/// The local PostgreSQL server (its postmaster) and RabbitMQ node, found by the ports they
/// listen on, so the CPU of other servers on the machine (another team's test cluster) is not
/// counted. `None` when not found (not local, or no permission to see their sockets).
#[derive(Debug, Clone, Copy, Default)]
pub struct Services {
    pub postmaster: Option<u32>,
    pub rabbitmq: Option<u32>,
}

/// The process listening on TCP `port` on this machine, from `/proc/net/tcp{,6}` and the
/// processes' socket file descriptors.
fn listening_pid(port: u16) -> Option<u32> {
    let port_hex = format!(":{port:04X}");
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address is field 1, state field 3 (0A = LISTEN), inode field 9.
            if f.get(1).is_some_and(|a| a.ends_with(&port_hex))
                && f.get(3) == Some(&"0A")
                && let Some(inode) = f.get(9)
            {
                inodes.push(format!("socket:[{inode}]"));
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path())
                && inodes.iter().any(|i| target.as_os_str() == i.as_str())
            {
                return Some(pid);
            }
        }
    }
    None
}

/// The parent pid of `pid`, from `/proc/<pid>/stat`.
fn parent_pid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// PostgreSQL's checkpoint activity so far: checkpoints started and buffers they wrote
/// (server-wide). A checkpoint's final fsync can hold commits for hundreds of
/// milliseconds on this kind of machine, so a phase that overlaps one shows it in its tail.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Checkpoints {
    pub started: i64,
    pub buffers_written: i64,
}

impl Checkpoints {
    /// Activity between `self` (earlier) and `later`.
    pub fn until(self, later: Checkpoints) -> Checkpoints {
        Checkpoints {
            started: later.started - self.started,
            buffers_written: later.buffers_written - self.buffers_written,
        }
    }
}

/// Reads [`Checkpoints`] (PostgreSQL 15/16 keep them in `pg_stat_bgwriter`, 17 and later in
/// `pg_stat_checkpointer`); zero when neither can be read.
pub async fn checkpoints(store: &Store) -> Checkpoints {
    for sql in [
        "select (checkpoints_timed + checkpoints_req)::bigint, buffers_checkpoint::bigint
         from pg_stat_bgwriter",
        "select (num_timed + num_requested)::bigint, buffers_written::bigint
         from pg_stat_checkpointer",
    ] {
        if let Ok((started, buffers_written)) = sqlx::query_as::<_, (i64, i64)>(sql)
            .fetch_one(store.pool())
            .await
        {
            return Checkpoints {
                started,
                buffers_written,
            };
        }
    }
    Checkpoints::default()
}

/// CPU seconds used so far by the services the pipeline runs on: the PostgreSQL server (the
/// postmaster and every process it started: the worker's backends, the WAL writer…), the
/// RabbitMQ node, and this process (the sandbox provider and the publisher). Backends that
/// already exited are not counted; the worker's pool keeps its connections.
pub fn service_cpu_seconds(services: &Services) -> ServiceCpu {
    let mut out = ServiceCpu {
        bench: proc_cpu_seconds(std::process::id()).unwrap_or(0.0),
        rabbitmq: services.rabbitmq.and_then(proc_cpu_seconds).unwrap_or(0.0),
        ..ServiceCpu::default()
    };
    let Some(postmaster) = services.postmaster else {
        return out;
    };
    out.postgres = proc_cpu_seconds(postmaster).unwrap_or(0.0);
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if parent_pid(pid) == Some(postmaster) {
            out.postgres += proc_cpu_seconds(pid).unwrap_or(0.0);
        }
    }
    out
}

/// CPU seconds by service (see [`service_cpu_seconds`]).
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct ServiceCpu {
    pub postgres: f64,
    pub rabbitmq: f64,
    pub bench: f64,
}

impl ServiceCpu {
    /// CPU milliseconds per item between `earlier` and `self`.
    pub fn per_item_ms(&self, earlier: &ServiceCpu, items: usize) -> ServiceCpu {
        let n = items.max(1) as f64;
        ServiceCpu {
            postgres: (self.postgres - earlier.postgres) * 1e3 / n,
            rabbitmq: (self.rabbitmq - earlier.rabbitmq) * 1e3 / n,
            bench: (self.bench - earlier.bench) * 1e3 / n,
        }
    }
}

/// A `kB` line of `/proc/<pid>/status`, e.g. `VmHWM:`.
pub fn proc_status_kib(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The machine the run happened on.
pub fn machine() -> super::report::Machine {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let meminfo = read("/proc/meminfo");
    let mem_kib = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let cpu_model = read("/proc/cpuinfo")
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    super::report::Machine {
        cores: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        cpu_model,
        memory_mib: mem_kib / 1024,
        load_average_at_start: load_average(),
        load_average_at_end: None,
        postgres_postmaster_pid: None,
        rabbitmq_pid: None,
        other_load_cores: None,
    }
}

/// CPU seconds the whole machine spent busy (all cores, all processes) since boot, from
/// `/proc/stat`.
pub fn machine_busy_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal …: busy = all but idle and iowait.
    let busy: u64 = v
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4 && *i < 8)
        .map(|(_, x)| *x)
        .sum();
    Some(busy as f64 / CLOCK_TICKS_PER_SECOND)
}

/// The 1-minute load average.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The benchmark's orders: `orders` orders of `shipments` one-unit lines; shipment `j` ships
/// line `j`, the last one makes the capture final.
pub struct Workload {
    pub prefix: String,
    pub orders: usize,
    pub shipments: usize,
}

impl Workload {
    pub fn order_id(&self, i: usize) -> String {
        format!("{}-{i}", self.prefix)
    }

    pub fn authorization_id(&self, i: usize) -> String {
        format!("pi_{}_{i}", self.prefix.replace('-', "_"))
    }

    fn unit_amount(j: usize) -> i64 {
        1_000 + (j as i64) * 7
    }

    /// What order `i` authorizes and, fully shipped, captures in total.
    pub fn order_total(&self) -> i64 {
        (1..=self.shipments).map(Self::unit_amount).sum()
    }

    pub fn authorized(&self, i: usize, now: DateTime<Utc>) -> Vec<u8> {
        let lines: Vec<serde_json::Value> = (1..=self.shipments)
            .map(|j| {
                json!({
                    "line_id": format!("L{j}"), "sku": format!("SKU-{j:04}"),
                    "name": format!("Benchmark item {j}"), "quantity": 1,
                    "unit_amount": Self::unit_amount(j), "tax_amount": 0, "discount_amount": 0
                })
            })
            .collect();
        let body = json!({
            "message_id": format!("{}-authorized", self.order_id(i)),
            "type": "order.authorized", "schema_version": 1, "occurred_at": now.to_rfc3339(),
            "data": {
                "order_id": self.order_id(i), "currency": "USD", "lines": lines,
                "shipping_amount": 0,
                "payment": {
                    "provider": "sandbox", "authorization_id": self.authorization_id(i),
                    "authorized_amount": self.order_total(), "authorized_at": now.to_rfc3339()
                }
            }
        });
        body.to_string().into_bytes()
    }

    /// Shipment `j` (1-based) of order `i`: about the size of a warehouse's message.
    pub fn shipment(&self, i: usize, j: usize, now: DateTime<Utc>) -> Vec<u8> {
        json!({
            "message_id": format!("{}-s{j}", self.order_id(i)),
            "type": "shipment.shipped", "schema_version": 1, "occurred_at": now.to_rfc3339(),
            "data": {
                "order_id": self.order_id(i), "shipment_id": format!("S{j}"),
                "shipped_at": now.to_rfc3339(),
                "items": [{"line_id": format!("L{j}"), "quantity": 1}],
                "carrier": "UPS", "tracking_number": "1Z999AA10123456784"
            }
        })
        .to_string()
        .into_bytes()
    }

    /// Every (order, shipment) in publishing order: shipment 1 of every order, then shipment
    /// 2…, so consecutive parcels of one order are far apart, as in a warehouse.
    pub fn shipment_order(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        (1..=self.shipments).flat_map(move |j| (0..self.orders).map(move |i| (i, j)))
    }
}

/// p50/p95/p99/max of a sample, in the sample's unit.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Percentiles {
    pub count: usize,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    pub fn of(mut values: Vec<f64>) -> Percentiles {
        if values.is_empty() {
            return Percentiles::default();
        }
        values.sort_by(|a, b| a.total_cmp(b));
        // Nearest rank.
        let at = |q: f64| {
            let rank = (q * values.len() as f64).ceil() as usize;
            values[rank.clamp(1, values.len()) - 1]
        };
        Percentiles {
            count: values.len(),
            p50: at(0.50),
            p95: at(0.95),
            p99: at(0.99),
            max: values[values.len() - 1],
        }
    }
}

/// Whether `path`'s parent exists (for a clear error before an hour of benchmarking).
pub fn check_writable(path: &Path) -> anyhow::Result<()> {
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(dir) = parent
        && !dir.is_dir()
    {
        bail!("the folder of --out {} does not exist", path.display());
    }
    Ok(())
}

/// `capture-worker` next to this binary, as cargo lays them out; built first when the
/// benchmark runs through cargo (`cargo run --bin bench` builds only the benchmark), so that
/// it measures the worker of the sources at hand.
pub fn worker_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating this binary")?;
    let dir = exe.parent().context("this binary has no directory")?;
    let bin = dir.join("capture-worker");
    if let Some(cargo) = std::env::var_os("CARGO") {
        let mut build = Command::new(cargo);
        build
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["build", "--quiet", "--bin", "capture-worker"])
            .stdin(Stdio::null());
        if dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        let status = build
            .status()
            .with_context(|| format!("building capture-worker: could not start {build:?}"))?;
        if !status.success() {
            bail!("building capture-worker failed ({status})");
        }
    }
    if !bin.exists() {
        bail!(
            "{} is missing: build it (cargo build --release --bin capture-worker) or pass \
             --worker-binary",
            bin.display()
        );
    }
    Ok(bin)
}

/// What PostgreSQL did in one database (`pg_stat_database`): commits, rows written and read,
/// buffers touched. Deterministic enough to compare on a busy machine, where CPU time is not.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct DbActivity {
    pub commits: f64,
    pub rows_inserted: f64,
    pub rows_updated: f64,
    pub rows_deleted: f64,
    pub rows_fetched: f64,
    pub buffers: f64,
}

impl DbActivity {
    /// Per item between `earlier` and `self`.
    pub fn per_item(&self, earlier: &DbActivity, items: usize) -> DbActivity {
        let n = items.max(1) as f64;
        DbActivity {
            commits: (self.commits - earlier.commits) / n,
            rows_inserted: (self.rows_inserted - earlier.rows_inserted) / n,
            rows_updated: (self.rows_updated - earlier.rows_updated) / n,
            rows_deleted: (self.rows_deleted - earlier.rows_deleted) / n,
            rows_fetched: (self.rows_fetched - earlier.rows_fetched) / n,
            buffers: (self.buffers - earlier.buffers) / n,
        }
    }
}

/// The database's activity so far. Backends report theirs about once a second after a
/// transaction, so at the end of a phase call [`settled_db_activity`].
pub async fn db_activity(pool: &sqlx::PgPool) -> DbActivity {
    let row: Result<(i64, i64, i64, i64, i64, i64), _> = sqlx::query_as(
        "select xact_commit, tup_inserted, tup_updated, tup_deleted, tup_fetched,
                blks_hit + blks_read
         from pg_stat_database where datname = current_database()",
    )
    .fetch_one(pool)
    .await;
    match row {
        Ok((c, i, u, d, f, b)) => DbActivity {
            commits: c as f64,
            rows_inserted: i as f64,
            rows_updated: u as f64,
            rows_deleted: d as f64,
            rows_fetched: f as f64,
            buffers: b as f64,
        },
        Err(_) => DbActivity::default(),
    }
}

/// The database's activity once the writes of a phase that just ended are all reported.
/// A backend reports its counts at most once a second while busy, and one that went idle
/// with counts pending reports them only 10 s later or when it exits: wait that long.
pub async fn settled_db_activity(pool: &sqlx::PgPool) -> DbActivity {
    tokio::time::sleep(Duration::from_millis(10_500)).await;
    db_activity(pool).await
}

/// The database's activity once every other connection to it closed (a closing backend
/// reports its counts): waits up to 10 s for them to go.
pub async fn db_activity_after_disconnect(pool: &sqlx::PgPool) -> DbActivity {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let others: i64 = sqlx::query_scalar(
            "select count(*) from pg_stat_activity
             where datname = current_database() and pid <> pg_backend_pid()",
        )
        .fetch_one(pool)
        .await
        .unwrap_or(0);
        if others == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    db_activity(pool).await
}
