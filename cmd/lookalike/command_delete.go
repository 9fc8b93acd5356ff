package main

import (
	"context"
	"fmt"

	lookalikev1 "lookalike/proto/lookalike/v1"
)

// deleteJSON is `lookalike delete --json`: the ids removed and, per id, why one was not.
type deleteJSON struct {
	Deleted []string          `json:"deleted"`
	Failed  map[string]string `json:"failed"`
}

func runDelete(ctx context.Context, a *app, args []string) error {
	fs := newFlagSet(a, "delete", "[flags] ID...",
		"Remove products by id. Every id is attempted; the exit status is 1 if any failed (for example NOT_FOUND).")
	var cf clientFlags
	cf.register(fs, a)
	asJSON := fs.Bool("json", false, "print JSON instead of lines")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return usagef("want at least one ID")
	}
	c, err := cf.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	out := deleteJSON{Deleted: []string{}, Failed: map[string]string{}}
	for _, id := range fs.Args() {
		callCtx, cancel := c.call(ctx)
		_, err := c.client.Delete(callCtx, &lookalikev1.DeleteRequest{Id: id})
		cancel()
		if err != nil {
			out.Failed[id] = describeRPCError(cf.server, err).Error()
			if !*asJSON {
				fmt.Fprintf(a.stdout, "failed  %s: %s\n", id, out.Failed[id])
			}
			continue
		}
		out.Deleted = append(out.Deleted, id)
		if !*asJSON {
			fmt.Fprintf(a.stdout, "deleted %s\n", id)
		}
	}
	if *asJSON {
		if err := writeJSON(a.stdout, out); err != nil {
			return err
		}
	}
	if len(out.Failed) > 0 {
		return fmt.Errorf("%d of %d deletions failed", len(out.Failed), fs.NArg())
	}
	return nil
}
