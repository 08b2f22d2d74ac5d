//! A container's security settings as the kubelet applies them: the pod's and the container's
//! `securityContext` merged (`pkg/securitycontext`, `DetermineEffectiveSecurityContext`), checked,
//! and kept whole so that a backend can honour each field or refuse it, never ignore it.
//!
//! Merge rules (the kubelet's): `runAsUser`, `runAsGroup`, `runAsNonRoot`, `seLinuxOptions`,
//! `seccompProfile` and `appArmorProfile` are taken from the container when it sets them, else
//! from the pod; `capabilities`, `privileged`, `readOnlyRootFilesystem`,
//! `allowPrivilegeEscalation` and `procMount` exist on the container only; `fsGroup`,
//! `supplementalGroups`, `supplementalGroupsPolicy` and `sysctls` on the pod only.
//! `windowsOptions` is ignored, as a Linux kubelet ignores it.

use k8s_openapi::api::core::v1::{
    AppArmorProfile, PodSecurityContext, SELinuxOptions, SeccompProfile, SecurityContext,
};

use crate::error::Unsupported;

/// A seccomp or AppArmor profile (`seccompProfile`, `appArmorProfile`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Profile {
    /// `RuntimeDefault`: the container runtime's default profile.
    RuntimeDefault,
    /// `Unconfined`: no profile.
    Unconfined,
    /// `Localhost`: a profile the node holds; for seccomp a file path relative to the node's
    /// profile directory (no `..`), for AppArmor a loaded profile's name.
    Localhost(String),
}

/// `seLinuxOptions`: the SELinux context's parts, each optional.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SeLinux {
    /// `user`.
    pub user: Option<String>,
    /// `role`.
    pub role: Option<String>,
    /// `type`.
    pub type_: Option<String>,
    /// `level`.
    pub level: Option<String>,
}

/// The security settings one container runs with (the merged `securityContext`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Security {
    /// `runAsUser`: the uid, 0 or more.
    pub run_as_user: Option<i64>,
    /// `runAsGroup`: the primary gid, 0 or more.
    pub run_as_group: Option<i64>,
    /// `runAsNonRoot`: the container must not run as uid 0.
    pub run_as_non_root: bool,
    /// `privileged`.
    pub privileged: bool,
    /// `allowPrivilegeEscalation`; `Some(false)` asks for the `no_new_privs` flag.
    pub allow_privilege_escalation: Option<bool>,
    /// `readOnlyRootFilesystem`.
    pub read_only_root_filesystem: bool,
    /// `capabilities.add`, as written (`NET_ADMIN`, `ALL`).
    pub capabilities_add: Vec<String>,
    /// `capabilities.drop`, as written.
    pub capabilities_drop: Vec<String>,
    /// `seccompProfile`; `None` is the kubelet's default (`Unconfined`, without
    /// `--seccomp-default`).
    pub seccomp: Option<Profile>,
    /// `appArmorProfile`; `None` is the runtime's default.
    pub app_armor: Option<Profile>,
    /// `seLinuxOptions`.
    pub se_linux: Option<SeLinux>,
    /// `procMount: Unmasked`.
    pub proc_mount_unmasked: bool,
    /// The pod's `supplementalGroups`.
    pub supplemental_groups: Vec<i64>,
    /// The pod's `supplementalGroupsPolicy: Strict` (no groups from the image's `/etc/group`).
    pub supplemental_groups_strict: bool,
    /// The pod's `fsGroup`: a supplementary group of every container (and the owner group of
    /// the pod's volumes, with `fsGroupChangePolicy`).
    pub fs_group: Option<i64>,
    /// The pod's `sysctls`, as (name, value).
    pub sysctls: Vec<(String, String)>,
    /// Where each merged setting that is set came from: `runAsUser`, `runAsGroup`,
    /// `runAsNonRoot`, `seccompProfile`, `appArmorProfile`, `seLinuxOptions` to the path of the
    /// container's or the pod's field (see [`Security::field`]).
    pub origins: std::collections::BTreeMap<&'static str, String>,
}

