//! A Nomad cluster on the stack ([`StackOptions::nomad_cluster`](crate::StackOptions)): three
//! servers electing a leader by raft, two clients, and the leader killed.

use std::time::Duration;

use anyhow::{Context as _, ensure};

use crate::nomad::NO_UPDATE_CHECK;
use crate::{Process, Stack, free_port, wait_for};

/// One server of the cluster.
#[derive(Debug, Clone)]
pub(crate) struct Server {
    /// `http://127.0.0.1:<port>`.
    pub(crate) http: String,
    /// Its RPC port (`127.0.0.1:<rpc>` is how `/v1/status/leader` names the leader).
    pub(crate) rpc: u16,
    /// Its process.
    pub(crate) pid: u32,
}

impl Stack {
    /// The `--nomad-addr` every virtual kubelet gets: the servers' addresses, comma-separated, on
    /// a cluster; else the agent's.
    pub fn vk_nomad_addr(&self) -> String {
        if self.nomad_servers.is_empty() {
            self.nomad_addr.clone()
        } else {
            self.nomad_servers.iter().map(|s| s.http.as_str()).collect::<Vec<_>>().join(",")
        }
    }

    /// The RPC addresses an extra client joins, as an HCL list's items.
    pub(crate) fn server_rpcs(&self) -> String {
        if self.nomad_servers.is_empty() {
            format!("\"127.0.0.1:{}\"", self.nomad_rpc)
        } else {
            let rpcs: Vec<String> =
                self.nomad_servers.iter().map(|s| format!("\"127.0.0.1:{}\"", s.rpc)).collect();
            rpcs.join(", ")
        }
    }

    /// Starts three server agents (no client) that find each other through `retry_join` and
    /// elect a leader once all three are up; the first is the stack's main agent until the
    /// clients start.
    pub(crate) fn start_nomad_servers(&mut self) -> anyhow::Result<()> {
        let ports: Vec<(u16, u16, u16)> = (0..3)
            .map(|_| Ok((free_port()?, free_port()?, free_port()?)))
            .collect::<anyhow::Result<_>>()?;
        let join: Vec<String> =
            ports.iter().map(|(_, _, serf)| format!("\"127.0.0.1:{serf}\"")).collect();
        for (i, (http, rpc, serf)) in ports.iter().enumerate() {
            let name = format!("nomad-server-{}", i + 1);
            let cfg = format!(
                "{NO_UPDATE_CHECK}name = \"{name}\"\nbind_addr = \"127.0.0.1\"\n\
ports {{\n  http = {http}\n  rpc = {rpc}\n  serf = {serf}\n}}\n\
advertise {{\n  http = \"127.0.0.1\"\n  rpc = \"127.0.0.1\"\n  serf = \"127.0.0.1\"\n}}\n\
server {{\n  enabled = true\n  bootstrap_expect = 3\n  heartbeat_grace = \"3s\"\n  min_heartbeat_ttl = \"3s\"\n\
  server_join {{\n    retry_join = [{}]\n    retry_interval = \"1s\"\n  }}\n}}\n\
client {{\n  enabled = false\n}}\n",
                join.join(", ")
            );
            let agent = self.nomad_agent(&name, &cfg)?;
            let cmd = self.nomad_command(&agent);
            let proc = Process::spawn_group(&name, cmd, &self.log(&name))?;
            self.nomad_servers.push(Server {
                http: format!("http://127.0.0.1:{http}"),
                rpc: *rpc,
                pid: proc.pid(),
            });
            self.procs.push(proc);
            if i == 0 {
                self.nomad = Some(agent);
                self.nomad_rpc = *rpc;
                self.nomad_addr = format!("http://127.0.0.1:{http}");
            }
        }
        Ok(())
    }

    /// Once the servers elected a leader (put first in [`Stack::vk_nomad_addr`]), starts two
    /// clients in pool `default` joined to all
    /// three; the first becomes the stack's main address (a client agent forwards to the leader,
    /// whichever server it is).
    pub(crate) async fn start_cluster_clients(&mut self) -> anyhow::Result<()> {
        let leader = format!("{}/v1/status/leader", self.nomad_addr);
        let http = reqwest::Client::new();
        let now = wait_for(
            "a Nomad leader",
            Duration::from_secs(60),
            Duration::from_millis(500),
            || async {
                let r = http.get(&leader).send().await?;
                let leader: String =
                    if r.status().is_success() { r.json().await? } else { String::new() };
                Ok(Some(leader).filter(|l| l.contains("127.0.0.1")))
            },
        )
        .await
        .with_context(|| format!("Nomad server log: {}", self.log("nomad-server-1").display()))?;
        // The leader first in the nodes' `--nomad-addr` lists: killing it makes them fail over.
        if let Some(i) =
            self.nomad_servers.iter().position(|s| now.ends_with(&format!(":{}", s.rpc)))
        {
            self.nomad_servers.swap(0, i);
        }
        let mut first = None;
        for name in ["nomad-client-1", "nomad-client-2"] {
            let (_, http) = self.spawn_nomad_client(name, "default", "dc1").await?;
            first.get_or_insert(http);
        }
        if let Some(addr) = first {
            self.nomad_addr = addr;
        }
        Ok(())
    }

    /// SIGKILLs the server that leads now; returns its HTTP address once another server leads.
    ///
    /// # Errors
    /// No cluster, no leader known, or no new leader within 60 s.
    pub async fn kill_nomad_leader(&self) -> anyhow::Result<String> {
        ensure!(!self.nomad_servers.is_empty(), "the stack runs no Nomad cluster");
        let http = self.nomad_http();
        let url = format!("{}/v1/status/leader", self.nomad_addr);
        let leader: String = http.get(&url).send().await?.json().await?;
        let server = self
            .nomad_servers
            .iter()
            .find(|s| leader.ends_with(&format!(":{}", s.rpc)))
            .with_context(|| format!("the leader {leader:?} is none of the servers"))?;
        let killed =
            std::process::Command::new("kill").args(["-9", &server.pid.to_string()]).status()?;
        ensure!(killed.success(), "kill -9 {} failed", server.pid);
        wait_for(
            "a new Nomad leader",
            Duration::from_secs(60),
            Duration::from_millis(250),
            || async {
                let r = http.get(&url).send().await?;
                let now: String =
                    if r.status().is_success() { r.json().await? } else { String::new() };
                Ok((!now.is_empty() && now != leader).then_some(()))
            },
        )
        .await?;
        Ok(server.http.clone())
    }
}
