//! A container's security context per driver: the docker driver's options, and what the
//! exec-style drivers can honour; what a driver cannot honour is refused, naming the field.

use serde_json::{Map, Value, json};
use vk_domain::error::Unsupported;
use vk_domain::security::{Profile, Security};

use super::driver::Driver;
use super::interpolate::hcl_text;

/// A capability as Nomad's drivers take it: `NET_ADMIN` or `CAP_NET_ADMIN` becomes `net_admin`,
/// `ALL` becomes `all`.
fn capability(field: &str, c: &str) -> Result<String, Unsupported> {
    let name = c.strip_prefix("CAP_").unwrap_or(c);
    if name.is_empty() || !name.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_') {
        return Err(Unsupported::new(field.to_owned(), format!("{c:?} is not a capability name")));
    }
    Ok(name.to_ascii_lowercase())
}

/// The container's security context on the docker driver (Nomad's `drivers/docker` options):
/// `privileged`, `cap_add`/`cap_drop`, `readonly_rootfs`, `security_opt` (`no-new-privileges`,
/// `seccomp=unconfined` or `seccomp=<root>/<localhostProfile>` (a file the Nomad client reads),
/// `apparmor=unconfined` or `apparmor=<profile>`, `label=user:...` and friends for SELinux), and
/// `group_add` for `supplementalGroups` and `fsGroup`, `sysctl` for the pod's (safe) sysctls. `seccompProfile` unset or
/// `RuntimeDefault` keeps Docker's default profile (stricter than the kubelet's default,
/// `Unconfined`); `appArmorProfile` unset or `RuntimeDefault` keeps Docker's `docker-default`.
/// Returns the task's `user` (`uid[:gid]`).
///
/// Refused: `runAsNonRoot` without a non-zero `runAsUser` (the image's user is not known here, so
/// it cannot be checked), `runAsGroup` without `runAsUser`, `procMount: Unmasked`,
/// `supplementalGroupsPolicy: Strict` (Docker adds the image's groups).
pub(super) fn docker_security(
    field: &str,
    sec: &Security,
    seccomp_root: &str,
    config: &mut Map<String, Value>,
) -> Result<String, Unsupported> {
    let f = |name: &str| format!("{field}.securityContext.{name}");
    common_refusals(field, sec)?;
    if sec.supplemental_groups_strict {
        return Err(Unsupported::new(
            "spec.securityContext.supplementalGroupsPolicy",
            "Strict cannot be honoured by the docker driver, which adds the groups of the image's user",
        ));
    }
    if sec.privileged {
        config.insert("privileged".into(), json!(true));
    }
    for (key, name, caps) in [
        ("cap_add", "capabilities.add", &sec.capabilities_add),
        ("cap_drop", "capabilities.drop", &sec.capabilities_drop),
    ] {
        if !caps.is_empty() {
            let list =
                caps.iter().map(|c| capability(&f(name), c)).collect::<Result<Vec<_>, _>>()?;
            config.insert(key.into(), json!(list));
        }
    }
    if sec.read_only_root_filesystem {
        config.insert("readonly_rootfs".into(), json!(true));
    }
    let mut opts = Vec::new();
    if sec.allow_privilege_escalation == Some(false) {
        opts.push("no-new-privileges".to_owned());
    }
    match &sec.seccomp {
        None | Some(Profile::RuntimeDefault) => {}
        Some(Profile::Unconfined) => opts.push("seccomp=unconfined".into()),
        Some(Profile::Localhost(p)) => {
            opts.push(format!("seccomp={}/{p}", seccomp_root.trim_end_matches('/')));
        }
    }
    match &sec.app_armor {
        None | Some(Profile::RuntimeDefault) => {}
        Some(Profile::Unconfined) => opts.push("apparmor=unconfined".into()),
        Some(Profile::Localhost(p)) => opts.push(format!("apparmor={p}")),
    }
    if let Some(l) = &sec.se_linux {
        for (part, v) in
            [("user", &l.user), ("role", &l.role), ("type", &l.type_), ("level", &l.level)]
        {
            if let Some(v) = v {
                opts.push(format!("label={part}:{v}"));
            }
        }
    }
    if !opts.is_empty() {
        config.insert(
            "security_opt".into(),
            json!(opts.iter().map(|o| hcl_text(o)).collect::<Vec<_>>()),
        );
    }
    let mut groups: Vec<String> = sec.supplemental_groups.iter().map(ToString::to_string).collect();
    if let Some(g) = sec.fs_group.map(|g| g.to_string()).filter(|g| !groups.contains(g)) {
        groups.push(g);
    }
    if !groups.is_empty() {
        config.insert("group_add".into(), json!(groups));
    }
    // Safe sysctls only reach here (the domain's admission rejects the others).
    if !sec.sysctls.is_empty() {
        let map: Map<String, Value> = sec
            .sysctls
            .iter()
            .map(|(k, v)| (vk_domain::workload::sysctl_name(k), json!(hcl_text(v))))
            .collect();
        config.insert("sysctl".into(), json!([map]));
    }
    if sec.run_as_non_root && sec.run_as_user.is_none_or(|u| u <= 0) {
        return Err(Unsupported::new(
            sec.field("runAsNonRoot", field),
            "runAsNonRoot cannot be verified against the image's user here; set runAsUser to a non-zero uid",
        ));
    }
    match (sec.run_as_user, sec.run_as_group) {
        (Some(u), Some(g)) => Ok(format!("{u}:{g}")),
        (Some(u), None) => Ok(u.to_string()),
        (None, Some(_)) => Err(Unsupported::new(
            sec.field("runAsGroup", field),
            "runAsGroup without runAsUser cannot be given to the docker driver",
        )),
        (None, None) => Ok(String::new()),
    }
}

