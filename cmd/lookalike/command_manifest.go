package main

import (
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// datasetColumns says how a shared dataset's labels.csv maps onto manifest columns. Product ids
// come from the file name without its extension, unique within each dataset.
type datasetColumns struct {
	category string // labels.csv column used as the product category
	title    string // labels.csv column used as the product title
	product  string // labels.csv column naming the product a photo shows ("" if none)
}

// photoColumns describe one photo, not its product, so a --products manifest leaves them out
// of the attributes (repeated rows of one product must agree on its metadata).
var photoColumns = []string{"split", "is_iconic", "source_path"}

func datasetLayouts() map[string]datasetColumns {
	return map[string]datasetColumns{
		"grocery":  {category: "coarse_label", title: "label", product: "label"},
		"clothing": {category: "label", title: "label"},
		"abo":      {category: "label", title: "product_id", product: "product_id"},
	}
}

func runManifest(ctx context.Context, a *app, args []string) error {
	fs := newFlagSet(a, "manifest", "--dataset NAME [flags] OUT.csv",
		"Write an ingest manifest (CSV) for one of the shared labelled datasets in ../shared/datasets,\n"+
			"with absolute image paths (relative when the photos sit below OUT's directory). Columns: id, image, category, title, then the\n"+
			"dataset's other labels as attributes. grocery: category = coarse_label, title = label.")
	dataset := fs.String("dataset", "", "grocery, clothing or abo")
	root := fs.String("datasets", a.getenv("LOOKALIKE_DATASETS"), "datasets directory (default: ../shared/datasets above the project root; env LOOKALIKE_DATASETS)")
	var splits stringList
	fs.Var(&splits, "split", "only rows whose split column is one of these (repeatable or comma-separated; e.g. iconic,train)")
	limit := fs.Int("limit", 0, "at most this many rows (0: all)")
	products := fs.Bool("products", false, "one product per labelled product (grocery: label, abo: product_id) with all its photos as repeated rows, photo_id = file name; without it every photo is a product of its own")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("want exactly one OUT file, got %d arguments", fs.NArg())
	}
	layout, ok := datasetLayouts()[*dataset]
	if !ok {
		return usagef("--dataset must be grocery, clothing or abo, got %q", *dataset)
	}
	dir := *root
	if dir == "" {
		found, err := findSharedDir("datasets")
		if err != nil {
			return err
		}
		dir = found
	}
	src := filepath.Join(dir, *dataset)
	out := fs.Arg(0)
	if *products && layout.product == "" {
		return usagef("--products: the %s dataset labels classes, not products", *dataset)
	}
	n, err := writeDatasetManifest(src, out, layout, splits, *limit, *products)
	if err != nil {
		return err
	}
	what := "products"
	if *products {
		what = "photos"
	}
	fmt.Fprintf(a.stdout, "wrote %d %s from %s to %s\n", n, what, src, out)
	return ctx.Err()
}

// writeDatasetManifest writes the manifest; byProduct groups the photos of one product
// (layout.product) as repeated rows, and otherwise every photo is a product of its own.
func writeDatasetManifest(src, out string, layout datasetColumns, splits []string, limit int, byProduct bool) (int, error) {
	if !byProduct {
		layout.product = ""
	}
	f, err := os.Open(filepath.Join(src, "labels.csv"))
	if err != nil {
		return 0, fmt.Errorf("dataset: %w", err)
	}
	defer f.Close()
	r := csv.NewReader(f)
	header, err := r.Read()
	if err != nil {
		return 0, fmt.Errorf("dataset labels.csv: %w", err)
	}
	col := map[string]int{}
	for i, h := range header {
		col[h] = i
	}
	for _, need := range []string{"file", layout.category, layout.title, layout.product} {
		if need == "" {
			continue
		}
		if _, ok := col[need]; !ok {
			return 0, fmt.Errorf("dataset labels.csv has no %q column", need)
		}
	}
	outDir, err := filepath.Abs(filepath.Dir(out))
	if err != nil {
		return 0, err
	}
	absSrc, err := filepath.Abs(src)
	if err != nil {
		return 0, err
	}
	// Attributes: the dataset's other labels, minus the ones already used and bookkeeping.
	var attrCols []string
	for _, h := range header {
		switch h {
		case "file", "source_path", layout.category, layout.title:
		default:
			if layout.product != "" && slices.Contains(photoColumns, h) {
				continue
			}
			attrCols = append(attrCols, h)
		}
	}
	n := 0
	err = writeFileAtomically(out, func(of io.Writer) error {
		w := csv.NewWriter(of)
		head := []string{columnID, columnImage, columnCategory, columnTitle}
		if layout.product != "" {
			head = append(head, columnPhotoID)
		}
		w.Write(append(head, attrCols...))
		records, err := r.ReadAll()
		if err != nil {
			return fmt.Errorf("dataset labels.csv: %w", err)
		}
		// A product's first photo is its main one: its catalogue shot when the dataset marks one.
		if i, ok := col["is_iconic"]; ok && layout.product != "" {
			slices.SortStableFunc(records, func(a, b []string) int { return strings.Compare(b[i], a[i]) })
		}
		for _, rec := range records {
			if limit > 0 && n >= limit {
				break
			}
			if len(splits) > 0 {
				i, ok := col["split"]
				if !ok || !slices.Contains(splits, rec[i]) {
					continue
				}
			}
			file := rec[col["file"]]
			// Relative when the photos sit below the manifest (the pair can move together),
			// absolute otherwise: "../../x" chains break as soon as either moves.
			image := filepath.Join(absSrc, filepath.FromSlash(file))
			if rel, err := filepath.Rel(outDir, image); err == nil && !strings.HasPrefix(rel, "..") {
				image = rel
			}
			id := strings.TrimSuffix(filepath.Base(file), filepath.Ext(file))
			row := []string{id, filepath.ToSlash(image), rec[col[layout.category]], rec[col[layout.title]]}
			if layout.product != "" {
				row = []string{rec[col[layout.product]], filepath.ToSlash(image), rec[col[layout.category]], rec[col[layout.title]], id}
			}
			for _, c := range attrCols {
				row = append(row, rec[col[c]])
			}
			w.Write(row)
			n++
		}
		w.Flush()
		return w.Error()
	})
	if err != nil {
		return 0, fmt.Errorf("write manifest: %w", err)
	}
	return n, nil
}

// findSharedDir finds ../shared/<name> next to the project root (the directory holding go.mod),
// looking up from the working directory and then from the executable.
func findSharedDir(name string) (string, error) {
	var starts []string
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	if exe, err := os.Executable(); err == nil {
		starts = append(starts, filepath.Dir(exe))
	}
	var tried []string
	for _, start := range starts {
		for dir := start; ; dir = filepath.Dir(dir) {
			if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
				candidate := filepath.Join(filepath.Dir(dir), "shared", name)
				if st, err := os.Stat(candidate); err == nil && st.IsDir() {
					return candidate, nil
				}
				tried = append(tried, candidate)
				break
			}
			if filepath.Dir(dir) == dir {
				break
			}
		}
	}
	return "", fmt.Errorf("no shared %s directory found (looked for ../shared/%s above the project root: %s)", name, name, strings.Join(tried, ", "))
}
