//! Worker processes: the real `capture-worker run` binary as children, started, killed with
//! SIGKILL, restarted, and stopped with SIGTERM at the end. Each slot appends to its own log.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::infra::{free_port, signal};

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub bin: PathBuf,
    pub config_dir: PathBuf,
    pub log_dir: PathBuf,
    /// `CAPTURE__…` settings.
    pub env: Vec<(String, String)>,
}

struct Slot {
    child: Child,
    http_port: u16,
}

/// A fixed number of worker slots.
pub struct Fleet {
    cfg: WorkerConfig,
    slots: Vec<Option<Slot>>,
    pub kills: u32,
    pub starts: u32,
    /// Workers that exited without being told to.
    pub unexpected_exits: Vec<String>,
    http: reqwest::Client,
    /// Each slot's HTTP port, kept across restarts (see `pin_ports`); empty: a new port at
    /// every start.
    pinned: Vec<u16>,
}

impl Fleet {
    pub fn new(cfg: WorkerConfig, size: usize) -> Fleet {
        Fleet {
            cfg,
            slots: (0..size).map(|_| None).collect(),
            kills: 0,
            starts: 0,
            unexpected_exits: Vec::new(),
            http: reqwest::Client::new(),
            pinned: Vec::new(),
        }
    }

    /// Gives each slot one HTTP port for all its starts, so a provider's notifications reach
    /// the slot's worker again after a restart.
    pub fn pin_ports(&mut self) -> anyhow::Result<()> {
        self.pinned = (0..self.slots.len())
            .map(|_| free_port())
            .collect::<anyhow::Result<_>>()?;
        Ok(())
    }

    /// The HTTP port slot `i` listens on (or will, when pinned and down).
    pub fn http_port(&self, i: usize) -> Option<u16> {
        match self.slots.get(i) {
            Some(Some(s)) => Some(s.http_port),
            _ => self.pinned.get(i).copied(),
        }
    }

    pub fn log_files(&self) -> Vec<PathBuf> {
        (0..self.slots.len())
            .map(|i| self.cfg.log_dir.join(format!("worker-{i}.log")))
            .collect()
    }

    pub fn start(&mut self, i: usize) -> anyhow::Result<()> {
        let port = match self.pinned.get(i) {
            Some(p) => *p,
            None => free_port()?,
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.cfg.log_dir.join(format!("worker-{i}.log")))
            .context("opening the worker log")?;
        let err = log.try_clone()?;
        let mut c = Command::new(&self.cfg.bin);
        c.arg("run")
            .env("CAPTURE_CONFIG_DIR", &self.cfg.config_dir)
            .env("CAPTURE__HTTP__LISTEN", format!("127.0.0.1:{port}"))
            .envs(self.cfg.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err));
        let child = c
            .spawn()
            .with_context(|| format!("starting {}", self.cfg.bin.display()))?;
        if let Some(slot) = self.slots.get_mut(i) {
            *slot = Some(Slot {
                child,
                http_port: port,
            });
        }
        self.starts += 1;
        Ok(())
    }

    pub fn start_all(&mut self) -> anyhow::Result<()> {
        for i in 0..self.slots.len() {
            self.start(i)?;
        }
        Ok(())
    }

    /// Waits until the worker in slot `i` reports that it consumes and reaches its database.
    pub async fn wait_ready(&mut self, i: usize, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            self.reap();
            let Some(Some(slot)) = self.slots.get(i) else {
                anyhow::bail!("worker {i} is not running");
            };
            let url = format!("http://127.0.0.1:{}/readyz", slot.http_port);
            let ok = self
                .http
                .get(&url)
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .map(|r| r.status().is_success())
                .unwrap_or(false);
            if ok {
                return Ok(());
            }
            if Instant::now() > deadline {
                anyhow::bail!("worker {i} was not ready within {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn wait_all_ready(&mut self, within: Duration) -> anyhow::Result<()> {
        for i in 0..self.slots.len() {
            self.wait_ready(i, within).await?;
        }
        Ok(())
    }

    /// SIGKILL: no shutdown, no flush, nothing recorded after this instant.
    pub async fn kill(&mut self, i: usize) -> anyhow::Result<()> {
        if let Some(slot) = self.slots.get_mut(i)
            && let Some(mut s) = slot.take()
        {
            s.child.kill().context("SIGKILL of a worker")?;
            let _ = wait_exit(&mut s.child, Duration::from_secs(10)).await;
            self.kills += 1;
        }
        Ok(())
    }

    pub fn running(&self) -> Vec<usize> {
        (0..self.slots.len())
            .filter(|i| matches!(self.slots.get(*i), Some(Some(_))))
            .collect()
    }

    /// Notes workers that exited on their own and frees their slots.
    pub fn reap(&mut self) -> Vec<usize> {
        let mut gone = Vec::new();
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if let Some(s) = slot
                && let Ok(Some(status)) = s.child.try_wait()
            {
                self.unexpected_exits
                    .push(format!("worker {i} exited by itself: {status}"));
                *slot = None;
                gone.push(i);
            }
        }
        gone
    }

    /// Restarts every slot that is empty (after a kill or an exit).
    pub fn fill(&mut self) -> anyhow::Result<()> {
        for i in 0..self.slots.len() {
            if matches!(self.slots.get(i), Some(None)) {
                self.start(i)?;
            }
        }
        Ok(())
    }

    /// SIGTERM to every worker, then waits for a clean exit (SIGKILL after `within`).
    pub async fn stop_all(&mut self, within: Duration) -> Vec<String> {
        let mut problems = Vec::new();
        for s in self.slots.iter().flatten() {
            let _ = signal(s.child.id(), "TERM");
        }
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if let Some(mut s) = slot.take() {
                match wait_exit(&mut s.child, within).await {
                    Some(status) if status.success() => {}
                    Some(status) => {
                        problems.push(format!("worker {i} exited with {status} after SIGTERM"))
                    }
                    None => {
                        problems.push(format!(
                            "worker {i} did not stop within {within:?} of SIGTERM"
                        ));
                        let _ = s.child.kill();
                        let _ = wait_exit(&mut s.child, Duration::from_secs(10)).await;
                    }
                }
            }
        }
        problems
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for s in self.slots.iter_mut().flatten() {
            let _ = s.child.kill();
            let _ = s.child.wait();
        }
    }
}

/// Polls for the child's exit without blocking the runtime.
async fn wait_exit(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