impl Security {
    /// The path of setting `name` (`seccompProfile`) where this container's value came from: the
    /// container's `securityContext` or the pod's. `container` is the container's path, used when
    /// the setting is not merged from the pod.
    pub fn field(&self, name: &str, container: &str) -> String {
        self.origins
            .get(name)
            .cloned()
            .unwrap_or_else(|| format!("{container}.securityContext.{name}"))
    }
}

/// Merges the pod's and the container's `securityContext` as the kubelet does, and checks it.
///
/// `field` is the container's path (`spec.containers[0]`); errors name the container's field
/// (`spec.containers[0].securityContext.seccompProfile.localhostProfile`) or the pod's
/// (`spec.securityContext.runAsUser`), whichever the value came from.
///
/// # Errors
/// [`Unsupported`] for a negative uid or gid, a profile of an unknown type, a `Localhost` profile without its name or with a seccomp path that is absolute or
/// has a `..` segment, or a `procMount` other than `Default` and `Unmasked`.
pub fn merge(
    pod: Option<&PodSecurityContext>,
    container: Option<&SecurityContext>,
    field: &str,
) -> Result<Security, Unsupported> {
    let c = container;
    let paths = Paths { container: field };
    let run_as = RunAs::merge(pod, c, &paths)?;
    let profiles = Profiles::merge(pod, c, &paths)?;
    let proc_mount_unmasked = proc_mount_unmasked(c, &paths)?;
    let caps = c.and_then(|s| s.capabilities.as_ref());
    let (supplemental_groups, fs_group) = pod_groups(pod)?;
    let origins = origins(&run_as, &profiles, &paths);
    Ok(Security {
        origins,
        run_as_user: run_as.user.value,
        run_as_group: run_as.group.value,
        run_as_non_root: run_as.non_root.value,
        privileged: c.and_then(|s| s.privileged) == Some(true),
        allow_privilege_escalation: c.and_then(|s| s.allow_privilege_escalation),
        read_only_root_filesystem: c.and_then(|s| s.read_only_root_filesystem) == Some(true),
        capabilities_add: caps.and_then(|c| c.add.clone()).unwrap_or_default(),
        capabilities_drop: caps.and_then(|c| c.drop.clone()).unwrap_or_default(),
        seccomp: profiles.seccomp.value,
        app_armor: profiles.app_armor.value,
        se_linux: profiles.se_linux.value,
        proc_mount_unmasked,
        supplemental_groups,
        supplemental_groups_strict: pod.and_then(|s| s.supplemental_groups_policy.as_deref())
            == Some("Strict"),
        fs_group,
        sysctls: pod
            .and_then(|s| s.sysctls.as_ref())
            .into_iter()
            .flatten()
            .map(|s| (s.name.clone(), s.value.clone()))
            .collect(),
    })
}

/// The paths of the settings of one container's security context, for errors and origins.
struct Paths<'a> {
    /// The container's path (`spec.containers[0]`).
    container: &'a str,
}

impl Paths<'_> {
    /// Setting `f` of the container's own `securityContext`.
    fn own(&self, f: &str) -> String {
        format!("{}.securityContext.{f}", self.container)
    }

    /// Setting `f` of the pod's `securityContext`.
    fn pods(f: &str) -> String {
        format!("spec.securityContext.{f}")
    }

    /// The field a merged value of setting `f` came from: the container's when it set it, else
    /// the pod's.
    fn from(&self, set_on_container: bool, f: &str) -> String {
        if set_on_container { self.own(f) } else { Self::pods(f) }
    }
}

/// A merged setting: its value, and whether the container set it (else it came from the pod, or
/// from neither).
struct Merged<T> {
    value: T,
    on_container: bool,
}

impl<T> Merged<Option<T>> {
    /// The container's value when it sets one, else the pod's.
    fn of(container: Option<T>, pod: Option<T>) -> Self {
        let on_container = container.is_some();
        Self { value: container.or(pod), on_container }
    }
}

