//! Private PostgreSQL and RabbitMQ instances on free loopback ports (reliability.md H1, H2),
//! so the harness can crash, restart and freeze them without touching anyone else's services.
//! Everything started here is stopped by `Drop`, also when the run fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// A free TCP port on 127.0.0.1 (free when asked; good enough for private test servers).
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

/// Runs a command to completion, failing with its stderr when it fails.
pub fn run(cmd: &mut Command, what: &str) -> anyhow::Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("{what}: could not start {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Sends a signal (`KILL`, `STOP`, `CONT`, `TERM`) to a process.
pub fn signal(pid: u32, sig: &str) -> anyhow::Result<()> {
    run(
        Command::new("kill").arg("-s").arg(sig).arg(pid.to_string()),
        &format!("kill -{sig} {pid}"),
    )
    .map(|_| ())
}

/// Direct children of `pid`, read from /proc.
pub fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // pid (comm) state ppid …; comm may contain spaces, so read after the last ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(child);
        }
    }
    out
}

fn chown(path: &Path, user: &str) -> anyhow::Result<()> {
    run(Command::new("chown").arg("-R").arg(user).arg(path), "chown").map(|_| ())
}

/// A private PostgreSQL 15 cluster (initdb + pg_ctl as the `postgres` user when run as root).
pub struct PrivatePostgres {
    dir: PathBuf,
    bin: PathBuf,
    pub port: u16,
    pub password: String,
    as_postgres: bool,
    running: bool,
}

impl PrivatePostgres {
    pub fn start(base: &Path, password: &str) -> anyhow::Result<PrivatePostgres> {
        let bin = PathBuf::from(
            run(
                Command::new("pg_config").arg("--bindir"),
                "pg_config --bindir",
            )?
            .trim(),
        );
        let dir = base.join("pg");
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("pw"), format!("{password}\n"))?;
        let as_postgres = run(Command::new("id").arg("-u"), "id -u")?.trim() == "0";
        if as_postgres {
            chown(&dir, "postgres")?;
        }
        let mut pg = PrivatePostgres {
            dir,
            bin,
            port: free_port()?,
            password: password.to_owned(),
            as_postgres,
            running: false,
        };
        let data = pg.dir.join("data");
        let pwfile = pg.dir.join("pw");
        let mut initdb = pg.command("initdb");
        initdb
            .arg("-D")
            .arg(&data)
            .arg("-A")
            .arg("scram-sha-256")
            .arg("-U")
            .arg("postgres")
            .arg(format!("--pwfile={}", pwfile.display()))
            .arg("--no-sync");
        run(&mut initdb, "initdb")?;
        pg.pg_ctl_start()?;
        Ok(pg)
    }

    fn command(&self, tool: &str) -> Command {
        let exe = self.bin.join(tool);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.arg("-u").arg("postgres").arg("--").arg(exe);
            c
        } else {
            Command::new(exe)
        }
    }

    fn pg_ctl_start(&mut self) -> anyhow::Result<()> {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=off -c full_page_writes=off -c shared_buffers=64MB",
            self.port,
            self.dir.display()
        );
        let mut c = self.command("pg_ctl");
        c.arg("-D")
            .arg(self.dir.join("data"))
            .arg("-l")
            .arg(self.dir.join("log"))
            .arg("-o")
            .arg(opts)
            .arg("-t")
            .arg("60")
            .arg("-w")
            .arg("start");
        run(&mut c, "pg_ctl start")?;
        self.running = true;
        Ok(())
    }

    /// A crash: `pg_ctl -m immediate stop` (no checkpoint; recovery at the next start).
    pub fn crash(&mut self) -> anyhow::Result<()> {
        let mut c = self.command("pg_ctl");
        c.arg("-D")
            .arg(self.dir.join("data"))
            .arg("-m")
            .arg("immediate")
            .arg("-w")
            .arg("stop");
        run(&mut c, "pg_ctl stop -m immediate")?;
        self.running = false;
        Ok(())
    }

    pub fn start_again(&mut self) -> anyhow::Result<()> {
        self.pg_ctl_start()
    }

    /// The postmaster and every backend: what a silent hang freezes.
    pub fn processes(&self) -> anyhow::Result<Vec<u32>> {
        let text = std::fs::read_to_string(self.dir.join("data/postmaster.pid"))
            .context("reading postmaster.pid")?;
        let pm: u32 = text
            .lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .context("postmaster.pid has no pid")?;
        let mut all = vec![pm];
        all.extend(children(pm));
        Ok(all)
    }

    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://postgres:{}@127.0.0.1:{}/{database}",
            self.password, self.port
        )
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        if let Ok(pids) = self.processes() {
            // Never leave it frozen.
            for pid in pids {
                let _ = signal(pid, "CONT");
            }
        }
        if self.running {
            let mut c = self.command("pg_ctl");
            c.arg("-D")
                .arg(self.dir.join("data"))
                .arg("-m")
                .arg("immediate")
                .arg("-w")
                .arg("stop")
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let _ = c.status();
        }
    }
}

