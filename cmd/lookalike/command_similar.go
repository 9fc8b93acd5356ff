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
	var ff filterFlags
	cf.register(fs, a)
	ff.register(fs)
	k := fs.Int("k", 10, "how many results at most (1..1000)")
	minScore := fs.Float64("min-score", 0, "drop results scoring below this similarity")
	ef := fs.Int("ef", 0, "HNSW search breadth; 0 is the server's default")
	asJSON := fs.Bool("json", false, "print JSON instead of a table")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("want exactly one ID, got %d arguments", fs.NArg())
	}
	if *k < 1 || *k > 1000 {
		return usagef("--k must be in 1..1000, got %d", *k)
	}
	id := fs.Arg(0)
	c, err := cf.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	callCtx, cancel := c.call(ctx)
	defer cancel()
	resp, err := c.client.SearchById(callCtx, &lookalikev1.SearchByIdRequest{
		Id: id, K: int32(*k), Filter: ff.proto(), MinScore: float32(*minScore), Ef: int32(*ef),
	})
	if err != nil {
		return describeRPCError(cf.server, err)
	}
	if *asJSON {
		return writeJSON(a.stdout, similarJSON{ID: id, Results: toResultsJSON(resp.GetResults())})
	}
	return printResultsTable(a.stdout, resp.GetResults())
}
