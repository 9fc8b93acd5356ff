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
	var rf rankFlags
	cf.register(fs, a)
	rf.register(fs)
	ref, err := rf.parse(fs, args, "IMAGE")
	if err != nil {
		return err
	}
	img, err := newImageLoader(cf.timeout).load(ctx, ref)
	if err != nil {
		return fmt.Errorf("read image: %w", err)
	}
	resp, err := callOnce(ctx, &cf, func(ctx context.Context, c lookalikev1.LookalikeClient) (*lookalikev1.SearchResponse, error) {
		return c.SearchByImage(ctx, &lookalikev1.SearchByImageRequest{
			Image: img, K: int32(rf.k), Filter: rf.filter.proto(), MinScore: float32(rf.minScore), Ef: int32(rf.ef),
			GroupBy: rf.groupBy, NotLike: rf.notLike, Diversity: float32(rf.diversity),
			Expand: int32(rf.expand), ExpandAlpha: float32(rf.expandAlpha), Boosts: rf.boosts,
		})
	})
	if err != nil {
		return err
	}
	if rf.json {
		return writeJSON(a.stdout, searchJSON{Query: ref, Results: toResultsJSON(resp.GetResults())})
	}
	return printResultsTable(a.stdout, resp.GetResults())
}