/// A private RabbitMQ node with a unique node name on free ports.
pub struct PrivateRabbit {
    dir: PathBuf,
    pub node: String,
    pub port: u16,
    dist_port: u16,
    child: Option<std::process::Child>,
}

impl PrivateRabbit {
    pub fn start(base: &Path, unique: &str) -> anyhow::Result<PrivateRabbit> {
        let dir = base.join("rabbit");
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("enabled_plugins"), "[].\n")?;
        std::fs::write(
            dir.join("rabbitmq.conf"),
            "loopback_users.guest = true\nconsumer_timeout = 600000\nlog.file.level = warning\n",
        )?;
        // The server drops to the `rabbitmq` user: it must be able to write here.
        run(
            Command::new("chmod").arg("-R").arg("a+rwX").arg(&dir),
            "chmod",
        )?;
        let mut r = PrivateRabbit {
            dir,
            node: format!("faults-{unique}@localhost"),
            port: free_port()?,
            dist_port: free_port()?,
            child: None,
        };
        r.launch()?;
        Ok(r)
    }

    fn env(&self, c: &mut Command) {
        c.env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", self.dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", self.dir.join("log"))
            .env(
                "RABBITMQ_ENABLED_PLUGINS_FILE",
                self.dir.join("enabled_plugins"),
            )
            .env("RABBITMQ_CONFIG_FILE", self.dir.join("rabbitmq"))
            .env("RABBITMQ_PID_FILE", self.dir.join("rmq.pid"));
    }

    fn launch(&mut self) -> anyhow::Result<()> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("server.out"))?;
        let err = out.try_clone()?;
        let mut c = Command::new("rabbitmq-server");
        self.env(&mut c);
        let child = c
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .context("starting rabbitmq-server")?;
        self.child = Some(child);
        self.await_startup(Duration::from_secs(90))
    }

    fn await_startup(&mut self, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            if self.ctl(&["await_startup", "--timeout", "5"]).is_ok() {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                bail!(
                    "rabbitmq-server exited ({status}) before it started; see {}",
                    self.dir.join("server.out").display()
                );
            }
            if Instant::now() > deadline {
                bail!("the private RabbitMQ node did not start within {within:?}");
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// `rabbitmqctl -n <node> …`
    pub fn ctl(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut c = Command::new("rabbitmqctl");
        c.arg("-n").arg(&self.node).args(args);
        run(&mut c, &format!("rabbitmqctl {}", args.join(" ")))
    }

    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// The Erlang VM's pid.
    pub fn beam_pid(&self) -> anyhow::Result<u32> {
        std::fs::read_to_string(self.dir.join("rmq.pid"))
            .context("reading the RabbitMQ pid file")?
            .trim()
            .parse()
            .context("the RabbitMQ pid file holds no pid")
    }

    /// (ready, unacknowledged) per queue name.
    pub fn queue_depths(&self) -> anyhow::Result<Vec<(String, u64, u64)>> {
        let out = self.ctl(&[
            "list_queues",
            "-q",
            "--no-table-headers",
            "name",
            "messages_ready",
            "messages_unacknowledged",
        ])?;
        Ok(out
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                let name = f.next()?.to_owned();
                let ready = f.next()?.parse().ok()?;
                let unacked = f.next()?.parse().ok()?;
                Some((name, ready, unacked))
            })
            .collect())
    }

    pub fn close_all_connections(&self) -> anyhow::Result<()> {
        self.ctl(&["close_all_connections", "fault harness"])
            .map(|_| ())
    }

    /// A crash: SIGKILL the VM.
    pub fn crash(&mut self) -> anyhow::Result<()> {
        let pid = self.beam_pid()?;
        signal(pid, "KILL")?;
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Wait until the port is free again.
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            if Instant::now() > deadline {
                bail!("RabbitMQ still listens after SIGKILL");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// A graceful stop of the whole node.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        self.ctl(&["stop"])?;
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
        Ok(())
    }

    pub fn start_again(&mut self) -> anyhow::Result<()> {
        self.launch()
    }
}

impl Drop for PrivateRabbit {
    fn drop(&mut self) {
        if let Ok(pid) = self.beam_pid() {
            let _ = signal(pid, "CONT");
        }
        if self.child.is_some() {
            let mut c = Command::new("rabbitmqctl");
            c.arg("-n")
                .arg(&self.node)
                .arg("stop")
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let stopped = c.status().map(|s| s.success()).unwrap_or(false);
            if !stopped && let Ok(pid) = self.beam_pid() {
                let _ = signal(pid, "KILL");
            }
            if let Some(mut child) = self.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
