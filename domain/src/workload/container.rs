//! One container of the pod as a backend runs it ([`ContainerSpec`]): its image checked, its
//! security context merged, its environment, command and arguments resolved, its ports,
//! resources, mounts and probes read, and the login for its image's registry found.

use k8s_openapi::api::core::v1::{Container, Pod};

use super::Refusal;
use super::ports::{self, PortSpec};
use super::resources::{self, Resources};
use crate::env::{self, EnvVar, Value};
use crate::error::{Missing, Notice, Unsupported};
use crate::inputs::{self, Inputs};
use crate::lifecycle::{self, Hooks};
use crate::pod;
use crate::probe::{self, Probe};
use crate::security::{self, Security};
use crate::volume::{self, Mount, Volume};

/// One container of the pod.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ContainerSpec {
    /// `name`.
    pub name: String,
    /// `image`.
    pub image: String,
    /// `command`, `$(VAR)` expanded (the image's entrypoint when empty).
    pub command: Vec<Value>,
    /// `args`, `$(VAR)` expanded (the image's cmd when empty).
    pub args: Vec<Value>,
    /// `workingDir`.
    pub working_dir: Option<String>,
    /// The final environment, in the kubelet's order (service links, `envFrom`, `env`).
    pub env: Vec<EnvVar>,
    /// `ports`.
    pub ports: Vec<PortSpec>,
    /// `resources`.
    pub resources: Resources,
    /// `volumeMounts`.
    pub mounts: Vec<Mount>,
    /// The pod's and the container's `securityContext`, merged as the kubelet merges them.
    pub security: Security,
    /// An init container with `restartPolicy: Always` (a native sidecar).
    pub sidecar: bool,
    /// `imagePullPolicy: Always`: the image is pulled at every start (the API server sets it for
    /// untagged and `:latest` images when the pod leaves it out). `IfNotPresent` and `Never` pull
    /// a missing image only.
    pub pull_always: bool,
    /// The login for the image's registry from the pod's `imagePullSecrets`, matched as the
    /// kubelet matches them ([`crate::registry::credentials_for`]); `None` when none matches.
    pub registry_auth: Option<crate::registry::RegistryAuth>,
    /// `readinessProbe`, run by the virtual kubelet.
    pub readiness: Option<Probe>,
    /// `livenessProbe`, run by the virtual kubelet.
    pub liveness: Option<Probe>,
    /// `startupProbe`, run by the virtual kubelet.
    pub startup: Option<Probe>,
    /// `terminationMessagePath` (absolute; the API server defaults it to
    /// `/dev/termination-log`): the file whose content, at most 4096 bytes, becomes the message
    /// of the container's `terminated` state. `None` when the pod leaves it empty.
    pub termination_message_path: Option<String>,
    /// `terminationMessagePolicy: FallbackToLogsOnError`: a container that failed with an empty
    /// message file gets the end of its log instead (80 lines, 2048 bytes at most).
    pub termination_fallback_to_logs: bool,
    /// `lifecycle`: the postStart and preStop hooks (run by the virtual kubelet) and the stop
    /// signal (the backend's).
    pub hooks: Hooks,
    /// `stdin: true` (`kubectl run -i`): the container's process reads what `kubectl attach -i`
    /// sends. `None` for a container without stdin.
    pub interactive: Option<Interactive>,
}

/// How an interactive container (`stdin: true`) takes its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interactive {
    /// `stdinOnce`: stdin closes when the first attach session ends (what `kubectl run -i` asks).
    pub stdin_once: bool,
    /// `tty`: the process has a terminal.
    pub tty: bool,
}

/// Container `c` of `pod` (at path `field`; `init`: an init container) as a backend runs it,
/// resolved against `inputs` and the pod's resolved `volumes`; the Warning events its
/// environment calls for are added to `notices`.
///
/// # Errors
/// The [`Refusal`]s of [`super::WorkloadSpec::from_pod`] that concern one container, naming its
/// field.
pub(super) fn container(
    pod: &Pod,
    field: &str,
    c: &Container,
    init: bool,
    inputs: &Inputs,
    volumes: &[Volume],
    notices: &mut Vec<Notice>,
) -> Result<ContainerSpec, Refusal> {
    let image = image(field, c)?;
    if c.name.is_empty() {
        return Err(Unsupported::new(format!("{field}.name"), "the container has no name").into());
    }
    let sidecar = sidecar(field, c, init)?;
    check_container(field, c)?;
    let pod_sc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let security = security::merge(pod_sc, c.security_context.as_ref(), field)?;
    verify_run_as_non_root(pod, c, &security)?;
    let env = inputs::container_env(pod, field, c, inputs, notices)?;
    let expand_all = |list: &Option<Vec<String>>| {
        list.iter().flatten().map(|a| env::expand_arg(a, &env)).collect::<Vec<Value>>()
    };
    let command = expand_all(&c.command);
    let args = expand_all(&c.args);
    let ports = ports::ports(field, c)?;
    let resources = resources::resources(field, c)?;
    let mounts = volume::mounts(
        field,
        c.volume_mounts.as_deref(),
        c.volume_devices.as_ref().is_some_and(|v| !v.is_empty()),
        volumes,
        &env,
        &c.name,
    )?;
    let probe = |name: &str, p: &Option<k8s_openapi::api::core::v1::Probe>, kind| {
        p.as_ref().map(|p| probe::parse(&format!("{field}.{name}"), p, c, kind)).transpose()
    };
    let readiness = probe("readinessProbe", &c.readiness_probe, probe::Kind::Readiness)?;
    let liveness = probe("livenessProbe", &c.liveness_probe, probe::Kind::Liveness)?;
    let startup = probe("startupProbe", &c.startup_probe, probe::Kind::Startup)?;
    let registry_auth = crate::registry::credentials_for(&image, &pull_entries(pod, inputs));
    let termination_message_path = termination_message_path(field, c)?;
    let hooks = lifecycle::parse(&format!("{field}.lifecycle"), c)?;
    let interactive = (c.stdin == Some(true))
        .then(|| Interactive { stdin_once: c.stdin_once == Some(true), tty: c.tty == Some(true) });
    Ok(ContainerSpec {
        hooks,
        interactive,
        name: c.name.clone(),
        image,
        registry_auth,
        readiness,
        liveness,
        startup,
        command,
        args,
        working_dir: c.working_dir.clone().filter(|w| !w.is_empty()),
        env,
        ports,
        resources,
        mounts,
        security,
        sidecar,
        pull_always: c.image_pull_policy.as_deref() == Some("Always"),
        termination_message_path,
        termination_fallback_to_logs: c.termination_message_policy.as_deref()
            == Some("FallbackToLogsOnError"),
    })
}

