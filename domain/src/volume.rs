//! A pod's volumes as the files (or empty directories) they hold, and each container's mounts.
//!
//! ConfigMap, Secret, downward API and projected volumes (service-account tokens included) are
//! resolved to [`File`]s, as the kubelet's volume plugins would write them
//! (`pkg/volume/{configmap,secret,downwardapi,projected}`): every key at a path named after it,
//! or the listed `items`; `defaultMode` 0644 unless given; a missing mandatory source fails the
//! mount (`FailedMount`), a missing optional one leaves it empty. `emptyDir` is a directory shared
//! by the pod's containers. Any other type is refused with its name.

use k8s_openapi::api::core::v1::{
    ConfigMapProjection, DownwardAPIVolumeFile, KeyToPath, Pod, ProjectedVolumeSource,
    SecretProjection, Volume as K8sVolume, VolumeMount, VolumeProjection,
};

use crate::error::{Missing, Unsupported};
use crate::inputs::{self, DEFAULT_TOKEN_SECONDS, EnvError, Inputs, TokenSpec};
use crate::quantity;

/// The kubelet's default file mode for volume files (`0644`).
pub const DEFAULT_MODE: u32 = 0o644;

/// One volume of the pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// `name`, unique in the pod.
    pub name: String,
    /// What it holds.
    pub source: Source,
    /// It reads a Secret or a service-account token, whatever files it holds now (an optional
    /// Secret may appear later): its files must only be written where Secret data may be.
    pub secret: bool,
    /// Its set of files may change while the pod runs: it reads a ConfigMap or Secret (directly
    /// or projected) without `items` (every key, so a key added or removed adds or removes a
    /// file) or `optional` (the object may appear or go). The kubelet's atomic writer adds and
    /// removes such files in place (`pkg/volume/util/atomic_writer.go`).
    pub keys_may_change: bool,
}

/// What a volume holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// An empty directory shared by the pod's containers, living as long as the pod.
    EmptyDir {
        /// `medium: Memory`.
        memory: bool,
        /// `sizeLimit` in bytes.
        size_limit_bytes: Option<u64>,
    },
    /// Files made from API objects and the pod itself; they follow the objects while the pod runs.
    Files(Vec<File>),
}

/// A file of a ConfigMap, Secret, downward API or projected volume. Its `Debug` shows the data
/// only when it is not `secret`.
#[derive(Clone, PartialEq, Eq)]
pub struct File {
    /// Path relative to the volume's root (no `..`, not absolute).
    pub path: String,
    /// Content.
    pub data: Vec<u8>,
    /// Permission bits (`0644` by default).
    pub mode: u32,
    /// From a Secret or a token: must only be written where Secret data may be.
    pub secret: bool,
}

impl std::fmt::Debug for File {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("File");
        d.field("path", &self.path);
        if self.secret {
            d.field("data", &format_args!("<redacted {} bytes>", self.data.len()));
        } else {
            d.field("data", &String::from_utf8_lossy(&self.data));
        }
        d.field("mode", &format_args!("{:o}", self.mode)).field("secret", &self.secret).finish()
    }
}

/// A container's `volumeMounts[]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The volume's name.
    pub volume: String,
    /// `mountPath`, absolute.
    pub mount_path: String,
    /// `subPath`, relative.
    pub sub_path: Option<String>,
    /// `readOnly`.
    pub read_only: bool,
}

/// Resolves the pod's volumes against `inputs`.
///
/// # Errors
/// [`EnvError::Unsupported`] naming `spec.volumes[i]` for a type that cannot be run or a malformed
/// path or quantity; [`EnvError::Missing`] (`FailedMount`) for a mandatory ConfigMap, Secret, key
/// or token that is absent.
pub fn volumes(pod: &Pod, inputs: &Inputs) -> Result<Vec<Volume>, EnvError> {
    let Some(spec) = &pod.spec else { return Ok(Vec::new()) };
    let mut out = Vec::new();
    for (i, v) in spec.volumes.iter().flatten().enumerate() {
        let source = source(pod, &format!("spec.volumes[{i}]"), v, inputs)?;
        out.push(Volume {
            name: v.name.clone(),
            source,
            secret: reads_secret(v),
            keys_may_change: keys_may_change(v),
        });
    }
    Ok(out)
}

