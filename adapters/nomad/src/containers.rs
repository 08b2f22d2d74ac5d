//! What reaches into a running pod: where it runs ([`Running`], kept from its last status read),
//! probes ([`ProbeTarget`]), connections to its ports ([`PodNetwork`]), and its logs, exec and
//! attach ([`PodStreams`]).

use super::*;

/// A running pod's place ([`NomadProvider::running`]).
#[derive(Debug, Clone)]
pub(crate) struct Running {
    /// The allocation's ID.
    pub(crate) alloc: String,
    /// The pod's IP as its status reports it: the allocation's own address in bridge and CNI
    /// modes, else the node's.
    pub(crate) ip: Option<String>,
    /// Container port → host port, where Nomad mapped one.
    pub(crate) ports: BTreeMap<u16, u16>,
}

impl Running {
    /// Where allocation `a`, whose sandbox is `sandbox`, runs.
    pub(crate) fn of(a: &Allocation, sandbox: &vk_domain::runtime::Sandbox) -> Self {
        Self {
            alloc: a.id.clone(),
            ip: sandbox.pod_ip.clone().or_else(|| sandbox.host_ip.clone()),
            ports: sandbox.ports.clone(),
        }
    }
}

impl ProbeTarget for NomadProvider {
    /// Runs a probe's command. On the docker driver a success is confirmed by a second run:
    /// Nomad 1.11's docker driver may report exit code 0 for a command that has not started yet
    /// (`ExecTaskStreaming` inspects the exec right after attaching, before Docker marks it
    /// running; hashicorp/nomad#27146), which made a startup probe of `/bin/false` pass. Both runs
    /// must succeed; a failure is reported as it is.
    async fn exec(
        &self,
        id: &WorkloadId,
        container: &str,
        command: &[String],
    ) -> Result<i32, ProviderError> {
        let r = JobRef::parse(id);
        let alloc = self.running_alloc(&r).await?;
        let client = self.at(&r);
        let code = exec::run(&client, &alloc, container, command)
            .await
            .inspect_err(|_| self.running.invalidate(&r.encode()))?;
        if code != 0 || !self.on_docker(&r, container).await {
            return Ok(code);
        }
        exec::run(&client, &alloc, container, command).await
    }

    async fn restart_container(
        &self,
        id: &WorkloadId,
        container: &str,
    ) -> Result<(), ProviderError> {
        // 500 "Task not running" is `NotFound` (`client::status_error`).
        self.task_action(id, "restart", json!({"TaskName": container})).await
    }

    /// SIGKILL to the task through `POST /v1/client/allocation/:alloc_id/signal`: the task ends
    /// with 137 and the job's restart policy (the pod's `restartPolicy`) decides what follows.
    async fn kill_container(&self, id: &WorkloadId, container: &str) -> Result<(), ProviderError> {
        self.task_action(id, "signal", json!({"Task": container, "Signal": "SIGKILL"})).await
    }
}

impl NomadProvider {
    /// `POST /v1/client/allocation/<alloc>/<action>` with `body`, on the running allocation of
    /// workload `id` (owned by this node).
    async fn task_action(
        &self,
        id: &WorkloadId,
        action: &str,
        body: serde_json::Value,
    ) -> Result<(), ProviderError> {
        let r = JobRef::parse(id);
        self.owned(&r).await?;
        let alloc = self.running_alloc(&r).await?;
        let _: serde_json::Value = self
            .at(&r)
            .send_json(Method::POST, &["v1", "client", "allocation", &alloc, action], &[], &body)
            .await?;
        Ok(())
    }
}

impl PodNetwork for NomadProvider {
    /// Connects to the pod's IP as its status reports it at `port`: the allocation's own address
    /// in bridge and CNI modes; in host mode the node's address, at the host port Nomad mapped
    /// `port` to (`To` → `Value`) if it mapped one.
    async fn dial(&self, id: &WorkloadId, port: u16) -> Result<Duplex, ProviderError> {
        let r = JobRef::parse(id);
        let at = self.located(&r).await?;
        let Some(ip) = at.ip.as_deref() else {
            // Read again next time: the address comes once the network is up.
            self.running.invalidate(&r.encode());
            return Err(ProviderError::Unavailable {
                message: format!("allocation {} has no address yet", at.alloc),
                source: None,
            });
        };
        let target = at.ports.get(&port).copied().unwrap_or(port);
        let connect = tokio::net::TcpStream::connect((ip, target));
        let failed = match tokio::time::timeout(std::time::Duration::from_secs(10), connect).await {
            Ok(Ok(sock)) => return Ok(Box::new(sock)),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                ProviderError::Unavailable {
                    message: format!(
                        "nothing listens on port {port} of pod {:?} ({ip}:{target}): connection \
                         refused",
                        self.pod_name(&r.id)
                    ),
                    source: Some(Box::new(e)),
                }
            }
            Ok(Err(e)) => ProviderError::Unavailable {
                message: format!("connecting to {ip}:{target}: {e}"),
                source: Some(Box::new(e)),
            },
            Err(_) => ProviderError::Unavailable {
                message: format!("connecting to {ip}:{target} timed out"),
                source: None,
            },
        };
        // The allocation may have been replaced since: the next dial looks again.
        self.running.invalidate(&r.encode());
        Err(failed)
    }
}