/// The identity a container runs as: `runAsUser`, `runAsGroup`, `runAsNonRoot`, merged.
struct RunAs {
    user: Merged<Option<i64>>,
    group: Merged<Option<i64>>,
    non_root: Merged<bool>,
}

impl RunAs {
    /// Merges the identity settings of `pod` and `c`.
    ///
    /// # Errors
    /// [`Unsupported`] on the field it came from for a negative uid or gid.
    fn merge(
        pod: Option<&PodSecurityContext>,
        c: Option<&SecurityContext>,
        paths: &Paths<'_>,
    ) -> Result<Self, Unsupported> {
        let user = Merged::of(c.and_then(|s| s.run_as_user), pod.and_then(|s| s.run_as_user));
        let group = Merged::of(c.and_then(|s| s.run_as_group), pod.and_then(|s| s.run_as_group));
        for (name, m) in [("runAsUser", &user), ("runAsGroup", &group)] {
            if m.value.is_some_and(|v| v < 0) {
                return Err(Unsupported::new(
                    paths.from(m.on_container, name),
                    "must not be negative",
                ));
            }
        }
        let c_non_root = c.and_then(|s| s.run_as_non_root);
        let non_root = Merged {
            value: c_non_root.or(pod.and_then(|s| s.run_as_non_root)) == Some(true),
            on_container: c_non_root.is_some(),
        };
        Ok(Self { user, group, non_root })
    }
}

/// The confinement of a container: `seccompProfile`, `appArmorProfile`, `seLinuxOptions`, merged.
struct Profiles {
    seccomp: Merged<Option<Profile>>,
    app_armor: Merged<Option<Profile>>,
    se_linux: Merged<Option<SeLinux>>,
}

impl Profiles {
    /// Merges the profiles of `pod` and `c`; `seLinuxOptions` whole (the container's replace the
    /// pod's), none when all its parts are empty.
    ///
    /// # Errors
    /// [`Unsupported`] on the field it came from for a malformed profile ([`profile`]).
    fn merge(
        pod: Option<&PodSecurityContext>,
        c: Option<&SecurityContext>,
        paths: &Paths<'_>,
    ) -> Result<Self, Unsupported> {
        let c_seccomp = c.and_then(|s| s.seccomp_profile.as_ref());
        let seccomp = match c_seccomp.or(pod.and_then(|s| s.seccomp_profile.as_ref())) {
            None => None,
            Some(p) => {
                Some(seccomp_profile(p, &paths.from(c_seccomp.is_some(), "seccompProfile"))?)
            }
        };
        let c_armor = c.and_then(|s| s.app_armor_profile.as_ref());
        let app_armor = match c_armor.or(pod.and_then(|s| s.app_armor_profile.as_ref())) {
            None => None,
            Some(p) => {
                Some(app_armor_profile(p, &paths.from(c_armor.is_some(), "appArmorProfile"))?)
            }
        };
        let c_se_linux = c.and_then(|s| s.se_linux_options.as_ref());
        let se_linux = c_se_linux
            .or(pod.and_then(|s| s.se_linux_options.as_ref()))
            .map(se_linux)
            .filter(|s| *s != SeLinux::default());
        Ok(Self {
            seccomp: Merged { value: seccomp, on_container: c_seccomp.is_some() },
            app_armor: Merged { value: app_armor, on_container: c_armor.is_some() },
            se_linux: Merged { value: se_linux, on_container: c_se_linux.is_some() },
        })
    }
}

/// The container's `procMount`: `Unmasked` or not.
///
/// # Errors
/// [`Unsupported`] for a type other than `Default` and `Unmasked`.
fn proc_mount_unmasked(
    c: Option<&SecurityContext>,
    paths: &Paths<'_>,
) -> Result<bool, Unsupported> {
    match c.and_then(|s| s.proc_mount.as_deref()) {
        None | Some("Default") => Ok(false),
        Some("Unmasked") => Ok(true),
        Some(other) => Err(Unsupported::new(
            paths.own("procMount"),
            format!("{other:?} is not a proc mount type (Default, Unmasked)"),
        )),
    }
}