/// What volume `v` (at path `field`) of `pod` holds, resolved against `inputs`.
///
/// # Errors
/// As [`volumes`], for this volume.
fn source(pod: &Pod, field: &str, v: &K8sVolume, inputs: &Inputs) -> Result<Source, EnvError> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    let fail = failed_mount(&v.name);
    let default_mode = |m: Option<i32>| m.map_or(DEFAULT_MODE, mode);
    let source = if let Some(e) = &v.empty_dir {
        let size = e
            .size_limit
            .as_ref()
            .map(|q| quantity::bytes(&format!("{field}.emptyDir.sizeLimit"), &q.0))
            .transpose()?;
        Source::EmptyDir { memory: e.medium.as_deref() == Some("Memory"), size_limit_bytes: size }
    } else if let Some(cm) = &v.config_map {
        let r = ObjectRef::config_map(&cm.name, cm.items.as_deref(), cm.optional);
        let dm = default_mode(cm.default_mode);
        let files = object_files(&format!("{field}.configMap"), ns, &r, inputs, dm);
        Source::Files(files.map_err(|e| e.map_missing(fail))?)
    } else if let Some(s) = &v.secret {
        let name = s.secret_name.as_deref().unwrap_or_default();
        let r = ObjectRef::secret(name, s.items.as_deref(), s.optional);
        let dm = default_mode(s.default_mode);
        let files = object_files(&format!("{field}.secret"), ns, &r, inputs, dm);
        Source::Files(files.map_err(|e| e.map_missing(fail))?)
    } else if let Some(d) = &v.downward_api {
        let mut files = Vec::new();
        let dm = default_mode(d.default_mode);
        for (j, item) in d.items.iter().flatten().enumerate() {
            files.push(downward_file(
                pod,
                &format!("{field}.downwardAPI.items[{j}]"),
                item,
                dm,
                inputs,
            )?);
        }
        Source::Files(files)
    } else if let Some(p) = &v.projected {
        Source::Files(projected_files(pod, field, v, p, default_mode(p.default_mode), inputs)?)
    } else {
        return Err(Unsupported::new(
            field,
            format!("volume {:?} of type {} is not supported", v.name, volume_type(v)),
        )
        .into());
    };
    Ok(source)
}

/// The files of projected volume `v` (source `p`, at path `field`), each source's in order, with
/// default mode `dm`.
///
/// # Errors
/// As [`volumes`]; [`EnvError::Missing`] (`FailedMount`) too for a service-account token not
/// obtained yet, [`EnvError::Unsupported`] for a source type other than configMap, secret,
/// downwardAPI and serviceAccountToken.
fn projected_files(
    pod: &Pod,
    field: &str,
    v: &K8sVolume,
    p: &ProjectedVolumeSource,
    dm: u32,
    inputs: &Inputs,
) -> Result<Vec<File>, EnvError> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    let fail = failed_mount(&v.name);
    let mut files = Vec::new();
    for (j, src) in p.sources.iter().flatten().enumerate() {
        let f = format!("{field}.projected.sources[{j}]");
        if let Some(ConfigMapProjection { name, items, optional }) = &src.config_map {
            let r = ObjectRef::config_map(name, items.as_deref(), *optional);
            let more = object_files(&format!("{f}.configMap"), ns, &r, inputs, dm);
            files.extend(more.map_err(|e| e.map_missing(&fail))?);
        } else if let Some(SecretProjection { name, items, optional }) = &src.secret {
            let r = ObjectRef::secret(name, items.as_deref(), *optional);
            let more = object_files(&format!("{f}.secret"), ns, &r, inputs, dm);
            files.extend(more.map_err(|e| e.map_missing(&fail))?);
        } else if let Some(d) = &src.downward_api {
            for (k, item) in d.items.iter().flatten().enumerate() {
                let f = format!("{f}.downwardAPI.items[{k}]");
                files.push(downward_file(pod, &f, item, dm, inputs)?);
            }
        } else if let Some(t) = &src.service_account_token {
            let spec = TokenSpec {
                audience: t.audience.clone().unwrap_or_default(),
                expiration_seconds: t.expiration_seconds.unwrap_or(DEFAULT_TOKEN_SECONDS),
            };
            let token = inputs
                .tokens
                .get(&spec)
                .ok_or_else(|| fail("the service account token has not been obtained".into()))?;
            files.push(File {
                path: rel_path(&format!("{f}.serviceAccountToken.path"), &t.path)?,
                data: token.clone().into_bytes(),
                mode: dm,
                secret: true,
            });
        } else {
            let kind = if src.cluster_trust_bundle.is_some() {
                "clusterTrustBundle"
            } else if src.pod_certificate.is_some() {
                "podCertificate"
            } else {
                "unknown"
            };
            return Err(Unsupported::new(
                f,
                format!("projected source of type {kind} in volume {:?} is not supported", v.name),
            )
            .into());
        }
    }
    Ok(files)
}

