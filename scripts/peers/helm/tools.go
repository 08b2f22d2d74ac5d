//go:build tools

// Package tools pins the Helm CLI (helm.sh/helm/v4/cmd/helm) that scripts/peers.sh builds for the
// chart's checks (helm lint, helm template) and its end-to-end install.
package tools

import _ "helm.sh/helm/v4/cmd/helm"