/// The pod's `supplementalGroups` (repeats next to each other dropped) and `fsGroup`.
///
/// # Errors
/// [`Unsupported`] for a negative group.
fn pod_groups(pod: Option<&PodSecurityContext>) -> Result<(Vec<i64>, Option<i64>), Unsupported> {
    let mut supplemental_groups =
        pod.and_then(|s| s.supplemental_groups.clone()).unwrap_or_default();
    if let Some(g) = supplemental_groups.iter().find(|g| **g < 0) {
        return Err(Unsupported::new(
            Paths::pods("supplementalGroups"),
            format!("{g} is negative"),
        ));
    }
    supplemental_groups.dedup();
    let fs_group = pod.and_then(|s| s.fs_group);
    if fs_group.is_some_and(|g| g < 0) {
        return Err(Unsupported::new(Paths::pods("fsGroup"), "must not be negative"));
    }
    Ok((supplemental_groups, fs_group))
}

/// [`Security::origins`]: for each merged setting that is set, the field it came from.
fn origins(
    run_as: &RunAs,
    profiles: &Profiles,
    paths: &Paths<'_>,
) -> std::collections::BTreeMap<&'static str, String> {
    let merged: [(&'static str, bool, bool); 6] = [
        ("runAsUser", run_as.user.value.is_some(), run_as.user.on_container),
        ("runAsGroup", run_as.group.value.is_some(), run_as.group.on_container),
        ("runAsNonRoot", run_as.non_root.value, run_as.non_root.on_container),
        ("seccompProfile", profiles.seccomp.value.is_some(), profiles.seccomp.on_container),
        ("appArmorProfile", profiles.app_armor.value.is_some(), profiles.app_armor.on_container),
        ("seLinuxOptions", profiles.se_linux.value.is_some(), profiles.se_linux.on_container),
    ];
    merged
        .into_iter()
        .filter(|(_, set, _)| *set)
        .map(|(name, _, on_container)| (name, paths.from(on_container, name)))
        .collect()
}

fn profile(
    type_: &str,
    localhost: Option<&str>,
    field: &str,
    path: bool,
) -> Result<Profile, Unsupported> {
    match type_ {
        "RuntimeDefault" => Ok(Profile::RuntimeDefault),
        "Unconfined" => Ok(Profile::Unconfined),
        "Localhost" => {
            let name = localhost.filter(|n| !n.is_empty()).ok_or_else(|| {
                Unsupported::new(
                    format!("{field}.localhostProfile"),
                    "a Localhost profile needs localhostProfile",
                )
            })?;
            if path && (name.starts_with('/') || name.split('/').any(|s| s == "..")) {
                return Err(Unsupported::new(
                    format!("{field}.localhostProfile"),
                    format!(
                        "{name:?} must be a path inside the node's profile directory (relative, no '..')"
                    ),
                ));
            }
            Ok(Profile::Localhost(name.to_owned()))
        }
        other => Err(Unsupported::new(
            format!("{field}.type"),
            format!("{other:?} is not a profile type (RuntimeDefault, Unconfined, Localhost)"),
        )),
    }
}

fn seccomp_profile(p: &SeccompProfile, field: &str) -> Result<Profile, Unsupported> {
    profile(&p.type_, p.localhost_profile.as_deref(), field, true)
}

fn app_armor_profile(p: &AppArmorProfile, field: &str) -> Result<Profile, Unsupported> {
    profile(&p.type_, p.localhost_profile.as_deref(), field, false)
}

