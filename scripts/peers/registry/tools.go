//go:build tools

// Package tools pins the registry command for `go build` (scripts/peers.sh).
package tools

import _ "github.com/distribution/distribution/v3/cmd/registry"
