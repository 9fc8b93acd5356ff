package main

import (
	"context"
	"fmt"
	"strings"

	"lookalike/embed"
)

// modelJSON is `lookalike model --json`.
type modelJSON struct {
	Model    string             `json:"model"`
	SpecFile string             `json:"spec_file"` // "" when the built-in MobileNetV2 spec applies
	Runtime  string             `json:"runtime"`
	Identity string             `json:"identity"`
	Dim      int                `json:"dim"`
	MaxBatch int                `json:"max_batch"`
	Inputs   []embed.TensorInfo `json:"inputs"`
	Outputs  []embed.TensorInfo `json:"outputs"`
	Spec     embed.Spec         `json:"spec"`
}

func runModel(ctx context.Context, a *app, args []string) error {
	fs := newFlagSet(a, "model", "[flags]",
		"Load the embedding model in this process (no server) and describe it: its file, spec,\n"+
			"identity (what a data directory is tied to), inputs and outputs.")
	var mf modelFlags
	mf.register(fs, a)
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usagef("takes no arguments")
	}
	e, cfg, err := mf.open(ctx, a.logger)
	if err != nil {
		return err
	}
	defer e.Close()
	out := modelJSON{
		Model:    e.ModelPath(),
		SpecFile: e.SpecPath(),
		Runtime:  cfg.RuntimePath,
		Identity: e.Identity(),
		Dim:      e.Dim(),
		MaxBatch: e.MaxBatch(),
		Inputs:   e.Inputs(),
		Outputs:  e.Outputs(),
		Spec:     e.Spec(),
	}
	if *asJSON {
		return writeJSON(a.stdout, out)
	}
	s := out.Spec
	tw := newTable(a.stdout)
	fmt.Fprintf(tw, "model\t%s\n", out.Model)
	if out.SpecFile == "" {
		fmt.Fprintf(tw, "spec\tbuilt-in (the shared MobileNetV2 embedding models)\n")
	} else {
		fmt.Fprintf(tw, "spec\t%s\n", out.SpecFile)
	}
	fmt.Fprintf(tw, "runtime\t%s\n", out.Runtime)
	fmt.Fprintf(tw, "identity\t%s\n", out.Identity)
	fmt.Fprintf(tw, "dim\t%d\n", out.Dim)
	for _, t := range out.Inputs {
		fmt.Fprintf(tw, "input\t%s\n", tensorLine(t, s.Input))
	}
	used := s.Output
	if s.Pooling != nil {
		used = s.Pooling.Output // the feature map the pooling reads, derived at load time
	}
	for _, t := range out.Outputs {
		fmt.Fprintf(tw, "output\t%s\n", tensorLine(t, used))
	}
	fmt.Fprintf(tw, "preprocess\t%s %dx%d, %s (shorter side %d, %s), pixel scale %g\n", s.Layout, s.Width, s.Height, s.Resize.Policy, s.Resize.ShorterSide, s.Resize.Kernel, s.PixelScale)
	fmt.Fprintf(tw, "normalise\t%s mean %v std %v\n", s.Channels, s.Mean, s.Std)
	if p := s.Pooling; p != nil {
		fmt.Fprintf(tw, "pooling\t%s of %s (p %g, levels %d, overlap %g)\n", p.Op, p.Output, p.P, p.Levels, p.Overlap)
	}
	for _, v := range s.Views {
		fmt.Fprintf(tw, "view\tshorter side %d, centre %dx%d, mirror %v\n", v.ShorterSide, v.Crop, v.Crop, v.Mirror)
	}
	for _, p := range s.Post {
		fmt.Fprintf(tw, "post\t%s %s (sha256 %s...)\n", p.Op, p.File, p.SHA256[:16])
	}
	return tw.Flush()
}

func tensorLine(t embed.TensorInfo, used string) string {
	dims := make([]string, len(t.Shape))
	for i, d := range t.Shape {
		if d < 0 {
			dims[i] = "N"
		} else {
			dims[i] = fmt.Sprint(d)
		}
	}
	line := fmt.Sprintf("%s %s [%s]", t.Name, t.Type, strings.Join(dims, ","))
	if t.Name == used {
		line += "  <- used"
	}
	return line
}