fn se_linux(o: &SELinuxOptions) -> SeLinux {
    let part = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
    SeLinux {
        user: part(&o.user),
        role: part(&o.role),
        type_: part(&o.type_),
        level: part(&o.level),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn merged(pod: serde_json::Value, c: serde_json::Value) -> Result<Security, Unsupported> {
        let pod: PodSecurityContext = serde_json::from_value(pod).unwrap();
        let c: SecurityContext = serde_json::from_value(c).unwrap();
        merge(Some(&pod), Some(&c), "spec.containers[0]")
    }

    #[test]
    fn the_container_wins_where_both_may_say() {
        let s = merged(
            json!({"runAsUser": 1, "runAsGroup": 2, "runAsNonRoot": true,
                   "seccompProfile": {"type": "RuntimeDefault"},
                   "appArmorProfile": {"type": "RuntimeDefault"},
                   "seLinuxOptions": {"level": "s0:c1"},
                   "fsGroup": 5, "supplementalGroups": [7, 8], "sysctls": [{"name": "kernel.shm_rmid_forced", "value": "1"}]}),
            json!({"runAsUser": 10, "seccompProfile": {"type": "Localhost", "localhostProfile": "p/audit.json"},
                   "appArmorProfile": {"type": "Unconfined"}, "seLinuxOptions": {"type": "spc_t"},
                   "capabilities": {"add": ["NET_ADMIN"], "drop": ["ALL"]},
                   "readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false}),
        )
        .unwrap();
        assert_eq!((s.run_as_user, s.run_as_group, s.run_as_non_root), (Some(10), Some(2), true));
        assert_eq!(s.seccomp, Some(Profile::Localhost("p/audit.json".into())));
        assert_eq!(s.app_armor, Some(Profile::Unconfined));
        // The container's seLinuxOptions replace the pod's whole.
        assert_eq!(s.se_linux, Some(SeLinux { type_: Some("spc_t".into()), ..SeLinux::default() }));
        assert_eq!(
            (s.capabilities_add.clone(), s.capabilities_drop.clone()),
            (vec!["NET_ADMIN".to_owned()], vec!["ALL".to_owned()])
        );
        assert!(s.read_only_root_filesystem && s.allow_privilege_escalation == Some(false));
        assert_eq!((s.fs_group, s.supplemental_groups.clone()), (Some(5), vec![7, 8]));
        assert_eq!(s.sysctls, vec![("kernel.shm_rmid_forced".to_owned(), "1".to_owned())]);
        assert_eq!(s.field("runAsGroup", "spec.containers[0]"), "spec.securityContext.runAsGroup");
        assert_eq!(
            s.field("seccompProfile", "spec.containers[0]"),
            "spec.containers[0].securityContext.seccompProfile"
        );
        assert_eq!(
            s.field("capabilities", "spec.containers[0]"),
            "spec.containers[0].securityContext.capabilities"
        );
        let plain = merge(None, None, "spec.containers[0]").unwrap();
        assert_eq!(plain, Security::default());
    }

    #[test]
    fn malformed_settings_name_their_field() {
        let cases = [
            (json!({}), json!({"runAsUser": -1}), "spec.containers[0].securityContext.runAsUser"),
            (json!({"runAsGroup": -2}), json!({}), "spec.securityContext.runAsGroup"),
            (
                json!({}),
                json!({"seccompProfile": {"type": "Localhost", "localhostProfile": "../../etc/shadow"}}),
                "spec.containers[0].securityContext.seccompProfile.localhostProfile",
            ),
            (
                json!({"seccompProfile": {"type": "Localhost"}}),
                json!({}),
                "spec.securityContext.seccompProfile.localhostProfile",
            ),
            (
                json!({}),
                json!({"appArmorProfile": {"type": "Strict"}}),
                "spec.containers[0].securityContext.appArmorProfile.type",
            ),
            (
                json!({}),
                json!({"procMount": "Odd"}),
                "spec.containers[0].securityContext.procMount",
            ),
            (json!({"fsGroup": -1}), json!({}), "spec.securityContext.fsGroup"),
        ];
        for (pod, c, field) in cases {
            let err = merged(pod.clone(), c.clone()).unwrap_err();
            assert_eq!(err.field, field, "{pod} {c}");
        }
    }
}
