package main

import (
	"context"

	lookalikev1 "lookalike/proto/lookalike/v1"
)

func runGet(ctx context.Context, a *app, args []string) error {
	fs := newFlagSet(a, "get", "[flags] ID",
		"Show the stored product ID: category, title, attributes, image URL and hash, timestamps.")
	var cf clientFlags
	cf.register(fs, a)
	withVector := fs.Bool("vector", false, "also fetch the stored embedding")
	asJSON := fs.Bool("json", false, "print the product as JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("want exactly one ID, got %d arguments", fs.NArg())
	}
	c, err := cf.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	callCtx, cancel := c.call(ctx)
	defer cancel()
	resp, err := c.client.Get(callCtx, &lookalikev1.GetRequest{Id: fs.Arg(0), IncludeVector: *withVector})
	if err != nil {
		return describeRPCError(cf.server, err)
	}
	if *asJSON {
		return writeJSON(a.stdout, toProductJSON(resp.GetProduct()))
	}
	return printProduct(a.stdout, resp.GetProduct())
}
