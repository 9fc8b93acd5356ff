package main

import (
	"context"
	"fmt"

	lookalikev1 "lookalike/proto/lookalike/v1"
)

// searchJSON is `lookalike search --json`.
type searchJSON struct {
	Query   string       `json:"query"`
	Results []resultJSON `json:"results"`
}

func runSearch(ctx context.Context, a *app, args []string) error {
	fs := newFlagSet(a, "search", "[flags] IMAGE",
		"Find the catalogue products that look most like IMAGE (a local file or an http(s) URL), best first.\nScores are cosine similarities: 1 is the same picture.")
	var cf clientFlags
	var ff filterFlags
	cf.register(fs, a)
	ff.register(fs)
	k := fs.Int("k", 10, "how many results at most (1..1000)")
	minScore := fs.Float64("min-score", 0, "drop results scoring below this similarity")
	ef := fs.Int("ef", 0, "HNSW search breadth; 0 is the server's default (larger: slower, more exact)")
	asJSON := fs.Bool("json", false, "print JSON instead of a table")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("want exactly one IMAGE, got %d arguments", fs.NArg())
	}
	if *k < 1 || *k > 1000 {
		return usagef("--k must be in 1..1000, got %d", *k)
	}
	ref := fs.Arg(0)
	img, err := newImageLoader(cf.timeout).load(ctx, ref)
	if err != nil {
		return fmt.Errorf("read image: %w", err)
	}
	c, err := cf.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	callCtx, cancel := c.call(ctx)
	defer cancel()
	resp, err := c.client.SearchByImage(callCtx, &lookalikev1.SearchByImageRequest{
		Image: img, K: int32(*k), Filter: ff.proto(), MinScore: float32(*minScore), Ef: int32(*ef),
	})
	if err != nil {
		return describeRPCError(cf.server, err)
	}
	if *asJSON {
		return writeJSON(a.stdout, searchJSON{Query: ref, Results: toResultsJSON(resp.GetResults())})
	}
	return printResultsTable(a.stdout, resp.GetResults())
}
