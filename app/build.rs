//! Gives the crate `VK_GIT_COMMIT`: the commit it is built from (12 hex digits), from the
//! `VK_GIT_COMMIT` environment variable when set (builds without a `.git`, such as the image's),
//! else from `git rev-parse`, else `unknown`.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let s = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (out.status.success() && !s.is_empty()).then_some(s)
}

fn main() {
    println!("cargo:rerun-if-env-changed=VK_GIT_COMMIT");
    let given = std::env::var("VK_GIT_COMMIT").ok().filter(|c| !c.trim().is_empty());
    let commit = given.or_else(|| {
        // Built again when HEAD moves (a commit, a checkout): its reflog changes.
        if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) {
            println!("cargo:rerun-if-changed={dir}/HEAD");
            println!("cargo:rerun-if-changed={dir}/logs/HEAD");
        }
        git(&["rev-parse", "--short=12", "HEAD"])
    });
    let commit = commit.unwrap_or_else(|| "unknown".to_owned());
    let clean: String =
        commit.chars().filter(char::is_ascii_alphanumeric).take(40).collect::<String>();
    println!("cargo:rustc-env=VK_GIT_COMMIT={}", if clean.is_empty() { "unknown" } else { &clean });
}
