package main

import (
	"context"
	"fmt"
	"os"
	"strings"
)

// embedJSON is one element of `lookalike embed --json` (a JSON array, in argument order).
type embedJSON struct {
	Image  string    `json:"image"`
	Dim    int       `json:"dim,omitempty"`
	Vector []float32 `json:"vector,omitempty"`
	Error  string    `json:"error,omitempty"`
}

// embedCosineJSON is `lookalike embed --cosine --json`.
type embedCosineJSON struct {
	Model  string      `json:"model"`
	Images []embedJSON `json:"images"`
	// Cosine[i][j] is the similarity of images i and j (null where either failed).
	Cosine [][]*float32 `json:"cosine,omitempty"`
}

func runEmbed(ctx context.Context, a *app, args []string) error {
	fs := newFlagSet(a, "embed", "[flags] IMAGE...",
		"Embed local images with the model, in this process (no server), and print each vector:\n"+
			"L2-normalised, so the dot product of two vectors is their cosine similarity.\n"+
			"--cosine also prints the similarity of every pair.")
	var mf modelFlags
	mf.register(fs, a)
	full := fs.Bool("full", false, "print every component (the table shows the first 8)")
	cosine := fs.Bool("cosine", false, "also print the cosine similarity of every pair of images")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return usagef("want at least one IMAGE")
	}
	e, _, err := mf.open(ctx, a.logger)
	if err != nil {
		return err
	}
	defer e.Close()

	results := make([]embedJSON, fs.NArg())
	failed := 0
	for i, path := range fs.Args() {
		results[i].Image = path
		data, err := os.ReadFile(path)
		if err == nil {
			results[i].Vector, err = e.Embed(ctx, data)
		}
		if err != nil {
			results[i].Vector = nil
			results[i].Error = oneLine(err.Error())
			failed++
			fmt.Fprintf(a.stderr, "lookalike embed: %s: %s\n", path, results[i].Error)
			continue
		}
		results[i].Dim = len(results[i].Vector)
	}
	var matrix [][]*float32
	if *cosine {
		matrix = cosineMatrix(results)
	}
	switch {
	case *asJSON && *cosine:
		err = writeJSON(a.stdout, embedCosineJSON{Model: e.Identity(), Images: results, Cosine: matrix})
	case *asJSON:
		err = writeJSON(a.stdout, results)
	default:
		for _, r := range results {
			if r.Error != "" {
				continue
			}
			if *full {
				fmt.Fprintf(a.stdout, "%s\t%d\t%s\n", r.Image, r.Dim, strings.Trim(fmt.Sprint(r.Vector), "[]"))
			} else {
				fmt.Fprintf(a.stdout, "%s\t%d dims\t%s\n", r.Image, r.Dim, vectorPreview(r.Vector, 8))
			}
		}
		if *cosine {
			printCosine(a, results, matrix)
		}
	}
	if err != nil {
		return err
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d images failed", failed, len(results))
	}
	return nil
}

func cosineMatrix(results []embedJSON) [][]*float32 {
	m := make([][]*float32, len(results))
	for i := range results {
		m[i] = make([]*float32, len(results))
		for j := range results {
			a, b := results[i].Vector, results[j].Vector
			if a == nil || b == nil || len(a) != len(b) {
				continue
			}
			var dot float32
			for k := range a {
				dot += a[k] * b[k]
			}
			m[i][j] = &dot
		}
	}
	return m
}

func printCosine(a *app, results []embedJSON, m [][]*float32) {
	fmt.Fprintln(a.stdout, "\ncosine similarity:")
	tw := newTable(a.stdout)
	fmt.Fprint(tw, "\t")
	for j := range results {
		fmt.Fprintf(tw, "[%d]\t", j+1)
	}
	fmt.Fprintln(tw)
	for i, r := range results {
		fmt.Fprintf(tw, "[%d] %s\t", i+1, clean(r.Image, 60))
		for j := range results {
			if m[i][j] == nil {
				fmt.Fprint(tw, "-\t")
			} else {
				fmt.Fprintf(tw, "%.4f\t", *m[i][j])
			}
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
}
