//! The end-to-end tests' pods: the workspace's one builder ([`vk_domain::testing`]) with what a
//! pod of these tests has by default, e.g.
//! `pod("web").namespace("ns").on_node("vk").container("c", &["sleep", "300"])`.

pub use vk_domain::testing::PodBuilder;

/// A pod named `name` in `default`, no containers yet, whose containers run image
/// [`crate::BUSYBOX`] (on raw_exec, which ignores the image, the command and its arguments run on
/// the host), stopped with a 5 s grace period.
pub fn pod(name: &str) -> PodBuilder {
    vk_domain::testing::pod(name).image(crate::BUSYBOX).grace(5)
}