impl PodStreams for NomadProvider {
    /// Reads the task's log files through `/v1/client/fs/logs` ([`logs`] says what is exact and
    /// what is approximated). `previous` reads the whole log of the task when it restarted in
    /// place, else the log of the allocation the current one replaced, and never follows.
    async fn logs(
        &self,
        id: &WorkloadId,
        container: &str,
        opts: &LogOptions,
    ) -> Result<ByteStream, ProviderError> {
        let r = JobRef::parse(id);
        let client = self.at(&r);
        let current = self.current_alloc(&r).await?;
        if !current.task_states.as_ref().is_some_and(|s| s.contains_key(container)) {
            return Err(ProviderError::NotFound(format!(
                "container {container:?} not found in pod {:?}",
                self.pod_name(&r.id)
            )));
        }
        let mut opts = opts.clone();
        let alloc = if opts.previous {
            opts.follow = false;
            self.previous_alloc(&client, current, container).await?
        } else {
            current
        };
        let target = logs::Target { client, alloc, task: container.to_owned() };
        // A task that just ended: its output may still be on its way to the log files.
        logs::settle(&target, Duration::from_millis(200), Duration::from_secs(3)).await;
        logs::logs(target, &opts).await
    }

    async fn exec_stream(
        &self,
        id: &WorkloadId,
        container: &str,
        command: &[String],
        io: ExecIo,
    ) -> Result<i32, ProviderError> {
        let r = JobRef::parse(id);
        let alloc = self.running_alloc(&r).await?;
        let ended = exec::stream(&self.at(&r), &alloc, container, command, io).await;
        if ended.is_err() {
            // The allocation may have been replaced since: the next session looks again.
            self.running.invalidate(&r.encode());
        }
        ended
    }

    /// Streams what the task writes from now on (`/v1/client/fs/logs` following from the end):
    /// Nomad gives no access to a running task's stdin, and no terminal (with `io.tty`, stderr goes
    /// to stdout, as a terminal would merge them).
    async fn attach(
        &self,
        id: &WorkloadId,
        container: &str,
        io: ExecIo,
    ) -> Result<(), ProviderError> {
        let r = JobRef::parse(id);
        if io.stdin.is_some() {
            // An interactive container's command runs in the first attach session.
            if self.interactive(&r, container).await? {
                return self.interactive_session(id, container, io).await;
            }
            return Err(ProviderError::Unsupported(
                "Nomad cannot attach stdin to a running task; use kubectl exec".into(),
            ));
        }
        let current = self.current_alloc(&r).await?;
        let running = current
            .task_states
            .as_ref()
            .and_then(|s| s.get(container))
            .is_some_and(|t| t.state == "running");
        if current.client_status != "running" || !running {
            return Err(ProviderError::NotFound(format!(
                "container {container:?} of pod {:?} is not running",
                self.pod_name(&r.id)
            )));
        }
        let stderr = match io.stderr {
            Some(e) => Some(e),
            None if io.tty => io.stdout.clone(),
            None => None,
        };
        let target =
            logs::Target { client: self.at(&r), alloc: current, task: container.to_owned() };
        logs::attach(target, io.stdout, stderr).await
    }
}

impl NomadProvider {
    /// The termination message of `task`, which ended at `finished` with `exit_code`, in
    /// allocation `a`, as the kubelet makes it: the content of its message file
    /// ([`job::TERMINATION_LOG`], at most 4096 bytes), else, with `fallback`
    /// (`FallbackToLogsOnError`) and a non-zero exit, the end of its log (80 lines, 2048 bytes at
    /// most). `None` (keep the event's message) when the task has no message file (raw_exec,
    /// exec) or Nomad cannot be read (tried again at the next status read); `Some(None)` for an
    /// empty message.
    pub(crate) async fn termination_message(
        &self,
        client: &NomadClient,
        a: &Allocation,
        task: &str,
        (finished, exit_code, fallback): (String, i32, bool),
    ) -> Option<Option<String>> {
        let key = (a.id.clone(), task.to_owned(), finished);
        if let Some(m) = self.termination_messages.get(&key) {
            return m;
        }
        let path = format!("{task}/{}", job::TERMINATION_LOG);
        let limit = TERMINATION_MESSAGE_BYTES.to_string();
        let req = client.request(Method::GET, &["v1", "client", "fs", "readat", &a.id]).query(&[
            ("path", path.as_str()),
            ("offset", "0"),
            ("limit", limit.as_str()),
        ]);
        let text = match client.send(req).await {
            Ok(resp) => match resp.bytes().await {
                Ok(b) => String::from_utf8_lossy(&b).into_owned(),
                Err(e) => {
                    debug!(alloc = %a.id, task, error = %e, "reading the termination message");
                    return None;
                }
            },
            Err(ProviderError::NotFound(_)) => {
                self.termination_messages.insert(key, None);
                return None;
            }
            Err(e) => {
                debug!(alloc = %a.id, task, error = %e, "reading the termination message");
                return None;
            }
        };
        let mut message = Some(text).filter(|t| !t.is_empty());
        if message.is_none() && fallback && exit_code != 0 {
            let opts = LogOptions {
                tail_lines: Some(80),
                limit_bytes: Some(2048),
                ..LogOptions::default()
            };
            let target =
                logs::Target { client: client.clone(), alloc: a.clone(), task: task.to_owned() };
            // The task just ended: its output may still be on its way to the log files.
            logs::settle_output(&target, Duration::from_millis(200), Duration::from_secs(5)).await;
            let mut out = Vec::new();
            if let Ok(mut stream) = logs::logs(target, &opts).await {
                while let Some(Ok(chunk)) = stream.next().await {
                    out.extend_from_slice(&chunk);
                }
            }
            message = Some(String::from_utf8_lossy(&out).into_owned()).filter(|t| !t.is_empty());
        }
        self.termination_messages.insert(key, Some(message.clone()));
        Some(message)
    }

