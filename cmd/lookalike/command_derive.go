package main

import (
	"context"
	"fmt"

	"lookalike/catalog"
	"lookalike/embed"
)

// deriveJSON is `lookalike derive --json`.
type deriveJSON struct {
	From     string `json:"from"`
	To       string `json:"to"`
	Identity string `json:"identity"`
	Dim      int    `json:"dim"`
	// Steps counts the post-processing steps applied to every stored vector.
	Steps         int  `json:"steps"`
	Products      int  `json:"products"`
	Photos        int  `json:"photos"`
	KeptPhotos    int  `json:"kept_photos"`
	Decisions     int  `json:"decisions"`
	PolicyDropped bool `json:"policy_dropped"`
}

func runDerive(ctx context.Context, a *app, args []string) error {
	fs := newFlagSet(a, "derive", "--from DIR --to DIR --spec SPEC [flags]",
		"Write a new data directory whose photos have the stored vectors of --from under the spec's\n"+
			"post-processing steps that --from's vectors have not been through (a projection from\n"+
			"'lookalike adapt', say), and everything else as stored: products, photo ids and hashes, kept\n"+
			"photos, duplicate decisions. Nothing is embedded, and --from is only read: serve --to with\n"+
			"--spec SPEC, and point the server back at --from to undo. The duplicate policy is not carried\n"+
			"over (its thresholds are similarities of the old space): calibrate the new catalogue. --from\n"+
			"must be stopped (or a restored backup).")
	var mf modelFlags
	mf.register(fs, a)
	from := fs.String("from", "", "the data directory to read")
	to := fs.String("to", "", "the new data directory (must not hold a catalogue)")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usagef("takes no arguments")
	}
	if *from == "" || *to == "" || mf.spec == "" {
		return usagef("give --from, --to and --spec")
	}
	if *from == *to {
		return usagef("--from and --to are the same directory")
	}
	cfg, err := mf.config(a.logger)
	if err != nil {
		return err
	}
	var d embed.Derivation
	rep, err := catalog.Derive(ctx, catalog.DeriveConfig{From: *from, To: *to, Logger: a.logger,
		Target: func(source string) (catalog.DeriveTarget, error) {
			if d, err = embed.DeriveFrom(cfg.ModelPath, cfg.SpecPath, source); err != nil {
				return catalog.DeriveTarget{}, err
			}
			if d.Steps == 0 {
				return catalog.DeriveTarget{}, fmt.Errorf("%s already holds this spec's vectors (%s): nothing to derive", *from, source)
			}
			return catalog.DeriveTarget{ModelIdentity: d.Identity, Dim: d.Dim, Transform: d.Apply}, nil
		}})
	if err != nil {
		return err
	}
	out := deriveJSON{From: *from, To: *to, Identity: d.Identity, Dim: d.Dim, Steps: d.Steps, Products: rep.Products,
		Photos: rep.Photos, KeptPhotos: rep.KeptPhotos, Decisions: rep.Decisions, PolicyDropped: rep.PolicyDropped}
	if *asJSON {
		return writeJSON(a.stdout, out)
	}
	tw := newTable(a.stdout)
	fmt.Fprintf(tw, "derived\t%s -> %s: %d products, %d photos (%d kept), %d decisions\n", out.From, out.To, out.Products, out.Photos, out.KeptPhotos, out.Decisions)
	fmt.Fprintf(tw, "vectors\t%d post-processing step(s) applied: %s, %d dims\n", out.Steps, out.Identity, out.Dim)
	if out.PolicyDropped {
		fmt.Fprintf(tw, "policy\tthe calibrated duplicate policy was not carried over: run 'lookalike calibrate' on the new catalogue\n")
	}
	fmt.Fprintf(tw, "next\tlookalike serve --data %s --spec %s\n", out.To, mf.spec)
	return tw.Flush()
}
