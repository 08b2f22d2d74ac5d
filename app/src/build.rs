//! What this build is: its version (Cargo's, from the git tag a release is cut at: `v<version>`)
//! and the commit it was built from (`app/build.rs`), as `--version`, the node's
//! `nodeInfo.kubeletVersion` and the `vk_build_info` metric show them.

/// The crate version (`Cargo.toml`'s workspace version).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The git commit built (12 hex digits), or `unknown` when neither `VK_GIT_COMMIT` nor git told.
pub const COMMIT: &str = env!("VK_GIT_COMMIT");

/// `<version> (commit <commit>, Kubernetes <version served>)`: the `--version` line.
pub const LONG_VERSION: &str =
    concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("VK_GIT_COMMIT"), ", Kubernetes v1.36.3)");

#[cfg(test)]
mod tests {
    #[test]
    fn the_version_line_names_the_commit_and_the_kubernetes_version_served() {
        assert_eq!(
            super::LONG_VERSION,
            format!(
                "{} (commit {}, Kubernetes {})",
                super::VERSION,
                super::COMMIT,
                crate::config::KUBERNETES_VERSION
            )
        );
        assert!(!super::COMMIT.is_empty());
    }
}
