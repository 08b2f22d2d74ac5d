//! Image pulls on Nomad's docker driver as a kubelet reports them: an image that cannot be
//! pulled, and a private registry (credentials, missing tags, pull policies).

use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, ensure};
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use vk_tests::fixtures::pod;
use vk_tests::{BUSYBOX, wait_for};

use super::{create, delete_and_wait, log_with, running};
use crate::Ctx;

/// An image that cannot be pulled (a registry address where nothing listens, on 127.0.0.1):
/// the container waits in `ImagePullBackOff` with the engine's error, the pod stays Pending, and
/// the kubelet's Events say so: `Failed` (`Failed to pull image "<image>": <error>`) and
/// `BackOff` (`Back-off pulling image "<image>"`). Then the pod is deleted like any other.
pub(crate) async fn docker_image_pull_failure(cx: Ctx<'_>) -> anyhow::Result<()> {
    let (node, ns) = ("vk-docker-pull", "e2e-docker-pull");
    let _vk = cx.node_and_namespace_with(node, ns, &["--nomad-driver", "docker"]).await?;
    let closed = vk_tests::free_port()?;
    let image = format!("127.0.0.1:{closed}/vk-test/missing:1");
    let p = pod("nopull")
        .namespace(ns)
        .on_node(node)
        .spec(serde_json::json!({"containers": [{"name": "main", "image": image}]}))
        .build();
    create(&cx, &p).await?;
    let waiting = wait_for(
        "ImagePullBackOff",
        Duration::from_secs(60),
        Duration::from_millis(250),
        || async {
            let p = cx.pods(ns).get("nopull").await?;
            let w = crate::container_state(&p, "main")
                .and_then(|c| c.state)
                .and_then(|s| s.waiting)
                .filter(|w| w.reason.as_deref() == Some("ImagePullBackOff"));
            Ok(w.map(|w| (p, w)))
        },
    )
    .await?;
    let (pod, w) = waiting;
    let phase = pod.status.as_ref().and_then(|s| s.phase.clone());
    ensure!(phase.as_deref() == Some("Pending"), "phase {phase:?}");
    let message = w.message.unwrap_or_default();
    ensure!(
        message.starts_with(&format!("Back-off pulling image {image:?}: ErrImagePull: "))
            && message.contains("connection refused"),
        "ImagePullBackOff message {message:?}"
    );
    let failed = crate::wait_event(&cx, ns, "nopull", "Failed").await?;
    let text = failed.message.unwrap_or_default();
    ensure!(
        text.starts_with(&format!("Failed to pull image {image:?}: "))
            && text.contains("connection refused"),
        "Failed event {text:?}"
    );
    ensure!(failed.type_.as_deref() == Some("Warning"), "{:?}", failed.type_);
    let back_off = crate::wait_event(&cx, ns, "nopull", "BackOff").await?;
    ensure!(
        back_off.message.as_deref() == Some(format!("Back-off pulling image {image:?}").as_str()),
        "BackOff event {:?}",
        back_off.message
    );
    delete_and_wait(&cx, ns, "nopull").await
}

