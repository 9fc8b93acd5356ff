package main

import (
	"context"

	lookalikev1 "lookalike/proto/lookalike/v1"
)

func runGet(ctx context.Context, a *app, args []string) error {
	fs := newFlagSet(a, "get", "[flags] ID",
		"Show the stored product ID: category, title, attributes, timestamps and its photos (id, URL, hashes, kept copy).")
	var cf clientFlags
	cf.register(fs, a)
	withVector := fs.Bool("vector", false, "also fetch each photo's stored embedding")
	asJSON := fs.Bool("json", false, "print the product as JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("want exactly one ID, got %d arguments", fs.NArg())
	}
	resp, err := callOnce(ctx, &cf, func(ctx context.Context, c lookalikev1.LookalikeClient) (*lookalikev1.GetResponse, error) {
		return c.Get(ctx, &lookalikev1.GetRequest{Id: fs.Arg(0), IncludeVector: *withVector})
	})
	if err != nil {
		return err
	}
	if *asJSON {
		return writeJSON(a.stdout, toProductJSON(resp.GetProduct()))
	}
	return printProduct(a.stdout, resp.GetProduct())
}