    /// Whether `task` of job `r` runs on the docker driver (read from the job once, then cached;
    /// `true` when the job cannot be read, so that a success is confirmed rather than trusted).
    pub(crate) async fn on_docker(&self, r: &JobRef, task: &str) -> bool {
        let key = (r.id.clone(), task.to_owned());
        if let Some(d) = self.docker_tasks.get(&key) {
            return d;
        }
        let Ok(Some(job)) = self.job(r).await else { return true };
        for t in job.task_groups.iter().flat_map(|g| &g.tasks) {
            self.docker_tasks.insert((r.id.clone(), t.name.clone()), t.driver == "docker");
        }
        self.docker_tasks.get(&key).unwrap_or(true)
    }

    /// The ID of the allocation that stands for job `r` now, if it runs.
    pub(crate) async fn running_alloc(&self, r: &JobRef) -> Result<String, ProviderError> {
        Ok(self.located(r).await?.alloc)
    }

    /// Where job `r`'s pod runs: as its last status read found it ([`NomadProvider::running`]),
    /// else from a list of its allocations.
    ///
    /// # Errors
    /// `NotFound` when no allocation of it runs; `Unavailable` when Nomad cannot be reached.
    pub(crate) async fn located(&self, r: &JobRef) -> Result<Running, ProviderError> {
        if let Some(known) = self.running.get(&r.encode()) {
            return Ok(known);
        }
        let allocs = self.allocations(&self.at(r), Some(&r.id)).await?;
        let Some(a) = alloc::current(allocs.iter()).filter(|a| a.client_status == "running") else {
            return Err(ProviderError::NotFound(format!(
                "pod {:?} has no running allocation",
                self.pod_name(&r.id)
            )));
        };
        let host_ip = self.host_ip(&a.node_id).await;
        let address = self.own_address(&self.at(r), a).await;
        let found = Running::of(a, &alloc::sandbox(a, host_ip, address));
        self.running.insert(r.encode(), found.clone());
        Ok(found)
    }

    /// The allocation that stands for job `r` now, whatever its status.
    pub(crate) async fn current_alloc(&self, r: &JobRef) -> Result<Allocation, ProviderError> {
        let allocs = self.allocations(&self.at(r), Some(&r.id)).await?;
        alloc::current(allocs.iter())
            .cloned()
            .ok_or_else(|| ProviderError::NotFound(format!("no allocation of job {}", r.id)))
    }

    /// Which allocation holds the output `previous=true` asks for: the current one when the task
    /// restarted in place (restarts append to the same files, so this is its whole log, the
    /// running instance's output included), else the allocation the current one replaced
    /// (`PreviousAllocation`, set when Nomad rescheduled or replaced it for a new job version).
    pub(crate) async fn previous_alloc(
        &self,
        client: &NomadClient,
        current: Allocation,
        container: &str,
    ) -> Result<Allocation, ProviderError> {
        let restarts =
            current.task_states.as_ref().and_then(|s| s.get(container)).map(|t| t.restarts);
        if restarts.unwrap_or(0) > 0 {
            return Ok(current);
        }
        let pod = self.pod_name(&current.job_id);
        let not_found = || {
            ProviderError::NotFound(format!(
                "previous terminated container {container:?} in pod {pod:?} not found"
            ))
        };
        let full: Allocation = client.get(&["v1", "allocation", &current.id], &[]).await?;
        if full.previous_allocation.is_empty() {
            return Err(not_found());
        }
        match client.get::<Allocation>(&["v1", "allocation", &full.previous_allocation], &[]).await
        {
            Ok(prev) if prev.task_states.as_ref().is_some_and(|s| s.contains_key(container)) => {
                Ok(prev)
            }
            Ok(_) | Err(ProviderError::NotFound(_)) => Err(not_found()),
            Err(e) => Err(e),
        }
    }
}
