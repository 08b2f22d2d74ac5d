//! Environment from the Variable: Secret data, run-time values, registry logins.

use super::*;

/// `imagePullSecrets` on docker: the driver's `auth` block reads the login from the task's
/// environment, rendered from the pod's Variable; the password is nowhere in the job. A
/// container whose image no key matches gets no `auth`.
#[test]
fn image_pull_secrets_reach_the_docker_auth_block_through_the_variable() {
    let mut i = inputs();
    let cfg = r#"{"auths": {"127.0.0.1:5000": {"username": "puller", "password": "pull-s3cr3t"}}}"#;
    i.secrets.insert(
        "regcred".into(),
        Some([(".dockerconfigjson".to_owned(), cfg.as_bytes().to_vec())].into()),
    );
    let pod = pod_json(
        json!({}),
        json!({"imagePullSecrets": [{"name": "regcred"}, {"name": "absent"}],
                   "containers": [
                       {"name": "private", "image": "127.0.0.1:5000/private/bb:1"},
                       {"name": "public", "image": "busybox:1.36"}]}),
    );
    let w = WorkloadSpec::from_pod(&pod, &i).unwrap().spec;
    let PodJob { job, items, .. } = to_job(&w, &settings()).unwrap();
    assert!(!serde_json::to_string(&job).unwrap().contains("pull-s3cr3t"));
    let private = &job.task_groups[0].tasks[0];
    assert_eq!(
        private.config["auth"],
        json!([{"username": "${VK_REGISTRY_USERNAME}", "password": "${VK_REGISTRY_PASSWORD}",
                    "server_address": "127.0.0.1:5000"}])
    );
    let env = &private.templates[0];
    assert!(env.envvars && env.dest_path == "secrets/vk-env");
    assert!(
        env.embedded_tmpl.contains("VK_REGISTRY_USERNAME=")
            && env.embedded_tmpl.contains("VK_REGISTRY_PASSWORD=")
    );
    assert!(
        items.values().any(|v| v == "\"pull-s3cr3t\"") && items.values().any(|v| v == "\"puller\"")
    );
    let public = &job.task_groups[0].tasks[1];
    assert!(!public.config.contains_key("auth") && public.templates.is_empty());
}

