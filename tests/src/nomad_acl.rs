//! Nomad's ACLs on the stack ([`StackOptions::nomad_acl`](crate::StackOptions::nomad_acl)): the
//! bootstrap (the management token the harness uses), the policy of
//! `deploy/nomad-acl-policy.hcl` and its tokens, and the policy with one capability taken out
//! (the ablation of `nomad_acl_policy`).

use std::time::Duration;

use anyhow::{Context as _, ensure};
use reqwest::header::{HeaderMap, HeaderValue};

use crate::{Stack, wait_for};

/// The header Nomad reads the ACL token from.
const TOKEN_HEADER: &str = "X-Nomad-Token";

/// The policy file every virtual kubelet of an ACL stack gets a token of.
pub const POLICY_FILE: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/nomad-acl-policy.hcl");

/// The tokens of an ACL stack.
#[derive(Debug, Clone)]
pub(crate) struct Tokens {
    /// The bootstrap (management) token: the harness's own requests.
    pub(crate) management: String,
    /// A token of [`stack_policy`]: what every virtual kubelet gets.
    pub(crate) node: String,
}

/// The Nomad configuration that turns ACLs on.
pub(crate) const ACL_CONFIG: &str = "acl {\n  enabled = true\n}\n";

/// `deploy/nomad-acl-policy.hcl` as the stack's nodes need it: `alloc-node-exec` (their pods run
/// on raw_exec, as the file's comment says to add) and the `default` namespace's block repeated
/// for `apps` (the Nomad namespace `nomad_namespace` lets pods choose).
///
/// # Errors
/// The file cannot be read or no longer has the lines this edits.
pub fn stack_policy() -> anyhow::Result<String> {
    let file = std::fs::read_to_string(POLICY_FILE).context(POLICY_FILE)?;
    let raw_exec = file.replace("    # \"alloc-node-exec\",", "    \"alloc-node-exec\",");
    ensure!(raw_exec != file, "{POLICY_FILE}: no commented alloc-node-exec line");
    let block = namespace_block(&raw_exec, "default")?;
    let apps = block.replacen("namespace \"default\"", "namespace \"apps\"", 1);
    Ok(format!("{raw_exec}\n{apps}"))
}

/// The `namespace "<name>" { ... }` block of `policy` (up to its closing brace at the start of a
/// line).
///
/// # Errors
/// No such block.
fn namespace_block(policy: &str, name: &str) -> anyhow::Result<String> {
    let start = policy
        .find(&format!("namespace \"{name}\" {{"))
        .with_context(|| format!("no namespace {name:?} block"))?;
    let len = policy[start..].find("\n}\n").context("the block does not end")? + 3;
    Ok(policy[start..start + len].to_owned())
}

/// One capability (or rule) taken out of a policy, and the policy without it.
#[derive(Debug, Clone)]
pub struct Ablation {
    /// What was taken out: a namespace capability, `variables` or `node`.
    pub removed: &'static str,
    /// The policy without it.
    pub policy: String,
}

/// `policy` with each of its `default` namespace capabilities, its `variables` block and its
/// `node` rule taken out in turn.
///
/// # Errors
/// The policy lacks one of the parts this takes out.
pub fn ablations(policy: &str) -> anyhow::Result<Vec<Ablation>> {
    let block = namespace_block(policy, "default")?;
    let mut out = Vec::new();
    for cap in [
        "list-jobs",
        "read-job",
        "submit-job",
        "read-fs",
        "alloc-exec",
        "alloc-node-exec",
        "alloc-lifecycle",
    ] {
        let line = format!("    \"{cap}\",");
        let without = block.lines().filter(|l| !l.starts_with(&line)).collect::<Vec<_>>();
        ensure!(without.len() + 1 == block.lines().count(), "no {cap} line in the default block");
        let policy = policy.replacen(&block, &(without.join("\n") + "\n"), 1);
        out.push(Ablation { removed: cap, policy });
    }
    let vars_start = block.find("  variables {").context("no variables block")?;
    let vars_len = block[vars_start..].find("\n  }\n").context("variables block open")? + 5;
    let without_vars = format!("{}{}", &block[..vars_start], &block[vars_start + vars_len..]);
    out.push(Ablation { removed: "variables", policy: policy.replacen(&block, &without_vars, 1) });
    let node = "node {\n  policy = \"read\"\n}\n";
    ensure!(policy.contains(node), "no node rule");
    out.push(Ablation { removed: "node", policy: policy.replacen(node, "", 1) });
    Ok(out)
}

