package main

import (
	"context"
	"fmt"

	lookalikev1 "lookalike/proto/lookalike/v1"
)

// checkJSON is `lookalike check --json`.
type checkJSON struct {
	Image       string      `json:"image"`
	IsDuplicate bool        `json:"is_duplicate"`
	Threshold   float32     `json:"threshold"`
	BestMatch   *resultJSON `json:"best_match"` // null when nothing is inside the filter
}

func runCheck(ctx context.Context, a *app, args []string) error {
	fs := newFlagSet(a, "check", "[flags] IMAGE",
		"Is this photo already in the catalogue? Compares IMAGE with its closest product and says\n"+
			"whether they score at or above --threshold, e.g. before accepting a seller's new listing.\n"+
			"The exit status is 0 either way; scripts read the answer from --json.")
	var cf clientFlags
	var ff filterFlags
	cf.register(fs, a)
	ff.register(fs)
	threshold := fs.Float64("threshold", 0.9, "similarity at or above which the closest product counts as a duplicate")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("want exactly one IMAGE, got %d arguments", fs.NArg())
	}
	if *threshold < -1 || *threshold > 1 {
		return usagef("--threshold must be a similarity in -1..1, got %g", *threshold)
	}
	ref := fs.Arg(0)
	img, err := newImageLoader(cf.timeout).load(ctx, ref)
	if err != nil {
		return fmt.Errorf("read image: %w", err)
	}
	t := float32(*threshold)
	resp, err := callOnce(ctx, &cf, func(ctx context.Context, c lookalikev1.LookalikeClient) (*lookalikev1.CheckDuplicateResponse, error) {
		return c.CheckDuplicate(ctx, &lookalikev1.CheckDuplicateRequest{Image: img, Threshold: &t, Filter: ff.proto()})
	})
	if err != nil {
		return err
	}
	out := checkJSON{Image: ref, IsDuplicate: resp.GetIsDuplicate(), Threshold: resp.GetThreshold()}
	if bm := resp.GetBestMatch(); bm != nil {
		out.BestMatch = &resultJSON{Rank: 1, Score: bm.GetScore(), Product: toProductJSON(bm.GetProduct())}
	}
	if *asJSON {
		return writeJSON(a.stdout, out)
	}
	switch {
	case out.BestMatch == nil:
		fmt.Fprintf(a.stdout, "not a duplicate: no product to compare with\n")
	case out.IsDuplicate:
		fmt.Fprintf(a.stdout, "DUPLICATE of %s (%s), score %.4f >= threshold %.2f\n", out.BestMatch.Product.ID, clean(out.BestMatch.Product.Title, 60), out.BestMatch.Score, out.Threshold)
	default:
		fmt.Fprintf(a.stdout, "not a duplicate: closest is %s (%s), score %.4f < threshold %.2f\n", out.BestMatch.Product.ID, clean(out.BestMatch.Product.Title, 60), out.BestMatch.Score, out.Threshold)
	}
	return nil
}