#[test]
fn secret_and_runtime_values_never_enter_the_job() {
    let spec = json!({
        "enableServiceLinks": false,
        "containers": [{
            "name": "app", "image": "i", "command": ["run", "--pass=$(PASS)", "--ip=$(IP)", "--mode=$(MODE)"],
            "env": [
                {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "mode"}}},
                {"name": "PASS", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
                {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "DSN", "value": "u:$(PASS)@$(IP)"},
                {"name": "LITERAL", "value": "cost ${5}"}
            ]
        }]
    });
    let PodJob { job, items, .. } = translate(json!({}), spec).unwrap();
    let text = serde_json::to_string(&job).unwrap();
    assert!(!text.contains("s3cr3t"), "{text}");
    let t = &job.task_groups[0].tasks[0];
    assert_eq!(t.env.get("MODE").map(String::as_str), Some("fast"));
    assert!(
        !t.env.contains_key("PASS") && !t.env.contains_key("IP") && !t.env.contains_key("LITERAL")
    );
    assert_eq!(
        t.config["entrypoint"],
        json!(["run", "--pass=${PASS}", "--ip=${IP}", "--mode=fast"])
    );
    let env = t.templates.iter().find(|t| t.envvars).unwrap();
    assert_eq!((env.change_mode.as_str(), env.dest_path.as_str()), ("noop", "secrets/vk-env"));
    let lines: Vec<&str> = env.embedded_tmpl.lines().collect();
    assert_eq!(lines.len(), 6, "{}", env.embedded_tmpl);
    assert_eq!(lines[0], "⟦ with nomadVar \"nomad/jobs/k8s-team-a_web\" ⟧");
    let k = |var: &str, n: usize| format!("e_{}", fnv(&["app", var, &n.to_string()]));
    assert_eq!(
        lines[1],
        format!("PASS=⟦ print ((index . \"{}\").Value | parseJSON) | toJSON ⟧", k("PASS", 0))
    );
    assert_eq!(lines[2], "IP=⟦ print (env \"attr.unique.network.ip-address\") | toJSON ⟧");
    assert_eq!(
        lines[3],
        format!(
            "DSN=⟦ print ((index . \"{}\").Value | parseJSON) (env \"attr.unique.network.ip-address\") | toJSON ⟧",
            k("DSN", 0)
        )
    );
    assert_eq!(lines[5], "⟦ end ⟧");
    // JSON strings: Nomad's env file parser reads each item back exactly.
    assert_eq!(items[&k("PASS", 0)], r#""s3cr3t\"$x\n""#);
    assert_eq!(items[&k("DSN", 0)], r#""u:s3cr3t\"$x\n@""#);
    assert_eq!(items[&k("LITERAL", 0)], r#""cost ${5}""#);
    assert!(t.secrets.is_empty(), "no secret block without a name the env file refuses");
}

/// A variable holding Secret data under a name Nomad's env file parser refuses (`data-1`, as
/// `envFrom` makes from a Secret's keys) is the task's `Env`, interpolated by Nomad from the
/// task's `secret` block over the pod's Variable; every item of that Variable is then a line
/// the parser reads.
#[test]
fn secret_variables_with_dashed_names_come_from_the_secret_block() {
    let mut inputs = Inputs::default();
    let data = BTreeMap::from([("data-1".to_owned(), b"value-1\n".to_vec())]);
    inputs.secrets.insert("creds".into(), Some(data));
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "team-a", "uid": "u1"},
        "spec": {"nodeName": "vk", "containers": [{"name": "app", "image": "busybox",
            "envFrom": [{"secretRef": {"name": "creds"}},
                        {"prefix": "p-", "secretRef": {"name": "creds"}}],
            "env": [{"name": "MY_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    {"name": "ip-and-secret", "value": "$(data-1)@$(MY_IP)"}],
            "volumeMounts": [{"name": "cfg", "mountPath": "/etc/cfg"}]}],
            "volumes": [{"name": "cfg", "secret": {"secretName": "creds"}}]}
    }))
    .unwrap();
    let w = WorkloadSpec::from_pod(&pod, &inputs).unwrap().spec;
    let PodJob { job, items, .. } = to_job(&w, &settings()).unwrap();
    let text = serde_json::to_string(&job).unwrap();
    assert!(!text.contains("value-1"), "{text}");
    let t = &job.task_groups[0].tasks[0];
    assert_eq!(
        t.secrets,
        [Secret {
            name: "vk".into(),
            provider: "nomad".into(),
            path: "nomad/jobs/k8s-team-a_web".into()
        }]
    );
    let k = |var: &str, n: usize| format!("e_{}", fnv(&["app", var, &n.to_string()]));
    assert_eq!(t.env["data-1"], format!("${{secret.vk.{}}}", k("data-1", 0)));
    assert_eq!(t.env["p-data-1"], format!("${{secret.vk.{}}}", k("p-data-1", 0)));
    assert_eq!(
        t.env["ip-and-secret"],
        format!("${{secret.vk.{}}}${{attr.unique.network.ip-address}}", k("ip-and-secret", 0))
    );
    assert_eq!(items[&k("data-1", 0)], r#""value-1\n""#);
    assert_eq!(items[&k("ip-and-secret", 0)], r#""value-1\n@""#);
    // MY_IP is an env file line as before.
    let env = t.templates.iter().find(|t| t.envvars).unwrap();
    assert!(env.embedded_tmpl.starts_with("MY_IP=⟦ print (env "), "{}", env.embedded_tmpl);
    // Every item is a line `go-envparse` reads: keys of [A-Za-z0-9_], values base64 or JSON.
    for (key, value) in &items {
        assert!(key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "{key}");
        let json = serde_json::from_str::<String>(value).is_ok();
        let base64 = base64::engine::general_purpose::STANDARD.decode(value).is_ok();
        assert!(json || base64, "{key}={value}");
    }
}
