package main

import (
	"context"

	lookalikev1 "lookalike/proto/lookalike/v1"
)

// similarJSON is `lookalike similar --json`.
type similarJSON struct {
	ID      string       `json:"id"`
	Results []resultJSON `json:"results"`
}

func runSimilar(ctx context.Context, a *app, args []string) error {
	fs := newFlagSet(a, "similar", "[flags] ID",
		"More like this: the products that look most like the stored product ID, best first.\nThe product itself is never among its own results.")
	var cf clientFlags
	var rf rankFlags
	cf.register(fs, a)
	rf.register(fs)
	id, err := rf.parse(fs, args, "ID")
	if err != nil {
		return err
	}
	resp, err := callOnce(ctx, &cf, func(ctx context.Context, c lookalikev1.LookalikeClient) (*lookalikev1.SearchResponse, error) {
		return c.SearchById(ctx, &lookalikev1.SearchByIdRequest{
			Id: id, K: int32(rf.k), Filter: rf.filter.proto(), MinScore: float32(rf.minScore), Ef: int32(rf.ef),
			GroupBy: rf.groupBy, NotLike: rf.notLike, Diversity: float32(rf.diversity),
			Expand: int32(rf.expand), ExpandAlpha: float32(rf.expandAlpha), Boosts: rf.boosts,
		})
	})
	if err != nil {
		return err
	}
	if rf.json {
		return writeJSON(a.stdout, similarJSON{ID: id, Results: toResultsJSON(resp.GetResults())})
	}
	return printResultsTable(a.stdout, resp.GetResults())
}
