//! `local-stack`: the README's "run it" command (after `scripts/docker.sh` and
//! `scripts/images.sh`). Starts the local stack and `virtual-kubelet --provider nomad` on Nomad's
//! docker driver, creates an example pod (a real container of the offline busybox image serving
//! HTTP on its own pod IP), prints `kubectl get nodes,pods -o wide`, `kubectl logs` and
//! `kubectl exec` inside the container and the pod's Nomad job, then keeps everything running
//! until Ctrl-C (or exits at once with `--exit`).

use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::PostParams;
use vk_tests::fixtures::pod;
use vk_tests::{BUSYBOX, Stack, StackOptions, wait_for};

const NODE: &str = "vk-nomad";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let exit = std::env::args().any(|a| a == "--exit");
    eprintln!(
        "starting the local stack (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, nomad agent -dev) ..."
    );
    let stack = Stack::start_with(StackOptions { docker: true, ..StackOptions::default() }).await?;
    let mut vk = stack.virtual_kubelet(NODE, &["--nomad-driver", "docker"])?;
    let client = stack.client().await?;

    let out = async {
        stack.wait_node_ready(NODE, Duration::from_secs(60)).await?;
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        stack.namespace("default").await?;
        let serve = "echo hello from a container; mkdir -p /www; echo hello-nomad > /www/index.html; \
                     exec httpd -f -p 8080 -h /www";
        let example = pod("hello-nomad")
            .on_node(NODE)
            .spec(serde_json::json!({"containers": [{"name": "main", "image": BUSYBOX,
                "command": ["sh", "-c", serve], "ports": [{"containerPort": 8080}]}]}))
            .build();
        pods.create(&PostParams::default(), &example).await.context("creating the example pod")?;
        wait_for(
            "the example pod Running",
            Duration::from_secs(60),
            Duration::from_secs(1),
            || {
                let pods = pods.clone();
                async move {
                    let p = pods.get("hello-nomad").await?;
                    Ok((p.status.and_then(|s| s.phase).as_deref() == Some("Running")).then_some(()))
                }
            },
        )
        .await?;
        println!(
            "$ kubectl get nodes,pods -o wide\n{}",
            stack.kubectl(&["get", "nodes,pods", "-o", "wide"])?
        );
        println!("$ kubectl logs hello-nomad\n{}", stack.kubectl(&["logs", "hello-nomad"])?);
        let inside = "ip -o -4 addr show eth0; wget -qO- localhost:8080";
        println!(
            "$ kubectl exec hello-nomad -- sh -c '{inside}'\n{}",
            stack.kubectl(&["exec", "hello-nomad", "--", "sh", "-c", inside])?
        );
        let job = std::process::Command::new(&stack.peers.nomad)
            .args(["job", "status", "-address", &stack.nomad_addr, "k8s-default_hello-nomad"])
            .output()?;
        println!(
            "$ nomad job status k8s-default_hello-nomad\n{}",
            String::from_utf8_lossy(&job.stdout)
        );
        anyhow::Ok(())
    }
    .await;
    if let Err(e) = out {
        eprintln!(
            "error: {e:#}\nvirtual-kubelet log ({}):\n{}\npeer logs:\n{}",
            vk.log.display(),
            vk.tail(30),
            stack.logs()
        );
        return Err(e);
    }
    println!(
        "The stack is up.\n  export KUBECONFIG={}\n  export NOMAD_ADDR={}\n  virtual-kubelet log: {}\npeer logs:\n{}",
        stack.admin_kubeconfig.display(),
        stack.nomad_addr,
        vk.log.display(),
        stack.logs()
    );
    if !exit {
        println!("Press Ctrl-C to stop everything.");
        tokio::signal::ctrl_c().await?;
    }
    vk.terminate(Duration::from_secs(10));
    Ok(())
}
