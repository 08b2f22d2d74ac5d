// Command dockerfilecheck parses and lints a Dockerfile with BuildKit's own Dockerfile frontend (the
// code `docker build` runs), offline, and prints the runtime image configuration the build would
// produce, as JSON, for scripts/check-deploy.sh to assert on.
//
//	dockerfilecheck <Dockerfile>
//
// It exits non-zero when the Dockerfile does not parse, does not convert to a build graph (unknown
// stage, bad flag, bad instruction), or when a BuildKit lint rule (the checks of
// `docker build --check`, https://docs.docker.com/reference/build-checks/) warns. Base images are
// not pulled: their configuration is taken as an empty linux/amd64 image with one layer, so the
// printed configuration holds only what the Dockerfile itself sets.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"

	"github.com/moby/buildkit/client/llb"
	"github.com/moby/buildkit/client/llb/sourceresolver"
	"github.com/moby/buildkit/frontend/dockerfile/dockerfile2llb"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerui"
	digest "github.com/opencontainers/go-digest"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
)

// offline answers every base image lookup with an empty, non-scratch linux/amd64 image.
type offline struct{}

func (offline) ResolveImageConfig(_ context.Context, ref string, _ sourceresolver.Opt) (string, digest.Digest, []byte, error) {
	cfg := []byte(`{"architecture":"amd64","os":"linux","config":{},` +
		`"rootfs":{"type":"layers","diff_ids":["sha256:0000000000000000000000000000000000000000000000000000000000000000"]}}`)
	return ref, "", cfg, nil
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "dockerfilecheck:", err)
		os.Exit(1)
	}
}

func run() error {
	if len(os.Args) != 2 {
		return fmt.Errorf("usage: dockerfilecheck <Dockerfile>")
	}
	path := os.Args[1]
	dt, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	ctx := context.Background()
	// Where lint findings point: the Dockerfile as a local source, as `docker build` names it.
	src := llb.Local("dockerfile")
	srcDef, err := src.Marshal(ctx)
	if err != nil {
		return err
	}
	sourceMap := llb.NewSourceMap(&src, path, "Dockerfile", dt)
	sourceMap.Definition = srcDef
	platform := ocispecs.Platform{OS: "linux", Architecture: "amd64"}
	opt := func() dockerfile2llb.ConvertOpt {
		return dockerfile2llb.ConvertOpt{
			Config:         dockerui.Config{},
			MetaResolver:   offline{},
			SourceMap:      sourceMap,
			TargetPlatform: &platform,
		}
	}

	lint, err := dockerfile2llb.DockerfileLint(ctx, dt, opt())
	if err != nil {
		return err
	}
	if lint.Error != nil {
		return fmt.Errorf("%s: %s", path, lint.Error.Message)
	}
	for _, w := range lint.Warnings {
		line := 0
		if len(w.Location.Ranges) > 0 {
			line = int(w.Location.Ranges[0].Start.Line)
		}
		fmt.Fprintf(os.Stderr, "%s:%d: %s: %s (%s)\n", path, line, w.RuleName, w.Detail, w.URL)
	}
	if n := len(lint.Warnings); n > 0 {
		return fmt.Errorf("%d lint warning(s)", n)
	}

	// The full conversion, as a build would do it: the final stage's build graph and image config.
	var warnings []string
	o := opt()
	o.Warn = func(rule, _, _, msg string, _ []parser.Range) { warnings = append(warnings, rule+": "+msg) }
	st, img, _, _, err := dockerfile2llb.Dockerfile2LLB(ctx, dt, o)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if len(warnings) > 0 {
		return fmt.Errorf("%s: %v", path, warnings)
	}
	def, err := st.Marshal(ctx)
	if err != nil {
		return fmt.Errorf("%s: build graph: %w", path, err)
	}
	out, err := json.MarshalIndent(struct {
		BuildSteps int               `json:"buildSteps"`
		Config     any               `json:"config"`
		Platform   ocispecs.Platform `json:"platform"`
	}{len(def.Def), img.Config, img.Platform}, "", "  ")
	if err != nil {
		return err
	}
	fmt.Println(string(out))
	return nil
}
