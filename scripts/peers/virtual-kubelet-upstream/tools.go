//go:build tools

// Package tools records the built package so `go mod tidy` keeps its dependencies.
package tools

import _ "github.com/virtual-kubelet/virtual-kubelet/cmd/virtual-kubelet"
