//! The stack's Nomad agents: the main one (`-dev`, or a server and client keeping its state on
//! disk so that it can be stopped and resumed), extra clients in other node pools, their
//! configuration (the docker plugin, CNI), and the jobs a test's nodes leave behind.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, ensure};

use crate::docker::PAUSE;
use crate::{Process, Stack, free_port, wait_for};

/// Fingerprinters that probe cloud metadata endpoints: slow or failing off-cloud.
const DENIED_FINGERPRINTERS: &str = "env_aws,env_gce,env_azure,env_digitalocean";

/// The Nomad client's docker plugin and CNI settings in every agent here: the infra image is the
/// local pause image (nothing is pulled), images are never garbage-collected (Nomad could not pull
/// them back: no registry is reachable), the capabilities Docker grants by default plus
/// `net_admin` and `sys_time` for the capability tests, and Debian's CNI plugins for bridge mode.
fn docker_plugin() -> String {
    format!(
        "plugin \"docker\" {{\n  config {{\n    infra_image = \"{PAUSE}\"\n    gc {{\n      image = false\n    }}\n\
    allow_caps = [\"audit_write\", \"chown\", \"dac_override\", \"fowner\", \"fsetid\", \"kill\", \"mknod\", \"net_bind_service\", \"setfcap\", \"setgid\", \"setpcap\", \"setuid\", \"sys_chroot\", \"net_raw\", \"net_admin\", \"sys_time\"]\n  }}\n}}\n"
    )
}

/// Where Debian's containernetworking-plugins puts the CNI plugins.
const CNI_PATH: &str = "/usr/lib/cni";

/// The first line of every Nomad agent's configuration here: no look-up of
/// `checkpoint-api.hashicorp.com` at start (a DNS query leaving the machine; the tests send
/// nothing beyond 127.0.0.1 and what they made).
pub const NO_UPDATE_CHECK: &str = "disable_update_check = true\n";

#[derive(Debug, Clone)]
pub(crate) struct NomadAgent {
    name: String,
    cfg: PathBuf,
    data: PathBuf,
    idx: usize,
}

impl Stack {
    pub(crate) fn start_nomad(&mut self, server: bool) -> anyhow::Result<()> {
        let (http, rpc, serf) = (free_port()?, free_port()?, free_port()?);
        self.nomad_addr = format!("http://127.0.0.1:{http}");
        self.nomad_rpc = rpc;
        // Under cgroup v2 a root Nomad agent may fail to create its cgroup (nomad#23476); as an
        // unprivileged user cgroups are simply off, which raw_exec does not need.
        // `VK_NOMAD_AS_NOBODY=1` forces this path (to try it on a cgroup v1 machine).
        self.nomad_as_nobody = std::env::var_os("VK_NOMAD_AS_NOBODY").is_some()
            || (running_as_root() && Path::new("/sys/fs/cgroup/cgroup.controllers").exists());
        let mode = if server {
            "bind_addr = \"127.0.0.1\"\n\
advertise {\n  http = \"127.0.0.1\"\n  rpc = \"127.0.0.1\"\n  serf = \"127.0.0.1\"\n}\n\
server {\n  enabled = true\n  bootstrap_expect = 1\n  heartbeat_grace = \"3s\"\n  min_heartbeat_ttl = \"3s\"\n}\n\
plugin \"raw_exec\" {\n  config {\n    enabled = true\n  }\n}\n"
        } else {
            ""
        };
        let client = if server { "  enabled = true\n" } else { "" };
        let acl = if self.nomad_acl_on { crate::nomad_acl::ACL_CONFIG } else { "" };
        let cfg = format!(
            "{NO_UPDATE_CHECK}{acl}ports {{\n  http = {http}\n  rpc = {rpc}\n  serf = {serf}\n}}\n{mode}\
client {{\n{client}  cni_path = \"{CNI_PATH}\"\n  options = {{\n    \"fingerprint.denylist\" = \"{DENIED_FINGERPRINTERS}\"\n  }}\n}}\n{docker}",
            docker = docker_plugin(),
        );
        let agent = self.nomad_agent("nomad", &cfg)?;
        let mut cmd = self.nomad_command(&agent);
        if !server {
            cmd.args(["-dev", "-bind=127.0.0.1"]);
        }
        self.procs.push(Process::spawn_group("nomad", cmd, &self.log("nomad"))?);
        self.nomad = Some(agent);
        Ok(())
    }

