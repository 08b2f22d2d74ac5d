//! `charts/virtual-kubelet-nomad`: linted, rendered, validated by the real API server, and kept
//! equal to `deploy/` where both say the same thing.

use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, ensure};
use serde_json::Value;

use super::Ctx;

/// The namespace the chart is rendered for.
const NS: &str = "e2e-helm";

/// `helm lint --strict` in both authentication modes; the render refusing an unknown mode and a
/// node identity without its bootstrap token; `helm template` of each mode, with two nodes,
/// accepted by the API server (`kubectl apply --dry-run=server`: every object validated and
/// admitted, none stored); and the chart's ClusterRole and leader-election Role granting exactly
/// the rules of `deploy/service-account/clusterrole.yaml` and `deploy/base/leader-election.yaml`
/// (which the end-to-end test `in_cluster_rbac` ablates verb by verb), so the two cannot drift.
pub(crate) async fn helm_chart(cx: Ctx<'_>) -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let chart = root.join("charts/virtual-kubelet-nomad").display().to_string();
    let home = cx.stack.dir.join("helm");
    std::fs::create_dir_all(&home)?;
    let helm = |args: &[&str]| -> anyhow::Result<std::process::Output> {
        Ok(Command::new(&cx.stack.peers.helm)
            .args(args)
            // Nothing of the user's Helm setup, nothing written outside the stack's directory.
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_DATA_HOME", home.join("data"))
            .env_remove("KUBECONFIG")
            .output()?)
    };
    let ok = |args: &[&str]| -> anyhow::Result<String> {
        let out = helm(args)?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        ensure!(out.status.success(), "helm {} failed:\n{text}", args.join(" "));
        Ok(String::from_utf8(out.stdout)?)
    };
    let token = "bootstrap.token=abcdef.0123456789abcdef";
    ok(&["lint", "--strict", &chart, "--set", token])?;
    ok(&["lint", "--strict", &chart, "--set", "authMode=serviceAccount"])?;
    let refused = |args: &[&str], why: &str| -> anyhow::Result<()> {
        let out = helm(args)?;
        let err = String::from_utf8_lossy(&out.stderr);
        ensure!(!out.status.success() && err.contains(why), "helm {}: {err}", args.join(" "));
        Ok(())
    };
    refused(
        &["template", "x", &chart, "--set", "authMode=kubelet"],
        "authMode must be nodeIdentity or serviceAccount",
    )?;
    refused(&["template", "x", &chart], "authMode nodeIdentity needs bootstrap.token")?;

    cx.stack.namespace(NS).await?;
    let two_nodes = ["--set", "nodes[0].name=alpha", "--set", "nodes[1].name=beta"];
    let mut rendered = Vec::new();
    for mode in ["nodeIdentity", "serviceAccount"] {
        let mode_set = format!("authMode={mode}");
        let mut args = vec!["template", "vkn", &chart, "--namespace", NS, "--set", &mode_set];
        args.extend(["--set", token]);
        args.extend(two_nodes);
        let yaml = ok(&args)?;
        let file = cx.stack.dir.join(format!("chart-{mode}.yaml"));
        std::fs::write(&file, &yaml)?;
        let file = file.display().to_string();
        let applied = cx.stack.kubectl(&["apply", "--dry-run=server", "-f", &file])?;
        for object in [
            "deployment.apps/vkn-virtual-kubelet-nomad-alpha",
            "deployment.apps/vkn-virtual-kubelet-nomad-beta",
            "secret/vkn-virtual-kubelet-nomad",
            "serviceaccount/vkn-virtual-kubelet-nomad",
            "role.rbac.authorization.k8s.io/vkn-virtual-kubelet-nomad-leader-election",
            "service/vkn-virtual-kubelet-nomad-metrics",
            "poddisruptionbudget.policy/vkn-virtual-kubelet-nomad-alpha",
            "networkpolicy.networking.k8s.io/vkn-virtual-kubelet-nomad",
        ] {
            ensure!(applied.contains(object), "{mode}: {object} not accepted:\n{applied}");
        }
        let specific = if mode == "serviceAccount" {
            "clusterrole.rbac.authorization.k8s.io/vkn-virtual-kubelet-nomad"
        } else {
            "secret/vkn-virtual-kubelet-nomad-bootstrap"
        };
        ensure!(applied.contains(specific), "{mode}: {specific} not accepted:\n{applied}");
        rendered.push((mode, file));
    }
    println!("the chart renders and the API server accepts both modes");

    // The rules, as the API server reads the YAML (client-side dry run: JSON, no request).
    let objects = |file: &str| -> anyhow::Result<Vec<Value>> {
        let json = cx.stack.kubectl(&["create", "--dry-run=client", "-o", "json", "-f", file])?;
        // One JSON document per object, one after the other.
        let mut all = Vec::new();
        for v in serde_json::Deserializer::from_str(&json).into_iter::<Value>() {
            let v = v?;
            match v["kind"].as_str() {
                Some("List") => all.extend(v["items"].as_array().cloned().unwrap_or_default()),
                _ => all.push(v),
            }
        }
        Ok(all)
    };
    let rules_of = |objs: &[Value], kind: &str| -> anyhow::Result<Value> {
        let o = objs.iter().find(|o| o["kind"] == kind).with_context(|| format!("no {kind}"))?;
        Ok(o["rules"].clone())
    };
    let chart_objs = objects(&rendered[1].1)?;
    let deploy = |p: &str| root.join(p).display().to_string();
    let cluster_role = objects(&deploy("deploy/service-account/clusterrole.yaml"))?;
    let election = objects(&deploy("deploy/base/leader-election.yaml"))?;
    ensure!(
        rules_of(&chart_objs, "ClusterRole")? == rules_of(&cluster_role, "ClusterRole")?,
        "the chart's ClusterRole differs from deploy/service-account/clusterrole.yaml"
    );
    ensure!(
        rules_of(&chart_objs, "Role")? == rules_of(&election, "Role")?,
        "the chart's leader-election Role differs from deploy/base/leader-election.yaml"
    );
    // The Deployment runs the node as deploy/'s does: as a node identity by TLS bootstrap,
    // leader-elected, with the same security context.
    let node_objs = objects(&rendered[0].1)?;
    let alpha = node_objs
        .iter()
        .find(|o| {
            o["kind"] == "Deployment" && o["metadata"]["name"] == "vkn-virtual-kubelet-nomad-alpha"
        })
        .context("no Deployment for alpha")?;
    let c = &alpha["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<&str> =
        c["args"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    for flag in ["--bootstrap-kubeconfig", "--rotate-server-certificates", "--leader-elect"] {
        ensure!(args.contains(&flag), "alpha's args lack {flag}: {args:?}");
    }
    ensure!(args.windows(2).any(|w| w == ["--nodename", "alpha"]), "alpha's args: {args:?}");
    ensure!(
        c["securityContext"]["readOnlyRootFilesystem"] == true
            && c["securityContext"]["capabilities"]["drop"][0] == "ALL"
            && alpha["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == 65532,
        "alpha's security context: {}",
        c["securityContext"]
    );
    Ok(())
}
