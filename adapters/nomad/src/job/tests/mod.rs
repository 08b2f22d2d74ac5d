//! Tests of the pod-to-job translation, by concern; the fixtures they share are here.

mod env;
mod hostile;
mod id;
mod interpolate;
mod placement;
mod security;
mod translation;
mod volumes;

use base64::Engine as _;
use serde_json::{Value, json};
use vk_domain::inputs::Inputs;
use vk_domain::k8s_openapi::api::core::v1::Pod;

use super::id::{fnv, raw_job_id};
use super::internal::{
    BUNDLES_ENV, FILES_SCRIPT, FS_GROUP_ENV, HOST_ALIASES_ENV, SECRET_BUNDLES_ENV, UNPACK_FN,
    VOLUMES_SCRIPT, WAIT_FILES_ENV, bundle,
};
use super::*;
use crate::api::{Secret, Task};
use crate::policy::NomadGrant;
use vk_domain::pod::PodKey;

fn settings() -> JobSettings {
    JobSettings {
        prefix: "k8s-".into(),
        node_name: "vk".into(),
        namespace: None,
        region: None,
        datacenters: vec!["*".into()],
        node_pool: None,
        default_driver: "docker".into(),
        driver_annotation: "virtual-kubelet.io/nomad-driver".into(),
        mhz_per_core: 2000,
        policy: std::sync::Arc::new(NomadPolicy::default()),
        seccomp_profile_root: "/var/lib/kubelet/seccomp".into(),
        volume_setup_image: None,
    }
}

fn pod_json(annotations: serde_json::Value, spec: serde_json::Value) -> Pod {
    vk_domain::testing::pod("web")
        .namespace("team-a")
        .uid("uid-1")
        .metadata(json!({"annotations": annotations}))
        .spec(spec)
        .build()
}

fn inputs() -> Inputs {
    let mut i = Inputs::default();
    let data = |pairs: &[(&str, &str)]| {
        Some(pairs.iter().map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec())).collect())
    };
    i.config_maps.insert("cfg".into(), data(&[("mode", "fast")]));
    i.secrets.insert("creds".into(), data(&[("password", "s3cr3t\"$x\n")]));
    i
}

fn translate(
    annotations: serde_json::Value,
    spec: serde_json::Value,
) -> Result<PodJob, Unsupported> {
    translate_with(&settings(), annotations, spec)
}

fn translate_with(
    s: &JobSettings,
    annotations: serde_json::Value,
    spec: serde_json::Value,
) -> Result<PodJob, Unsupported> {
    let p = pod_json(annotations, spec);
    let w = WorkloadSpec::from_pod(&p, &inputs()).unwrap().spec;
    to_job(&w, s)
}

/// Settings whose policy lets pods choose what the placement tests choose.
fn permissive() -> JobSettings {
    let owned = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    JobSettings {
        policy: std::sync::Arc::new(NomadPolicy {
            base: NomadGrant {
                drivers: owned(&["raw_exec", "exec", "docker"]),
                namespaces: owned(&["apps"]),
                regions: owned(&["eu-west"]),
                node_pools: owned(&["gpu"]),
                network_modes: owned(&["bridge", "cni/mynet"]),
                datacenters: owned(&["*"]),
                max_priority: Some(100),
            },
            rules: Vec::new(),
        }),
        ..settings()
    }
}

fn translate_permissive(
    annotations: serde_json::Value,
    spec: serde_json::Value,
) -> Result<PodJob, Unsupported> {
    translate_with(&permissive(), annotations, spec)
}

fn web(restart: &str) -> serde_json::Value {
    json!({
        "restartPolicy": restart,
        "terminationGracePeriodSeconds": 7,
        "enableServiceLinks": false,
        "containers": [{
            "name": "main", "image": "nginx:1", "command": ["nginx"], "args": ["-g", "daemon off;"],
            "workingDir": "/srv",
            "env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}],
            "ports": [{"name": "http", "containerPort": 80}],
            "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"cpu": "1", "memory": "128Mi"}}
        }]
    })
}

/// What Nomad makes of a driver configuration string: HCL2 template evaluation (`hcl-rs`,
/// an implementation independent of ours) with the task's environment as variables.
fn nomad_reads(template: &str, vars: &[(&str, &str)]) -> String {
    use hcl::eval::{Context, Evaluate as _};
    let t: hcl::template::Template =
        template.parse().unwrap_or_else(|e| panic!("{template:?} does not parse: {e}"));
    let mut ctx = Context::new();
    for (k, v) in vars {
        ctx.declare_var(*k, *v);
    }
    // What a leak would look like: node attributes Nomad offers to templates.
    ctx.declare_var("attr", hcl::value!({ "unique" = { "hostname" = "NODE-HOSTNAME" } }));
    t.evaluate(&ctx).unwrap_or_else(|e| panic!("{template:?} does not evaluate: {e}"))
}

fn job_task(job: &Job) -> Task {
    job.task_groups[0].tasks[0].clone()
}