    /// Writes agent `name`'s configuration and makes its data directory (`<name>/data`: Nomad puts
    /// `alloc_mounts` beside its data directory, so both stay in `<name>/`).
    pub(crate) fn nomad_agent(&mut self, name: &str, cfg: &str) -> anyhow::Result<NomadAgent> {
        let home = self.dir.join(name);
        let data = home.join("data");
        std::fs::create_dir_all(&data)?;
        self.nomad_data.push(data.clone());
        let cfg_path = self.dir.join(format!("{name}.hcl"));
        std::fs::write(&cfg_path, cfg)?;
        if self.nomad_as_nobody {
            // nobody cannot reach the peers cache under /root: it runs a link (or copy) of the
            // binary from the stack's own directory, which nobody may read.
            let nomad = self.dir.join("nomad-bin");
            if !nomad.exists() && std::fs::hard_link(&self.peers.nomad, &nomad).is_err() {
                std::fs::copy(&self.peers.nomad, &nomad).context("copying the nomad binary")?;
            }
            for (args, path) in [
                (&["-R", "nobody:nogroup"][..], &home),
                (&["a+rx"][..], &self.dir),
                (&["a+rx"][..], &nomad),
            ] {
                let cmd = if args.len() == 2 { "chown" } else { "chmod" };
                let ok = Command::new(cmd).args(args).arg(path).status()?.success();
                anyhow::ensure!(ok, "{cmd} {args:?} {} failed", path.display());
            }
        }
        Ok(NomadAgent { name: name.to_owned(), cfg: cfg_path, data, idx: self.procs.len() })
    }

    pub(crate) fn nomad_command(&self, agent: &NomadAgent) -> Command {
        let mut cmd = if self.nomad_as_nobody {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
                .arg(self.dir.join("nomad-bin"));
            c
        } else {
            Command::new(&self.peers.nomad)
        };
        cmd.args(["agent", "-log-level=INFO"])
            .arg(format!("-config={}", agent.cfg.display()))
            .arg(format!("-data-dir={}", agent.data.display()))
            // A CA bundle in the environment makes Nomad's AWS fingerprinter refuse to start.
            .env_remove("AWS_CA_BUNDLE")
            .env_remove("NOMAD_ADDR")
            .env_remove("NOMAD_TOKEN");
        cmd
    }

    /// Stops the main Nomad agent (SIGTERM, as an operator's `systemctl stop` does). Its task
    /// executors, and so the tasks, keep running, as they do on a real client.
    ///
    /// # Errors
    /// The stack runs Nomad in `-dev` mode (its state would be lost), or has no Nomad.
    pub fn stop_nomad(&mut self) -> anyhow::Result<()> {
        let agent = self.nomad.clone().context("no Nomad agent")?;
        ensure!(self.nomad_rpc != 0, "no Nomad agent");
        let proc = self.procs.get_mut(agent.idx).context("no Nomad process")?;
        tokio::task::block_in_place(|| proc.terminate(Duration::from_secs(30)));
        Ok(())
    }

    /// Starts the main Nomad agent again with the same configuration and data directory, and
    /// waits until its node is ready again.
    ///
    /// # Errors
    /// Nomad failing to start or become ready within 120 s.
    pub async fn resume_nomad(&mut self) -> anyhow::Result<()> {
        let agent = self.nomad.clone().context("no Nomad agent")?;
        let log = self.log("nomad-resumed");
        self.procs[agent.idx] =
            Process::spawn_group(&agent.name, self.nomad_command(&agent), &log)?;
        self.wait_nomad(false).await
    }

    /// Starts an extra Nomad client agent named `name` in node pool `pool`, joined to the main
    /// agent (which must run with
    /// [`StackOptions::nomad_server`](crate::StackOptions::nomad_server)); returns its handle
    /// for [`Stack::kill`]. Waits until the server lists it as ready.
    ///
    /// # Errors
    /// No server-mode agent; the client failing to start or register within 60 s.
    pub async fn start_nomad_client(&mut self, name: &str, pool: &str) -> anyhow::Result<usize> {
        Ok(self.spawn_nomad_client(name, pool, "dc1").await?.0)
    }

    /// [`Stack::start_nomad_client`] in datacenter `datacenter` (the main agent's is `dc1`).
    ///
    /// # Errors
    /// As [`Stack::start_nomad_client`].
    pub async fn start_nomad_client_in(
        &mut self,
        name: &str,
        pool: &str,
        datacenter: &str,
    ) -> anyhow::Result<usize> {
        Ok(self.spawn_nomad_client(name, pool, datacenter).await?.0)
    }