/// The image of container `c`, checked against the reference grammar.
///
/// # Errors
/// [`Unsupported`] on `field.image` when it is empty or not a valid image reference.
fn image(field: &str, c: &Container) -> Result<String, Unsupported> {
    let image = c.image.clone().filter(|i| !i.trim().is_empty());
    let image = image.ok_or_else(|| Unsupported::new(format!("{field}.image"), "no image"))?;
    // The kubelet's InvalidImageName: a reference that does not parse never reaches a runtime
    // (nor a backend's configuration, where `${...}` could be interpolated).
    crate::image::check_reference(&image).map_err(|why| {
        Unsupported::new(
            format!("{field}.image"),
            format!("{image:?} is not a valid image reference: {why}"),
        )
    })?;
    Ok(image)
}

/// Whether container `c` is a native sidecar: an init container (`init`) with
/// `restartPolicy: Always`.
///
/// # Errors
/// [`Unsupported`] on `field.restartPolicy` for any other restart policy, or one on an app
/// container.
fn sidecar(field: &str, c: &Container, init: bool) -> Result<bool, Unsupported> {
    match c.restart_policy.as_deref() {
        None => Ok(false),
        Some("Always") if init => Ok(true),
        Some(other) => Err(Unsupported::new(
            format!("{field}.restartPolicy"),
            format!("{other:?} is not allowed here (only \"Always\", on an init container)"),
        )),
    }
}

/// Refuses the container fields no backend can honour yet: a `resizePolicy`,
/// `restartPolicyRules`.
///
/// # Errors
/// [`Unsupported`] on the first such field set, "not supported yet".
fn check_container(field: &str, c: &Container) -> Result<(), Unsupported> {
    let unsupported = [
        ("resizePolicy", c.resize_policy.as_ref().is_some_and(|v| !v.is_empty())),
        ("restartPolicyRules", c.restart_policy_rules.as_ref().is_some_and(|v| !v.is_empty())),
    ];
    if let Some((name, _)) = unsupported.iter().find(|(_, set)| *set) {
        return Err(Unsupported::new(format!("{field}.{name}"), "not supported yet"));
    }
    Ok(())
}

/// The kubelet's `verifyRunAsNonRoot` of container `c` with its merged `security`.
///
/// # Errors
/// [`Missing`] (Event reason `Failed`) when `runAsNonRoot` meets an explicit `runAsUser: 0`: the
/// container is not created, and waits in `CreateContainerConfigError` with the kubelet's message.
fn verify_run_as_non_root(pod: &Pod, c: &Container, security: &Security) -> Result<(), Missing> {
    if security.run_as_non_root && security.run_as_user == Some(0) {
        let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        return Err(Missing::new(
            "Failed",
            format!(
                "container's runAsUser breaks non-root policy (pod: \"{name}_{ns}({})\", container: {})",
                pod::uid(pod),
                c.name
            ),
        ));
    }
    Ok(())
}

/// `terminationMessagePath` of container `c`; `None` when empty.
///
/// # Errors
/// [`Unsupported`] on `field.terminationMessagePath` for a relative path.
fn termination_message_path(field: &str, c: &Container) -> Result<Option<String>, Unsupported> {
    let path = c.termination_message_path.clone().filter(|p| !p.is_empty());
    if let Some(p) = path.as_ref().filter(|p| !p.starts_with('/')) {
        return Err(Unsupported::new(
            format!("{field}.terminationMessagePath"),
            format!("{p:?} is not an absolute path"),
        ));
    }
    Ok(path)
}

/// The docker config entries of the pod's `imagePullSecrets`, in order. A Secret that is missing
/// or holds no docker config is passed over, as the kubelet passes it over (the pull may then
/// fail with the registry's answer).
fn pull_entries(pod: &Pod, inputs: &Inputs) -> Vec<crate::registry::ConfigEntry> {
    let names = pod.spec.iter().flat_map(|s| s.image_pull_secrets.iter().flatten());
    names
        .filter_map(|r| inputs.secrets.get(&r.name).cloned().flatten())
        .filter_map(|data| crate::registry::parse_config(&data).ok())
        .flatten()
        .collect()
}
