// Command statscheck reads a kubelet /stats/summary JSON document on stdin and checks it against the
// upstream Go types (k8s.io/kubelet/pkg/apis/stats/v1alpha1.Summary, at the control plane's version):
// the document must decode strictly (no unknown fields, no trailing data), and the fields that
// consumers of the summary rely on must be present. It prints every problem found and exits 1 if
// there is any (2 for usage errors), or prints "ok: ..." and exits 0.
//
// Usage: statscheck [-node-usage] < summary.json
//
//	-node-usage   also require the node's cpu.time/usageCoreNanoSeconds and
//	              memory.time/workingSetBytes
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	statsv1alpha1 "k8s.io/kubelet/pkg/apis/stats/v1alpha1"
)

func main() {
	nodeUsage := flag.Bool("node-usage", false, "also require the node's CPU and memory usage")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: statscheck [-node-usage] < summary.json")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 0 {
		flag.Usage()
		os.Exit(2)
	}
	input, err := io.ReadAll(os.Stdin)
	if err != nil {
		fmt.Fprintf(os.Stderr, "statscheck: reading stdin: %v\n", err)
		os.Exit(2)
	}
	summary, err := decode(input)
	if err != nil {
		fmt.Fprintf(os.Stderr, "statscheck: decode: %v\n", err)
		os.Exit(1)
	}
	if missing := check(summary, *nodeUsage); len(missing) > 0 {
		for _, m := range missing {
			fmt.Fprintf(os.Stderr, "statscheck: missing %s\n", m)
		}
		os.Exit(1)
	}
	containers := 0
	for _, p := range summary.Pods {
		containers += len(p.Containers)
	}
	fmt.Printf("ok: node %q, %d pods, %d containers\n", summary.Node.NodeName, len(summary.Pods), containers)
}

// decode decodes exactly one Summary, rejecting unknown fields and anything after it.
func decode(input []byte) (*statsv1alpha1.Summary, error) {
	dec := json.NewDecoder(bytes.NewReader(input))
	dec.DisallowUnknownFields()
	var s statsv1alpha1.Summary
	if err := dec.Decode(&s); err != nil {
		return nil, err
	}
	var extra json.RawMessage
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			return nil, fmt.Errorf("after the summary: %w", err)
		}
		return nil, errors.New("trailing data after the summary")
	}
	return &s, nil
}

// check lists the consumer-required fields that are absent.
func check(s *statsv1alpha1.Summary, nodeUsage bool) []string {
	var missing []string
	if s.Node.NodeName == "" {
		missing = append(missing, "node.nodeName")
	}
	if nodeUsage {
		missing = append(missing, checkCPU("node", s.Node.CPU)...)
		missing = append(missing, checkMemory("node", s.Node.Memory)...)
	}
	for i, p := range s.Pods {
		at := fmt.Sprintf("pods[%d]", i)
		if p.PodRef.Name == "" {
			missing = append(missing, at+".podRef.name")
		} else {
			at = fmt.Sprintf("pods[%d](%s/%s)", i, p.PodRef.Namespace, p.PodRef.Name)
		}
		if p.PodRef.Namespace == "" {
			missing = append(missing, at+".podRef.namespace")
		}
		if p.PodRef.UID == "" {
			missing = append(missing, at+".podRef.uid")
		}
		for j, c := range p.Containers {
			cat := fmt.Sprintf("%s.containers[%d]", at, j)
			if c.Name == "" {
				missing = append(missing, cat+".name")
			} else {
				cat = fmt.Sprintf("%s.containers[%d](%s)", at, j, c.Name)
			}
			if c.StartTime.IsZero() {
				missing = append(missing, cat+".startTime")
			}
			missing = append(missing, checkCPU(cat, c.CPU)...)
			missing = append(missing, checkMemory(cat, c.Memory)...)
		}
	}
	return missing
}

func checkCPU(at string, cpu *statsv1alpha1.CPUStats) []string {
	if cpu == nil {
		return []string{at + ".cpu"}
	}
	var missing []string
	if cpu.Time.IsZero() {
		missing = append(missing, at+".cpu.time")
	}
	if cpu.UsageCoreNanoSeconds == nil {
		missing = append(missing, at+".cpu.usageCoreNanoSeconds")
	}
	return missing
}

func checkMemory(at string, mem *statsv1alpha1.MemoryStats) []string {
	if mem == nil {
		return []string{at + ".memory"}
	}
	var missing []string
	if mem.Time.IsZero() {
		missing = append(missing, at+".memory.time")
	}
	if mem.WorkingSetBytes == nil {
		missing = append(missing, at+".memory.workingSetBytes")
	}
	return missing
}
