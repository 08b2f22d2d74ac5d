//! Job IDs: unique, and never colliding with the older hashed form.

use super::*;

#[test]
fn ids_are_unique_across_namespaces() {
    let a = job_id("k8s-", &PodKey::new("a", "web").unwrap());
    let b = job_id("k8s-", &PodKey::new("b", "web").unwrap());
    assert_eq!(a, "k8s-a_web");
    assert_ne!(a, b);
    // Dots (refused in Variable paths) are written `~`; `_` separates: no collisions.
    assert_eq!(job_id("", &PodKey::new("a", "b.c").unwrap()), "a_b~c");
    assert_ne!(
        job_id("", &PodKey::new("a-b", "c").unwrap()),
        job_id("", &PodKey::new("a", "b-c").unwrap())
    );
    assert_eq!(variable_path("k8s-a_web"), "nomad/jobs/k8s-a_web");
    assert_eq!(gate_path("k8s-a_web", "init"), "nomad/jobs/k8s-a_web/pod/init");
    // Long names are cut and hashed, deterministically and distinctly.
    let long = |n: &str| job_id("k8s-", &PodKey::new("team", n).unwrap());
    let (x, y) = (long(&"x".repeat(200)), long(&format!("{}y", "x".repeat(199))));
    assert_eq!((x.len(), y.len()), (MAX_JOB_ID, MAX_JOB_ID));
    assert_ne!(x, y);
    assert_eq!(x, long(&"x".repeat(200)));
    assert!(valid_prefix("k8s-") && !valid_prefix("k8s.") && !valid_prefix(&"p".repeat(17)));
    // A pod named like a hashed ID gets its own ID.
    let lookalike =
        PodKey::new("team", x.strip_prefix("k8s-team_").unwrap().to_lowercase()).unwrap();
    assert_ne!(job_id("k8s-", &lookalike), x);
}

/// Two pod names whose IDs collided under the FNV-1a scheme, found by a parallel collision
/// search (2^32 hashes, a minute on two cores): the old ID let one pod take the other's job.
#[test]
fn a_forged_collision_of_the_old_hash_gives_two_ids_now() {
    let a =
        PodKey::new("e2e-hostile", "forged-fnv-collision-of-two-pod-names-eiep25qr3dq4j").unwrap();
    let b =
        PodKey::new("e2e-hostile", "forged-fnv-collision-of-two-pod-names-ncdlgzluhxobq").unwrap();
    assert_eq!(fnv(&[&raw_job_id("k8s-", &a)]), "395d6f58a8095121");
    assert_eq!(legacy_job_id("k8s-", &a), legacy_job_id("k8s-", &b), "the collision");
    let (ia, ib) = (job_id("k8s-", &a), job_id("k8s-", &b));
    assert_ne!(ia, ib);
    assert_eq!((ia.len(), ib.len()), (MAX_JOB_ID, MAX_JOB_ID));
    assert!(ia.starts_with("k8s-e2e-hostile_forged-fnv-H"), "{ia}");
    assert!(ia.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '~')));
    assert_eq!(legacy_job_id("k8s-", &PodKey::new("a", "short").unwrap()), None);
}