/// The kubelet's `FailedMount` for volume `name`, with the message of what failed.
fn failed_mount(name: &str) -> impl Fn(String) -> Missing + '_ {
    move |msg: String| {
        Missing::new("FailedMount", format!("MountVolume.SetUp failed for volume {name:?} : {msg}"))
    }
}

/// Whether volume `v` reads a Secret or a service-account token ([`Volume::secret`]).
fn reads_secret(v: &K8sVolume) -> bool {
    v.secret.is_some()
        || projected_sources(v).any(|s| s.secret.is_some() || s.service_account_token.is_some())
}

/// Whether the set of files of volume `v` may change while the pod runs
/// ([`Volume::keys_may_change`]).
fn keys_may_change(v: &K8sVolume) -> bool {
    let open = |items: Option<&Vec<KeyToPath>>, optional: Option<bool>| {
        items.is_none_or(Vec::is_empty) || optional == Some(true)
    };
    v.config_map.as_ref().is_some_and(|c| open(c.items.as_ref(), c.optional))
        || v.secret.as_ref().is_some_and(|s| open(s.items.as_ref(), s.optional))
        || projected_sources(v).any(|s| {
            s.config_map.as_ref().is_some_and(|c| open(c.items.as_ref(), c.optional))
                || s.secret.as_ref().is_some_and(|c| open(c.items.as_ref(), c.optional))
        })
}

/// The sources of volume `v` when it is projected; none otherwise.
fn projected_sources(v: &K8sVolume) -> impl Iterator<Item = &VolumeProjection> {
    v.projected.iter().flat_map(|p| p.sources.iter().flatten())
}

/// A container's mounts, checked against the pod's volumes.
///
/// # Errors
/// [`EnvError::Unsupported`] on `field.volumeMounts[i]` for an unknown volume, a relative
/// `mountPath`, a `subPath` that is absolute or has `..`, a `subPathExpr` naming a Secret or
/// run-time value, or bidirectional propagation; on `field.volumeDevices` when any is given.
/// [`EnvError::Missing`] (Event reason `Failed`) for a `subPathExpr` whose expansion is absolute
/// or has `..`: the kubelet does not create that container and keeps it waiting in
/// `CreateContainerConfigError` (`makeMounts`, "failed to prepare subPath").
pub fn mounts(
    field: &str,
    mounts: Option<&[VolumeMount]>,
    devices: bool,
    volumes: &[Volume],
    env: &[crate::env::EnvVar],
    container: &str,
) -> Result<Vec<Mount>, EnvError> {
    if devices {
        return Err(EnvError::from(Unsupported::new(
            format!("{field}.volumeDevices"),
            "block devices are not supported",
        )));
    }
    let mut out = Vec::new();
    for (i, m) in mounts.unwrap_or_default().iter().enumerate() {
        let f = format!("{field}.volumeMounts[{i}]");
        if !volumes.iter().any(|v| v.name == m.name) {
            return Err(EnvError::from(Unsupported::new(
                format!("{f}.name"),
                format!("no volume named {:?}", m.name),
            )));
        }
        if !m.mount_path.starts_with('/') {
            return Err(EnvError::from(Unsupported::new(
                format!("{f}.mountPath"),
                format!("{:?} is not an absolute path", m.mount_path),
            )));
        }
        // `subPathExpr`: `$(VAR)` expanded from the container's environment, as the kubelet's
        // `ExpandContainerVolumeMounts`; only plain values can be (a Secret or a run-time value
        // such as the pod IP would have to be written into the backend's definition).
        let expanded = match m.sub_path_expr.as_deref().filter(|s| !s.is_empty()) {
            None => None,
            Some(expr) => {
                let value = crate::env::expand_arg(expr, env);
                let text = value.as_text().ok_or_else(|| {
                    Unsupported::new(
                        format!("{f}.subPathExpr"),
                        format!("{expr:?} refers to a Secret or run-time value, which cannot name a path"),
                    )
                })?;
                Some(rel_path(&format!("{f}.subPathExpr"), &text).map_err(|e| {
                    Missing::new(
                        "Failed",
                        format!(
                            "failed to prepare subPath for volumeMount {:?} of container {container:?}: {}",
                            m.name, e.reason
                        ),
                    )
                })?)
            }
        };
        if m.mount_propagation.as_deref() == Some("Bidirectional") {
            return Err(EnvError::from(Unsupported::new(
                format!("{f}.mountPropagation"),
                "Bidirectional mount propagation is not supported",
            )));
        }
        let sub_path = match m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            Some(s) => Some(rel_path(&format!("{f}.subPath"), s)?),
            None => expanded,
        };
        out.push(Mount {
            volume: m.name.clone(),
            mount_path: m.mount_path.clone(),
            sub_path,
            read_only: m.read_only == Some(true),
        });
    }
    Ok(out)
}

