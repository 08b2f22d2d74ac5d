//! Child processes of the stack: started with their output in a log file, killed when dropped.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// `kill(1)` is always called as `kill -s SIG -- TARGET`: procps' `kill -KILL -<pgid>` misreads a
/// negative target as options and can signal every process.
///
/// Kills (SIGKILL) every process whose command line mentions `marker`, with all its descendants.
/// Nomad's task executors detach from the agent and put each task in a process group of its own;
/// an executor's command line names the allocation's directory, so the stack's directory finds
/// exactly its own executors, and their descendants are its tasks.
pub fn kill_processes_mentioning(marker: &str) {
    let Ok(entries) = std::fs::read_dir("/proc") else { return };
    let mut parent = Vec::new();
    let mut roots = Vec::new();
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        // Field 4 of /proc/<pid>/stat is the parent, after the parenthesised command.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            parent.push((pid, ppid));
        }
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(marker) {
            roots.push(pid);
        }
    }
    let mut doomed = roots.clone();
    let mut i = 0;
    while i < doomed.len() {
        let p = doomed[i];
        doomed.extend(parent.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    // Children first, so none is re-parented before it is found.
    for pid in doomed.iter().rev() {
        if std::env::var_os("VK_CLEANUP_DRY_RUN").is_some() {
            eprintln!("cleanup would kill pid {pid}");
            continue;
        }
        let _ = Command::new("kill").args(["-s", "KILL", "--"]).arg(pid.to_string()).status();
    }
}

/// Unmounts (lazily) every mount below `dir`, deepest first: a root Nomad agent mounts tmpfs
/// secrets directories into allocations and leaves them when killed.
pub fn unmount_below(dir: &Path) {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let prefix = dir.to_string_lossy().to_string();
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|m| m.starts_with(&prefix))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for m in points {
        let _ = Command::new("umount").arg("-l").arg(m).status();
    }
}

use anyhow::Context as _;

/// A running peer.
pub struct Process {
    /// Short name (`etcd`, `kube-apiserver`, ...).
    pub name: String,
    /// Where its stdout and stderr go.
    pub log: PathBuf,
    child: Child,
    group: bool,
}

impl Process {
    /// Starts `cmd` with stdout and stderr appended to `log`.
    ///
    /// # Errors
    /// The log file or the spawn failing.
    pub fn spawn(name: &str, cmd: Command, log: &Path) -> anyhow::Result<Self> {
        Self::spawn_with(name, cmd, log, false)
    }

    /// As [`Process::spawn`], in a process group of its own that [`Process::kill`] kills whole
    /// (for agents whose helpers outlive them, like Nomad's logmon).
    ///
    /// # Errors
    /// As [`Process::spawn`].
    pub fn spawn_group(name: &str, mut cmd: Command, log: &Path) -> anyhow::Result<Self> {
        use std::os::unix::process::CommandExt as _;
        cmd.process_group(0);
        Self::spawn_with(name, cmd, log, true)
    }

    fn spawn_with(name: &str, mut cmd: Command, log: &Path, group: bool) -> anyhow::Result<Self> {
        let file = File::options()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let err = file.try_clone()?;
        cmd.stdin(Stdio::null()).stdout(Stdio::from(file)).stderr(Stdio::from(err));
        let child = cmd.spawn().with_context(|| format!("starting {name} ({cmd:?})"))?;
        Ok(Self { name: name.to_owned(), log: log.to_owned(), child, group })
    }

    /// The process ID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `Some(status)` once it exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) {
        if self.group && self.exited().is_none() {
            let _ = Command::new("kill")
                .args(["-s", "KILL", "--"])
                .arg(format!("-{}", self.pid()))
                .status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGKILL to this process alone (not its group), and reap.
    pub fn kill_leader(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM (through `kill(1)`, this crate forbids unsafe code), then wait up to `grace` for
    /// the exit; returns the exit status, or `None` if it had to be killed.
    pub fn terminate(&mut self, grace: std::time::Duration) -> Option<std::process::ExitStatus> {
        let _ =
            Command::new("kill").args(["-s", "TERM", "--"]).arg(self.pid().to_string()).status();
        let deadline = std::time::Instant::now() + grace;
        while std::time::Instant::now() < deadline {
            if let Some(s) = self.exited() {
                return Some(s);
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        self.kill();
        None
    }

    /// The last `n` lines of the log.
    pub fn tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last `n` lines of each of `logs` (each line cut at 400 characters), headed by its path.
#[must_use]
pub fn log_tails<'a>(logs: impl IntoIterator<Item = &'a PathBuf>, n: usize) -> String {
    let mut out = String::new();
    for log in logs {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        out.push_str(&format!("--- the last lines of {}:\n", log.display()));
        for l in &lines[lines.len().saturating_sub(n)..] {
            let cut = l.char_indices().nth(400).map_or(l.len(), |(i, _)| i);
            out.push_str(&l[..cut]);
            out.push('\n');
        }
    }
    out
}
