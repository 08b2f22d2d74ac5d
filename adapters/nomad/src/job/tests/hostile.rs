//! The hostile corpus: refused naming each field, or reaching the task as written.

use super::*;

/// The settings of the node the hostile corpus runs on end to end: raw_exec, datacenter
/// dc1, and nothing allowed beyond.
fn hostile_node() -> JobSettings {
    JobSettings { default_driver: "raw_exec".into(), datacenters: vec!["dc1".into()], ..settings() }
}

fn hostile_corpus() -> serde_json::Value {
    serde_json::from_str(include_str!("../../../../../tests/corpus/hostile.json")).unwrap()
}

/// A hostile corpus case as the app hands it on: translated (refusals of the domain), probe
/// hosts checked against the default policy, then made a job. A refusal is (the pod's status
/// reason, its message): `ProviderFailed` with `<field>: <reason>`, a kubelet rejection with
/// its reason, or `CreateContainerConfigError`.
fn hostile_translate(
    case: &serde_json::Value,
    inputs: &Inputs,
) -> Result<PodJob, (String, String)> {
    use vk_domain::workload::Refusal;
    let failed = |u: Unsupported| ("ProviderFailed".to_owned(), u.to_string());
    let mut container = json!({"name": "main", "image": "busybox", "command": ["sleep", "3600"]});
    for (k, v) in case["container"].as_object().into_iter().flatten() {
        container[k] = v.clone();
    }
    let mut spec = json!({"containers": [container]});
    for (k, v) in case["spec"].as_object().into_iter().flatten() {
        spec[k] = v.clone();
    }
    let p = pod_json(case.get("annotations").cloned().unwrap_or(json!({})), spec);
    let w = match WorkloadSpec::from_pod(&p, inputs) {
        Ok(t) => t.spec,
        Err(Refusal::Unsupported(u)) => return Err(failed(u)),
        Err(Refusal::Rejected(r)) => return Err((r.reason.to_owned(), r.message)),
        Err(Refusal::Missing(m)) => {
            return Err(("CreateContainerConfigError".into(), m.message));
        }
    };
    vk_domain::policy::check_probes(&w, &Default::default()).map_err(failed)?;
    to_job(&w, &hostile_node()).map_err(failed)
}

/// Every refusal of `tests/corpus/hostile.json` names its field and says why; nothing of it
/// would reach Nomad (the error comes before any request).
#[test]
fn the_hostile_corpus_is_refused_naming_each_field() {
    let corpus = hostile_corpus();
    let cases = corpus["refused"].as_array().unwrap();
    assert!(cases.len() >= 40, "{}", cases.len());
    let mut inputs = inputs();
    // A node of a few machines, as the end-to-end stack's.
    inputs.node_allocatable = vk_domain::node::NodeCapacity {
        cpu_millis: 16_000,
        memory_bytes: 64 << 30,
        ephemeral_storage_bytes: 1 << 40,
        pods: None,
        ..Default::default()
    };
    for case in cases {
        let name = case["case"].as_str().unwrap();
        let (reason, text) = hostile_translate(case, &inputs).map(|_| ()).expect_err(name);
        assert_eq!(reason, case["reason"].as_str().unwrap_or("ProviderFailed"), "{name}: {text}");
        let field = case["field"].as_str().unwrap();
        assert!(text.starts_with(&format!("{field}: ")) || field.is_empty(), "{name}: {text}");
        let want = case["message"].as_str().unwrap();
        assert!(text.contains(want), "{name}: {text} lacks {want:?}");
    }
}

/// Every `verbatim` case of the corpus: what Nomad makes of the job's arguments (HCL2
/// evaluation, with the task's environment) is the text the pod wrote.
#[test]
fn the_hostile_corpus_reaches_the_task_as_written() {
    let corpus = hostile_corpus();
    let mut inputs = inputs();
    inputs
        .secrets
        .insert("creds".into(), Some([("password".to_owned(), b"s3cr3t".to_vec())].into()));
    for case in corpus["verbatim"].as_array().unwrap() {
        let name = case["case"].as_str().unwrap();
        let mut env = Vec::new();
        for (k, v) in case["env"].as_object().into_iter().flatten() {
            env.push(json!({"name": k, "value": v}));
        }
        for (k, key) in case["secret_env"].as_object().into_iter().flatten() {
            env.push(
                json!({"name": k, "valueFrom": {"secretKeyRef": {"name": "creds", "key": key}}}),
            );
        }
        let args: Vec<serde_json::Value> = std::iter::once(json!("%s\n"))
            .chain(case["args"].as_array().unwrap().iter().cloned())
            .collect();
        let c = json!({"container": {"command": ["printf"], "args": args, "env": env}});
        let job = hostile_translate(&c, &inputs).unwrap_or_else(|e| panic!("{name}: {e:?}")).job;
        let t = job_task(&job);
        let mut vars: Vec<(String, String)> = t.env.clone().into_iter().collect();
        vars.push(("PASS".into(), "s3cr3t".into()));
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let got: Vec<String> = serde_json::from_value::<Vec<String>>(t.config["args"].clone())
            .unwrap()
            .iter()
            .skip(1)
            .map(|a| nomad_reads(a, &vars))
            .collect();
        let want: Vec<&str> =
            case["output"].as_array().unwrap().iter().map(|l| l.as_str().unwrap()).collect();
        assert_eq!(got.join("\n"), want.join("\n"), "{name}");
    }
}