    /// [`Stack::start_nomad_client_in`], returning the client's HTTP address too.
    pub(crate) async fn spawn_nomad_client(
        &mut self,
        name: &str,
        pool: &str,
        datacenter: &str,
    ) -> anyhow::Result<(usize, String)> {
        let main = self.nomad.clone().context("no Nomad agent")?;
        let main_cfg = std::fs::read_to_string(&main.cfg)?;
        ensure!(main_cfg.contains("server {"), "extra clients need a server-mode Nomad");
        let (http, rpc, serf) = (free_port()?, free_port()?, free_port()?);
        let address = format!("http://127.0.0.1:{http}");
        let acl = if self.nomad_acl_on { crate::nomad_acl::ACL_CONFIG } else { "" };
        let cfg = format!(
            "{NO_UPDATE_CHECK}{acl}name = \"{name}\"\ndatacenter = \"{datacenter}\"\nbind_addr = \"127.0.0.1\"\n\
ports {{\n  http = {http}\n  rpc = {rpc}\n  serf = {serf}\n}}\n\
advertise {{\n  http = \"127.0.0.1\"\n  rpc = \"127.0.0.1\"\n  serf = \"127.0.0.1\"\n}}\n\
client {{\n  enabled = true\n  node_pool = \"{pool}\"\n  servers = [{server}]\n\
  cni_path = \"{CNI_PATH}\"\n  options = {{\n    \"fingerprint.denylist\" = \"{DENIED_FINGERPRINTERS}\"\n  }}\n}}\n\
plugin \"raw_exec\" {{\n  config {{\n    enabled = true\n  }}\n}}\n{docker}",
            server = self.server_rpcs(),
            docker = docker_plugin(),
        );
        let agent = self.nomad_agent(name, &cfg)?;
        let idx = agent.idx;
        let cmd = self.nomad_command(&agent);
        self.procs.push(Process::spawn_group(name, cmd, &self.log(name))?);
        let url = format!("{}/v1/nodes", self.nomad_addr);
        let http = self.nomad_http();
        wait_for(
            &format!("Nomad client {name} ready"),
            Duration::from_secs(60),
            Duration::from_millis(500),
            || async {
                let nodes: serde_json::Value = http.get(&url).send().await?.json().await?;
                let ok = nodes
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|n| n["Name"] == name && n["Status"] == "ready");
                Ok(ok.then_some(()))
            },
        )
        .await
        .with_context(|| format!("Nomad client log: {}", self.log(name).display()))?;
        Ok((idx, address))
    }

    /// SIGKILLs the agent process `idx` (from [`Stack::start_nomad_client`]) alone: its tasks keep
    /// running, as on a machine cut off from the servers.
    pub fn kill(&mut self, idx: usize) {
        if let Some(p) = self.procs.get_mut(idx) {
            p.kill_leader();
        }
    }

    pub(crate) async fn wait_nomad(&mut self, docker: bool) -> anyhow::Result<()> {
        let url = format!("{}/v1/nodes", self.nomad_addr);
        if self.nomad_acl_on {
            // Nodes are not listed without a token: the leader answers first, then the
            // bootstrap makes the tokens (once: a resumed Nomad keeps them).
            let leader = format!("{}/v1/status/leader", self.nomad_addr);
            self.ready("nomad", &leader, Duration::from_secs(60)).await?;
            if self.nomad_acl.is_none() {
                self.bootstrap_acl().await.context("bootstrapping Nomad's ACLs")?;
            }
        } else {
            self.ready("nomad", &url, Duration::from_secs(60)).await?;
        }
        let http = self.nomad_http();
        // The agent was told not to look up checkpoint-api.hashicorp.com.
        let agent: serde_json::Value =
            http.get(format!("{}/v1/agent/self", self.nomad_addr)).send().await?.json().await?;
        ensure!(
            agent["config"]["DisableUpdateCheck"] == serde_json::Value::Bool(true),
            "the Nomad agent checks for updates: {}",
            agent["config"]["DisableUpdateCheck"]
        );
        let drivers: &[&str] = if docker { &["raw_exec", "docker"] } else { &["raw_exec"] };
        wait_for(
            &format!("a ready Nomad node with {}", drivers.join(" and ")),
            Duration::from_secs(60),
            Duration::from_millis(500),
            || async {
                let nodes: serde_json::Value = http.get(&url).send().await?.json().await?;
                let ok = nodes.as_array().into_iter().flatten().any(|n| {
                    n["Status"] == "ready"
                        && drivers
                            .iter()
                            .all(|d| n["Drivers"][d]["Healthy"] == serde_json::Value::Bool(true))
                });
                Ok(ok.then_some(()))
            },
        )
        .await
        .with_context(|| format!("Nomad log: {}", self.log("nomad").display()))
    }

    /// Stops and purges, in every Nomad namespace, the jobs whose pods were bound to `nodes`
    /// (`Meta.k8s_node_name`): a test's pods outlive its virtual kubelets, and some of them spin
    /// (the HPA's load) and would take the CPU the next tests measure with. Returns how many.
    ///
    /// # Errors
    /// Nomad not answering the listing; a failed stop is skipped.
    pub async fn stop_jobs_of(&self, nodes: &[String]) -> anyhow::Result<usize> {
        let http = self.nomad_http();
        let jobs: Vec<serde_json::Value> = http
            .get(format!("{}/v1/jobs?meta=true&namespace=*", self.nomad_addr))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let mut stopped = 0;
        for j in jobs {
            let owned =
                j["Meta"]["k8s_node_name"].as_str().is_some_and(|n| nodes.iter().any(|m| m == n));
            let (Some(id), Some(ns)) = (j["ID"].as_str(), j["Namespace"].as_str()) else {
                continue;
            };
            if !owned {
                continue;
            }
            let r = http
                .delete(format!("{}/v1/job/{id}", self.nomad_addr))
                .query(&[("purge", "true"), ("namespace", ns)])
                .send()
                .await;
            if r.is_ok_and(|r| r.status().is_success()) {
                stopped += 1;
            }
        }
        Ok(stopped)
    }
}

fn running_as_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}