impl Stack {
    /// An HTTP client for Nomad: with the management token when ACLs are on.
    ///
    /// # Panics
    /// Never: a token is ASCII.
    pub fn nomad_http(&self) -> reqwest::Client {
        let mut headers = HeaderMap::new();
        if let Some(t) = &self.nomad_acl
            && let Ok(v) = HeaderValue::from_str(&t.management)
        {
            headers.insert(TOKEN_HEADER, v);
        }
        reqwest::Client::builder().default_headers(headers).build().unwrap_or_default()
    }

    /// The token every virtual kubelet of this stack gets (`None` without ACLs).
    pub fn node_token(&self) -> Option<&str> {
        self.nomad_acl.as_ref().map(|t| t.node.as_str())
    }

    /// Bootstraps the ACLs of a just-started Nomad (once its leader is elected), and makes the
    /// stack's policy ([`stack_policy`]) and its token.
    ///
    /// # Errors
    /// Nomad refusing the bootstrap for 60 s, or the policy or token.
    pub(crate) async fn bootstrap_acl(&mut self) -> anyhow::Result<()> {
        let http = reqwest::Client::new();
        let url = format!("{}/v1/acl/bootstrap", self.nomad_addr);
        let management = wait_for(
            "Nomad's ACL bootstrap",
            Duration::from_secs(60),
            Duration::from_millis(500),
            || async {
                let r = http.post(&url).send().await?;
                if !r.status().is_success() {
                    return Ok(None);
                }
                let v: serde_json::Value = r.json().await?;
                Ok(v["SecretID"].as_str().map(str::to_owned))
            },
        )
        .await?;
        self.nomad_acl = Some(Tokens { management, node: String::new() });
        let node = self.policy_token("virtual-kubelet", &stack_policy()?).await?;
        if let Some(t) = self.nomad_acl.as_mut() {
            t.node = node;
        }
        Ok(())
    }

    /// Writes ACL policy `name` with `rules` and returns the Secret ID of a new client token
    /// holding it alone.
    ///
    /// # Errors
    /// No ACLs on the stack; Nomad refusing the policy (its answer says why) or the token.
    pub async fn policy_token(&self, name: &str, rules: &str) -> anyhow::Result<String> {
        ensure!(self.nomad_acl.is_some(), "the stack runs no Nomad ACLs");
        let http = self.nomad_http();
        let body = serde_json::json!({"Name": name, "Rules": rules});
        let r = http
            .post(format!("{}/v1/acl/policy/{name}", self.nomad_addr))
            .json(&body)
            .send()
            .await?;
        let status = r.status();
        ensure!(status.is_success(), "policy {name}: {status} {}", r.text().await?);
        let token = serde_json::json!({"Name": name, "Type": "client", "Policies": [name]});
        let r = http.post(format!("{}/v1/acl/token", self.nomad_addr)).json(&token).send().await?;
        let status = r.status();
        ensure!(status.is_success(), "token of {name}: {status} {}", r.text().await?);
        let v: serde_json::Value = r.json().await?;
        v["SecretID"].as_str().map(str::to_owned).context("no SecretID")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stack's policy is the file's with raw_exec's exec and the `apps` namespace; each
    /// ablation takes exactly one part out.
    #[test]
    fn the_stack_policy_and_its_ablations() {
        let policy = stack_policy().unwrap();
        assert!(policy.contains("    \"alloc-node-exec\","));
        assert!(policy.contains("namespace \"apps\" {"));
        let ablations = ablations(&policy).unwrap();
        assert_eq!(ablations.len(), 9);
        for a in &ablations {
            assert!(a.policy.len() < policy.len(), "{}", a.removed);
            assert!(a.policy.contains("namespace \"apps\" {"), "{}", a.removed);
        }
        let read_job = &ablations[1];
        assert_eq!(read_job.removed, "read-job");
        assert_eq!(read_job.policy.matches("\"read-job\"").count(), 2, "apps and * keep theirs");
    }
}