/// Runs `docker` with `args` (and the client configuration directory `config`, so no login
/// lands in the machine's own); returns its standard output.
fn docker(config: &std::path::Path, args: &[&str], stdin: Option<&str>) -> anyhow::Result<String> {
    use std::io::Write as _;
    let mut child = Command::new("docker")
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    if let (Some(text), Some(mut input)) = (stdin, child.stdin.take()) {
        input.write_all(text.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "docker {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// Image pulls as a kubelet reports them, against a private registry on 127.0.0.1
/// (distribution v3 with htpasswd authentication, an image pushed to it and removed from the
/// engine so that every pod must pull):
/// - without `imagePullSecrets` the pull is refused: `ImagePullBackOff` with the registry's
///   answer;
/// - with the Secret (`kubernetes.io/dockerconfigjson`) the pod runs; the password is not in the
///   job;
/// - a tag the registry does not have: `ImagePullBackOff`, the registry's "not found";
/// - `imagePullPolicy: Always` pulls a tag pushed again with new content, where `IfNotPresent`
///   keeps the copy the engine has.
pub(crate) async fn docker_registry_pulls(cx: Ctx<'_>) -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::Secret;
    let (node, ns) = ("vk-docker-registry", "e2e-docker-registry");
    let dir = cx.stack.dir.join("registry");
    std::fs::create_dir_all(dir.join("data"))?;
    let client_config = dir.join("docker-client");
    std::fs::create_dir_all(&client_config)?;
    let (user, password) = ("puller", "pull-s3cr3t");
    let entry = Command::new(&cx.stack.peers.htpasswd).args([user, password]).output()?;
    ensure!(entry.status.success(), "htpasswd failed");
    std::fs::write(dir.join("htpasswd"), &entry.stdout)?;
    let port = vk_tests::free_port()?;
    let registry = format!("127.0.0.1:{port}");
    std::fs::write(
        dir.join("config.yml"),
        format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
http:\n  addr: {registry}\nauth:\n  htpasswd:\n    realm: vk-test\n    path: {}\n",
            dir.join("data").display(),
            dir.join("htpasswd").display()
        ),
    )?;
    let mut cmd = Command::new(&cx.stack.peers.registry);
    cmd.arg("serve").arg(dir.join("config.yml")).env("OTEL_TRACES_EXPORTER", "none");
    let _registry =
        vk_tests::Process::spawn("registry", cmd, &cx.stack.dir.join("logs/registry.log"))?;
    wait_for("the registry", Duration::from_secs(30), Duration::from_millis(200), || async {
        let r = cx.http.get(format!("http://{registry}/v2/")).send().await;
        Ok(r.ok().filter(|r| r.status() == reqwest::StatusCode::UNAUTHORIZED).map(|_| ()))
    })
    .await?;

    // Two versions of one image, pushed under tags the engine then forgets.
    let (private, moving) =
        (format!("{registry}/private/bb:1"), format!("{registry}/private/bb:moving"));
    docker(&client_config, &["login", &registry, "-u", user, "--password-stdin"], Some(password))?;
    let build = |version: &str, tag: &str| -> anyhow::Result<()> {
        let ctx = dir.join(format!("build-{version}"));
        std::fs::create_dir_all(&ctx)?;
        std::fs::write(ctx.join("version"), format!("{version}\n"))?;
        std::fs::write(ctx.join("Dockerfile"), format!("FROM {BUSYBOX}\nCOPY version /version\n"))?;
        docker(&client_config, &["build", "-q", "-t", tag, &ctx.display().to_string()], None)?;
        docker(&client_config, &["push", tag], None)?;
        docker(&client_config, &["rmi", tag], None)?;
        Ok(())
    };
    build("one", &private)?;
    build("one", &moving)?;

    let _vk = cx.node_and_namespace_with(node, ns, &["--nomad-driver", "docker"]).await?;
    let secrets: Api<Secret> = Api::namespaced(cx.client.clone(), ns);
    let config =
        serde_json::json!({"auths": {registry.clone(): {"username": user, "password": password}}});
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({
                "metadata": {"name": "regcred"}, "type": "kubernetes.io/dockerconfigjson",
                "stringData": {".dockerconfigjson": config.to_string()}
            }))?,
        )
        .await?;
    let reader = |name: &str, image: &str, secret: bool, policy: &str| {
        let mut spec = serde_json::json!({"containers": [{"name": "main", "image": image,
            "imagePullPolicy": policy, "command": ["sh", "-c", "cat /version; exec sleep 3600"]}]});
        if secret {
            spec["imagePullSecrets"] = serde_json::json!([{"name": "regcred"}]);
        }
        pod(name).namespace(ns).on_node(node).grace(1).spec(spec).build()
    };
    let cx = &cx;
    let back_off = |name: &'static str| async move {
        wait_for(
            &format!("{name} in ImagePullBackOff"),
            Duration::from_secs(60),
            Duration::from_millis(250),
            || async {
                let p = cx.pods(ns).get(name).await?;
                let w = crate::container_state(&p, "main")
                    .and_then(|c| c.state)
                    .and_then(|s| s.waiting);
                Ok(w.filter(|w| w.reason.as_deref() == Some("ImagePullBackOff"))
                    .and_then(|w| w.message))
            },
        )
        .await
    };
    let output = |name: &'static str| async move {
        running(cx, ns, name).await?;
        log_with(cx, (ns, name, "main"), "", Duration::from_secs(30)).await
    };

    // No secret: refused by the registry.
    create(cx, &reader("anonymous", &private, false, "IfNotPresent")).await?;
    let refused = back_off("anonymous").await?;
    ensure!(
        refused.contains("no basic auth credentials") || refused.contains("unauthorized"),
        "without the secret: {refused:?}"
    );
    cx.pods(ns).delete("anonymous", &DeleteParams::default()).await?;

    // With it: pulled and running; the password is nowhere in the job.
    create(cx, &reader("authorized", &private, true, "IfNotPresent")).await?;
    ensure!(output("authorized").await?.trim() == "one", "authorized's image");
    let job = cx.nomad(&format!("/v1/job/k8s-{ns}_authorized")).await?.context("job")?;
    ensure!(!job.to_string().contains(password), "the job holds the registry password");
    // The kubelet's image Events, each once: Pulling, then Pulled with how long it took.
    let image_events = wait_for(
        "authorized's Pulling and Pulled Events",
        Duration::from_secs(20),
        Duration::from_millis(250),
        || async {
            let events = crate::events_of(cx, ns, "authorized").await?;
            let of = |reason: &str| -> Vec<(String, i32)> {
                events
                    .iter()
                    .filter(|e| e.reason.as_deref() == Some(reason))
                    .map(|e| (e.message.clone().unwrap_or_default(), e.count.unwrap_or(1)))
                    .collect()
            };
            let (pulling, pulled) = (of("Pulling"), of("Pulled"));
            Ok((!pulling.is_empty() && !pulled.is_empty()).then_some((pulling, pulled)))
        },
    )
    .await?;
    let (pulling, pulled) = image_events;
    ensure!(pulling == [(format!("Pulling image {private:?}"), 1)], "Pulling: {pulling:?}");
    let [(pulled, 1)] = pulled.as_slice() else { anyhow::bail!("Pulled: {pulled:?}") };
    let prefix = format!("Successfully pulled image {private:?} in ");
    ensure!(
        pulled.starts_with(&prefix) && pulled.ends_with(" including waiting)"),
        "Pulled: {pulled:?}"
    );

    // A tag the registry does not have.
    create(cx, &reader("missing", &format!("{registry}/private/bb:nope"), true, "IfNotPresent"))
        .await?;
    let missing = back_off("missing").await?;
    ensure!(
        missing.contains("not found") || missing.contains("manifest unknown"),
        "missing tag: {missing:?}"
    );

    // Always pulls the tag pushed again; IfNotPresent keeps the engine's copy.
    create(cx, &reader("first", &moving, true, "Always")).await?;
    ensure!(output("first").await?.trim() == "one", "first pull");
    // The registry gets new content under the tag; the engine keeps the copy it pulled.
    let pulled =
        docker(&client_config, &["image", "inspect", "--format", "{{.Id}}", &moving], None)?;
    build("two", &moving)?;
    docker(&client_config, &["tag", pulled.trim(), &moving], None)?;
    create(cx, &reader("kept", &moving, true, "IfNotPresent")).await?;
    create(cx, &reader("again", &moving, true, "Always")).await?;
    ensure!(output("kept").await?.trim() == "one", "IfNotPresent pulled again");
    ensure!(output("again").await?.trim() == "two", "Always did not pull the new content");
    // The engine's state lives in a cache across runs: forget the tags of this run's registry.
    let _ = docker(&client_config, &["rmi", "-f", &private, &moving], None);
    Ok(())
}
