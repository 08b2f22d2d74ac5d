//go:build tools

// Package tools records the built package so `go mod tidy` keeps its dependencies.
package tools

import _ "github.com/docker/compose/v2/cmd"
