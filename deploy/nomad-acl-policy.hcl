# The least a virtual kubelet needs of Nomad when ACLs are on. Each capability is there for the
# feature named beside it; the end-to-end suite runs with this policy's token, and its test
# `nomad_acl_policy` removes one capability at a time and shows that feature break.
#
#   nomad acl policy apply -description "virtual-kubelet" virtual-kubelet deploy/nomad-acl-policy.hcl
#   nomad acl token create -name virtual-kubelet -policy virtual-kubelet   # its Secret ID is NOMAD_TOKEN
#
# One `namespace` block like the first for each Nomad namespace the node registers jobs in:
# `--nomad-namespace` ("default" when unset) and each of `--allowed-nomad-namespaces`.
namespace "default" {
  capabilities = [
    "list-jobs",       # the jobs of this node's pods: at start and at each full resync
    "read-job",        # a job, its allocations and evaluations, allocation stats, the event stream
    "submit-job",      # a pod's job registered, updated, and stopped when the pod is deleted
    "read-fs",         # kubectl logs and attach (the log directory, and Nomad's logs endpoint,
                       # which read-fs opens as read-logs does), termination message files
    "alloc-exec",      # kubectl exec and exec probes (drivers with isolation: docker, exec)
    "alloc-lifecycle", # containers restarted by their liveness probe, force-deleted pods killed
    # "alloc-node-exec", # kubectl exec and exec probes on raw_exec (no isolation): only for a node
    #                    # whose pods may run on raw_exec (--nomad-driver or --allowed-drivers)
  ]

  # A pod's ConfigMap and Secret data, kept in the Variable of its job (never in the job):
  # nomad/jobs/<--job-prefix><namespace>_<pod>. Change the prefix with --job-prefix.
  variables {
    path "nomad/jobs/k8s-*" {
      capabilities = ["write", "read", "destroy", "list"]
    }
  }
}

# The node's allocatable: what other jobs' allocations hold on its Nomad nodes, in every
# namespace. Without it, only the namespaces above count.
namespace "*" {
  capabilities = ["read-job"]
}

# The node's capacity (the Nomad nodes, their resources and addresses), the node events that
# prompt a capacity check, and node stats.
node {
  policy = "read"
}