/// The name of a volume's source type as written in a pod spec (`configMap`, `hostPath`, ...).
pub fn volume_type(v: &K8sVolume) -> &'static str {
    let types: [(&'static str, bool); 30] = [
        ("configMap", v.config_map.is_some()),
        ("secret", v.secret.is_some()),
        ("emptyDir", v.empty_dir.is_some()),
        ("hostPath", v.host_path.is_some()),
        ("projected", v.projected.is_some()),
        ("downwardAPI", v.downward_api.is_some()),
        ("persistentVolumeClaim", v.persistent_volume_claim.is_some()),
        ("nfs", v.nfs.is_some()),
        ("csi", v.csi.is_some()),
        ("ephemeral", v.ephemeral.is_some()),
        ("image", v.image.is_some()),
        ("iscsi", v.iscsi.is_some()),
        ("awsElasticBlockStore", v.aws_elastic_block_store.is_some()),
        ("gcePersistentDisk", v.gce_persistent_disk.is_some()),
        ("azureDisk", v.azure_disk.is_some()),
        ("azureFile", v.azure_file.is_some()),
        ("cephfs", v.cephfs.is_some()),
        ("cinder", v.cinder.is_some()),
        ("fc", v.fc.is_some()),
        ("flexVolume", v.flex_volume.is_some()),
        ("flocker", v.flocker.is_some()),
        ("gitRepo", v.git_repo.is_some()),
        ("glusterfs", v.glusterfs.is_some()),
        ("photonPersistentDisk", v.photon_persistent_disk.is_some()),
        ("portworxVolume", v.portworx_volume.is_some()),
        ("quobyte", v.quobyte.is_some()),
        ("rbd", v.rbd.is_some()),
        ("scaleIO", v.scale_io.is_some()),
        ("storageos", v.storageos.is_some()),
        ("vsphereVolume", v.vsphere_volume.is_some()),
    ];
    types.iter().find(|(_, set)| *set).map_or("unknown", |(n, _)| n)
}

fn mode(m: i32) -> u32 {
    u32::try_from(m).unwrap_or(DEFAULT_MODE) & 0o777
}

/// Checks a path relative to a volume (`AtomicWriter` rules: not absolute, no `..` element, not
/// empty) and normalises it.
fn rel_path(field: &str, p: &str) -> Result<String, Unsupported> {
    let bad = |why: &str| Err(Unsupported::new(field.to_owned(), format!("path {p:?} {why}")));
    if p.is_empty() {
        return bad("is empty");
    }
    if p.starts_with('/') {
        return bad("is absolute");
    }
    if p.split('/').any(|e| e == "..") {
        return bad("contains '..'");
    }
    Ok(p.split('/').filter(|e| !e.is_empty() && *e != ".").collect::<Vec<_>>().join("/"))
}

enum FilesError {
    Unsupported(Unsupported),
    Missing(String),
}

impl FilesError {
    fn map_missing(self, f: impl Fn(String) -> Missing) -> EnvError {
        match self {
            Self::Unsupported(u) => EnvError::Unsupported(u),
            Self::Missing(m) => EnvError::Missing(f(m)),
        }
    }
}

/// A ConfigMap or Secret that a volume reads, directly or projected.
struct ObjectRef<'a> {
    /// `configmap` or `secret`, as the kubelet's messages name them.
    kind: &'static str,
    /// The object's name, in the pod's namespace.
    name: &'a str,
    /// `items`: the keys to write, at their paths; every key when none.
    items: Option<&'a [KeyToPath]>,
    /// `optional`: an absent object (or key) leaves the volume without it.
    optional: bool,
}

impl<'a> ObjectRef<'a> {
    /// ConfigMap `name`.
    fn config_map(name: &'a str, items: Option<&'a [KeyToPath]>, optional: Option<bool>) -> Self {
        Self { kind: "configmap", name, items, optional: optional == Some(true) }
    }