/// What no driver here can honour.
fn common_refusals(field: &str, sec: &Security) -> Result<(), Unsupported> {
    if sec.proc_mount_unmasked {
        return Err(Unsupported::new(
            format!("{field}.securityContext.procMount"),
            "Unmasked cannot be honoured by Nomad's drivers",
        ));
    }
    Ok(())
}

/// The container's security context on the exec-style drivers, which run the command directly
/// (`raw_exec`: on the host, as the Nomad agent's user unless `runAsUser` says otherwise; `exec`:
/// in a chroot with its own namespaces). What they cannot honour is refused, naming the field:
/// `privileged`, `runAsGroup`, a `runAsUser` other than 0 and 65534 (they take a user name),
/// `runAsNonRoot` without `runAsUser: 65534`, capabilities on `raw_exec` (on `exec`: `cap_add` and
/// `cap_drop`), `readOnlyRootFilesystem`, `allowPrivilegeEscalation: false`, a seccomp or AppArmor
/// profile other than `Unconfined`, `seLinuxOptions`, `supplementalGroups`, `fsGroup` and
/// `sysctls`.
/// Returns the task's `user`.
pub(super) fn exec_security(
    field: &str,
    driver: Driver,
    sec: &Security,
    config: &mut Map<String, Value>,
) -> Result<String, Unsupported> {
    let f = |name: &str| format!("{field}.securityContext.{name}");
    let refuse = |name: String, what: &str| {
        Err(Unsupported::new(
            name,
            format!(
                "{what} cannot be honoured by the {driver} driver (the docker driver honours it)"
            ),
        ))
    };
    common_refusals(field, sec)?;
    if sec.privileged {
        return refuse(f("privileged"), "a privileged container");
    }
    if sec.run_as_group.is_some() {
        return Err(Unsupported::new(
            sec.field("runAsGroup", field),
            format!(
                "the {driver} driver runs a task with its user's primary group; runAsGroup cannot be honoured"
            ),
        ));
    }
    for (key, name, caps) in [
        ("cap_add", "capabilities.add", &sec.capabilities_add),
        ("cap_drop", "capabilities.drop", &sec.capabilities_drop),
    ] {
        if caps.is_empty() {
            continue;
        }
        if !driver.takes_capabilities() {
            return refuse(f(name), "a capability set");
        }
        let list = caps.iter().map(|c| capability(&f(name), c)).collect::<Result<Vec<_>, _>>()?;
        config.insert(key.into(), json!(list));
    }
    if sec.read_only_root_filesystem {
        return refuse(f("readOnlyRootFilesystem"), "a read-only root filesystem");
    }
    if sec.allow_privilege_escalation == Some(false) {
        return refuse(
            f("allowPrivilegeEscalation"),
            "no_new_privs (allowPrivilegeEscalation: false)",
        );
    }
    if sec.seccomp.as_ref().is_some_and(|p| *p != Profile::Unconfined) {
        return refuse(sec.field("seccompProfile", field), "a seccomp profile");
    }
    if sec.app_armor.as_ref().is_some_and(|p| *p != Profile::Unconfined) {
        return refuse(sec.field("appArmorProfile", field), "an AppArmor profile");
    }
    if sec.se_linux.is_some() {
        return refuse(sec.field("seLinuxOptions", field), "an SELinux label");
    }
    if !sec.supplemental_groups.is_empty() || sec.supplemental_groups_strict {
        return refuse("spec.securityContext.supplementalGroups".into(), "supplementary groups");
    }
    if sec.fs_group.is_some() {
        return refuse("spec.securityContext.fsGroup".into(), "fsGroup");
    }
    if !sec.sysctls.is_empty() {
        return refuse("spec.securityContext.sysctls".into(), "a pod sysctl");
    }
    // These drivers look the user up by name on the client (a uid is refused): only the two uids
    // with a name on every Linux system can be given.
    let user = match sec.run_as_user {
        None => String::new(),
        Some(0) => "root".into(),
        Some(65534) => "nobody".into(),
        Some(u) => {
            return Err(Unsupported::new(
                sec.field("runAsUser", field),
                format!(
                    "the {driver} driver takes a user name, and uid {u} has no name known on every Nomad client (0 and 65534 do; the docker driver takes any uid)"
                ),
            ));
        }
    };
    if sec.run_as_non_root && user != "nobody" {
        return Err(Unsupported::new(
            sec.field("runAsNonRoot", field),
            format!(
                "without runAsUser the {driver} driver runs the task as the Nomad agent's user, which may be root; set runAsUser: 65534"
            ),
        ));
    }
    Ok(user)
}
