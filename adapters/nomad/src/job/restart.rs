//! Kubernetes' `restartPolicy` as Nomad's job type, restart and reschedule policies, and the
//! durations of Nomad's JSON (nanoseconds).

use std::time::Duration;

use vk_domain::pod::RestartPolicy;

use crate::api::{ReschedulePolicy, RestartPolicy as NomadRestart};

/// A duration as Nomad's JSON writes it: nanoseconds, saturating.
pub(super) fn ns(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// Job type, restart and reschedule policies giving Kubernetes' `restartPolicy` semantics. The
/// in-place restart delay approximates the kubelet's crash-loop back-off (10 s, doubling to 5 min).
pub(super) fn policies(p: RestartPolicy) -> (&'static str, NomadRestart, ReschedulePolicy) {
    let min = Duration::from_secs(60);
    let no_reschedule = ReschedulePolicy {
        attempts: 0,
        interval: ns(24 * 60 * min),
        delay: ns(Duration::from_secs(5)),
        delay_function: "constant".into(),
        max_delay: 0,
        unlimited: false,
    };
    let restart_in_place = NomadRestart {
        attempts: 10,
        interval: ns(5 * min),
        delay: ns(Duration::from_secs(10)),
        mode: "delay".into(),
    };
    match p {
        RestartPolicy::Always => (
            "service",
            restart_in_place,
            ReschedulePolicy {
                attempts: 0,
                interval: 0,
                delay: ns(Duration::from_secs(30)),
                delay_function: "exponential".into(),
                max_delay: ns(60 * min),
                unlimited: true,
            },
        ),
        RestartPolicy::OnFailure => ("batch", restart_in_place, no_reschedule),
        RestartPolicy::Never => (
            "batch",
            NomadRestart {
                attempts: 0,
                interval: ns(24 * 60 * min),
                delay: ns(Duration::from_secs(15)),
                mode: "fail".into(),
            },
            no_reschedule,
        ),
    }
}
