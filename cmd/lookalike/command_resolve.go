package main

import (
	"context"
	"fmt"

	"google.golang.org/grpc/metadata"

	lookalikev1 "lookalike/proto/lookalike/v1"
)

// runDedupResolve is `lookalike dedup resolve`.
func runDedupResolve(ctx context.Context, a *app, args []string) error {
	fs := newFlagSet(a, "dedup resolve", "[flags] ID ID...",
		"Record a reviewer's decision on a pair or a cluster of products: --same (they are one product;\n"+
			"--keep names the one to keep) or --different (never report them as duplicates again). Every\n"+
			"later 'dedup' honours it; decisions survive restarts and travel with backups.")
	var cf clientFlags
	cf.register(fs, a)
	same := fs.Bool("same", false, "the products are one product")
	different := fs.Bool("different", false, "the products are different products")
	keep := fs.String("keep", "", "with --same: the product to keep")
	by := fs.String("by", a.getenv("USER"), "who decides (env USER)")
	note := fs.String("note", "", "why")
	asJSON := fs.Bool("json", false, "print the recorded decisions as JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *same == *different {
		return usagef("give exactly one of --same and --different")
	}
	if fs.NArg() < 2 {
		return usagef("want two or more product ids, got %d", fs.NArg())
	}
	verdict := "same"
	if *different {
		verdict = "different"
	}
	resp, err := callOnce(ctx, &cf, func(ctx context.Context, c lookalikev1.LookalikeClient) (*lookalikev1.ResolveDuplicatesResponse, error) {
		ctx = metadata.AppendToOutgoingContext(ctx, "x-lookalike-reviewer", *by)
		return c.ResolveDuplicates(ctx, &lookalikev1.ResolveDuplicatesRequest{Ids: fs.Args(), Verdict: verdict, Keep: *keep, By: *by, Note: *note})
	})
	if err != nil {
		return err
	}
	return printDecisions(a, resp.GetDecisions(), *asJSON, "recorded")
}

// runDedupDecisions is `lookalike dedup decisions`.
func runDedupDecisions(ctx context.Context, a *app, args []string) error {
	fs := newFlagSet(a, "dedup decisions", "[flags]", "List every recorded duplicate decision.")
	var cf clientFlags
	cf.register(fs, a)
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usagef("takes no arguments")
	}
	resp, err := callOnce(ctx, &cf, func(ctx context.Context, c lookalikev1.LookalikeClient) (*lookalikev1.ListDecisionsResponse, error) {
		return c.ListDecisions(ctx, &lookalikev1.ListDecisionsRequest{})
	})
	if err != nil {
		return err
	}
	return printDecisions(a, resp.GetDecisions(), *asJSON, "")
}

// runDedupForget is `lookalike dedup forget`.
func runDedupForget(ctx context.Context, a *app, args []string) error {
	fs := newFlagSet(a, "dedup forget", "[flags] ID ID", "Remove the decision recorded on a pair of products.")
	var cf clientFlags
	cf.register(fs, a)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 2 {
		return usagef("want two product ids, got %d", fs.NArg())
	}
	_, err := callOnce(ctx, &cf, func(ctx context.Context, c lookalikev1.LookalikeClient) (*lookalikev1.ForgetDecisionResponse, error) {
		return c.ForgetDecision(ctx, &lookalikev1.ForgetDecisionRequest{A: fs.Arg(0), B: fs.Arg(1)})
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(a.stdout, "forgot the decision on %s and %s\n", fs.Arg(0), fs.Arg(1))
	return nil
}

func printDecisions(a *app, ds []*lookalikev1.Decision, asJSON bool, verb string) error {
	out := make([]*decisionJSON, len(ds))
	for i, d := range ds {
		out[i] = toDecisionJSON(d)
	}
	if asJSON {
		return writeJSON(a.stdout, map[string]any{"decisions": out})
	}
	if len(out) == 0 {
		_, err := fmt.Fprintln(a.stdout, "no decisions")
		return err
	}
	if verb != "" {
		fmt.Fprintf(a.stdout, "%s %d decisions\n", verb, len(out))
	}
	tw := newTable(a.stdout)
	fmt.Fprintln(tw, "A\tB\tVERDICT\tKEEP\tBY\tAT\tNOTE")
	for _, d := range out {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", clean(d.A, 0), clean(d.B, 0), d.Verdict, clean(d.Keep, 0), clean(d.By, 20), clean(d.At, 0), clean(d.Note, 40))
	}
	return tw.Flush()
}