    /// Secret `name`.
    fn secret(name: &'a str, items: Option<&'a [KeyToPath]>, optional: Option<bool>) -> Self {
        Self { kind: "secret", name, items, optional: optional == Some(true) }
    }

    /// Whether it is a Secret: its files hold Secret data.
    fn is_secret(&self) -> bool {
        self.kind == "secret"
    }
}

/// The files of object `r` (at path `field`, in namespace `ns`) as `inputs` hold it: every key at
/// a path named after it, or the listed `items` (each with its own mode, else `default_mode`).
///
/// # Errors
/// [`FilesError::Unsupported`] for a malformed path; [`FilesError::Missing`] for an absent object
/// or listed key that is not optional.
fn object_files(
    field: &str,
    ns: &str,
    r: &ObjectRef<'_>,
    inputs: &Inputs,
    default_mode: u32,
) -> Result<Vec<File>, FilesError> {
    let (kind, name, secret) = (r.kind, r.name, r.is_secret());
    let objects = if secret { &inputs.secrets } else { &inputs.config_maps };
    let mut out = Vec::new();
    let Some(data) = objects.get(name).and_then(Option::as_ref) else {
        return if r.optional {
            Ok(out)
        } else {
            Err(FilesError::Missing(format!("{kind} {ns}/{name} not found")))
        };
    };
    match r.items.filter(|i| !i.is_empty()) {
        None => {
            for (k, v) in data {
                let path = rel_path(field, k).map_err(FilesError::Unsupported)?;
                out.push(File { path, data: v.clone(), mode: default_mode, secret });
            }
        }
        Some(items) => {
            for (i, item) in items.iter().enumerate() {
                let Some(v) = data.get(&item.key) else {
                    if r.optional {
                        continue;
                    }
                    return Err(FilesError::Missing(format!(
                        "{kind} {ns}/{name} has no key {:?}",
                        item.key
                    )));
                };
                let path = rel_path(&format!("{field}.items[{i}].path"), &item.path)
                    .map_err(FilesError::Unsupported)?;
                out.push(File {
                    path,
                    data: v.clone(),
                    mode: item.mode.map_or(default_mode, mode),
                    secret,
                });
            }
        }
    }
    Ok(out)
}

fn downward_file(
    pod: &Pod,
    field: &str,
    item: &DownwardAPIVolumeFile,
    default_mode: u32,
    inputs: &Inputs,
) -> Result<File, Unsupported> {
    let path = rel_path(&format!("{field}.path"), &item.path)?;
    let text = if let Some(sel) = &item.field_ref {
        // Volumes carry metadata only (`validateDownwardAPIVolumeFile`): the rest may change
        // without the file being rewritten.
        if !sel.field_path.starts_with("metadata.") {
            return Err(Unsupported::new(
                format!("{field}.fieldRef.fieldPath"),
                format!("{:?} is not available in a volume (metadata fields are)", sel.field_path),
            ));
        }
        let v = inputs::field_ref(pod, &format!("{field}.fieldRef"), sel)?;
        v.as_text().ok_or_else(|| {
            Unsupported::new(
                format!("{field}.fieldRef.fieldPath"),
                format!("{:?} is not available in a volume", sel.field_path),
            )
        })?
    } else if let Some(sel) = &item.resource_field_ref {
        let name = sel.container_name.as_deref().unwrap_or_default();
        let c = inputs::find_container(pod, name).ok_or_else(|| {
            Unsupported::new(
                format!("{field}.resourceFieldRef.containerName"),
                format!("no container named {name:?}"),
            )
        })?;
        inputs::resource_field_ref(
            &format!("{field}.resourceFieldRef"),
            c,
            sel,
            &inputs.node_allocatable,
        )?
    } else {
        return Err(Unsupported::new(
            field.to_owned(),
            "neither fieldRef nor resourceFieldRef is set",
        ));
    };
    Ok(File {
        path,
        data: text.into_bytes(),
        mode: item.mode.map_or(default_mode, mode),
        secret: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_data_of_secret_files() {
        let file =
            |secret| File { path: "p".into(), data: b"hunter2".to_vec(), mode: 0o600, secret };
        assert_eq!(
            format!("{:?}", file(true)),
            r#"File { path: "p", data: <redacted 7 bytes>, mode: 600, secret: true }"#
        );
        assert!(format!("{:?}", file(false)).contains(r#"data: "hunter2""#));
    }
}
