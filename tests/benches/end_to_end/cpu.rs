//! CPU accounting: who uses the machine's cores during a measurement (this process, PostgreSQL,
//! RabbitMQ, everyone else), read from `/proc`.

use std::collections::HashMap;

/// CPU seconds used by this process, PostgreSQL, RabbitMQ and the whole machine between two
/// [`CpuSnapshot`]s.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Cpu {
    this: f64,
    postgres: f64,
    rabbitmq: f64,
    machine_busy: f64,
    machine_total: f64,
}

/// Linux reports CPU times in USER_HZ ticks, 100 per second on every usual build.
const TICKS: f64 = 100.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    This,
    Postgres,
    RabbitMq,
    Other,
}

/// Per-process CPU times, so that processes ending or starting in between (other people's tests
/// share these services) neither subtract nor add what they used before.
#[derive(Debug, Default)]
pub(crate) struct CpuSnapshot {
    processes: HashMap<u32, (Owner, f64)>,
    machine_busy: f64,
    machine_total: f64,
}

/// Whose a process is: PostgreSQL's shared processes and this benchmark's own backends count as
/// PostgreSQL; a backend of another database is someone else's.
fn owner(pid: u32, comm: &str) -> Owner {
    if pid == std::process::id() {
        return Owner::This;
    }
    if comm == "postgres" {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        let backend = cmdline.contains('(') || cmdline.contains("[local]");
        let ours = cmdline.contains(&format!("passerelle_bench_{}_", std::process::id()));
        return if ours || !backend {
            Owner::Postgres
        } else {
            Owner::Other
        };
    }
    if comm.starts_with("beam") || comm == "erl_child_setup" {
        return Owner::RabbitMq;
    }
    Owner::Other
}

impl CpuSnapshot {
    pub(crate) fn take() -> CpuSnapshot {
        let mut snap = CpuSnapshot::default();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // The command name may hold spaces: the fields start after its closing parenthesis.
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
                continue;
            };
            let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
            let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
            if let (Some(utime), Some(stime)) = (ticks(11), ticks(12)) {
                let owner = owner(pid, &stat[open + 1..close]);
                snap.processes.insert(pid, (owner, (utime + stime) / TICKS));
            }
        }
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        if let Some(line) = stat.lines().next() {
            let v: Vec<f64> = line
                .split_whitespace()
                .skip(1)
                .filter_map(|f| f.parse().ok())
                .collect();
            let total: f64 = v.iter().take(8).sum();
            let idle = v.get(3).copied().unwrap_or(0.0) + v.get(4).copied().unwrap_or(0.0);
            snap.machine_total = total / TICKS;
            snap.machine_busy = (total - idle) / TICKS;
        }
        snap
    }

    pub(crate) fn since(&self, before: &CpuSnapshot) -> Cpu {
        let mut cpu = Cpu {
            machine_busy: self.machine_busy - before.machine_busy,
            machine_total: self.machine_total - before.machine_total,
            ..Cpu::default()
        };
        for (pid, (owner, secs)) in &self.processes {
            let used = secs - before.processes.get(pid).map_or(0.0, |p| p.1);
            match owner {
                Owner::This => cpu.this += used,
                Owner::Postgres => cpu.postgres += used,
                Owner::RabbitMq => cpu.rabbitmq += used,
                Owner::Other => {}
            }
        }
        cpu
    }
}

impl Cpu {
    /// Cores used on average over `wall` seconds; `this` says what this process runs.
    pub(crate) fn describe(&self, wall: f64, this: &str) -> String {
        let cores = |s: f64| s / wall;
        format!(
            "this process ({this}) {:.2} cores, PostgreSQL {:.2}, RabbitMQ {:.2}, others {:.2}; \
             machine {:.0}% busy",
            cores(self.this),
            cores(self.postgres),
            cores(self.rabbitmq),
            cores((self.machine_busy - self.this - self.postgres - self.rabbitmq).max(0.0)),
            100.0 * self.machine_busy / self.machine_total.max(f64::EPSILON),
        )
    }

    /// CPU milliseconds per item (message or dossier), the services of the measurement only.
    pub(crate) fn per_item(&self, n: usize) -> String {
        let ms = |s: f64| 1000.0 * s / n as f64;
        format!(
            "{:.2} ms of CPU (PostgreSQL {:.2}, this process {:.2}, RabbitMQ {:.2})",
            ms(self.this + self.postgres + self.rabbitmq),
            ms(self.postgres),
            ms(self.this),
            ms(self.rabbitmq)
        )
    }
}
