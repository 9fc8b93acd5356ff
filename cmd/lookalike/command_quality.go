package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"lookalike/catalog"
	"lookalike/quality"
)

// qualityJSON is `lookalike quality --json`.
type qualityJSON struct {
	Catalog           string             `json:"catalog"`
	Queries           string             `json:"queries"`
	Products          int                `json:"products"`
	Photos            int                `json:"photos"`
	Searched          int                `json:"searched"`
	Failed            int                `json:"failed"`
	RecallAt          map[string]float64 `json:"recall_at"`
	MAP10             float64            `json:"map_at_10"`
	P10               float64            `json:"precision_at_10"`
	CatalogueShotAt10 *float64           `json:"catalogue_shot_at_10,omitempty"`
	MillisPerQuery    float64            `json:"ms_per_query"`
}

func runQuality(ctx context.Context, a *app, args []string) error {
	fs := newFlagSet(a, "quality", "[flags]",
		"Measure retrieval quality on labelled photos, in process (no server): a catalogue manifest is\n"+
			"ingested into a temporary catalogue, every query photo searches it, and a result is right when\n"+
			"it has the query's label. Prints R@1/5/10, mAP@10, P@10 and, with --catalogue-shot, how often the\n"+
			"label's catalogue (shop) shot is among the first 10. --dataset grocery (val street photos\n"+
			"against iconic+train) and --dataset clothing (validation against train) use the shared photos.")
	var mf modelFlags
	mf.register(fs, a)
	dataset := fs.String("dataset", "", "grocery or clothing: the shared photos with their standard split")
	catalogPath := fs.String("catalog", "", "catalogue manifest (as for ingest)")
	queriesPath := fs.String("queries", "", "query manifest (as for ingest; each row's first photo searches)")
	label := fs.String("label", "title", "what a row is labelled with: title, category or an attribute column")
	shot := fs.String("catalogue-shot", "", "photos whose image path contains this are catalogue shots (grocery: iconic__)")
	products := fs.Bool("products", false, "with --dataset grocery: one product per grocery product with all its photos (otherwise every photo is a product)")
	k := fs.Int("k", 10, "results per query (at least 10)")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usagef("takes no arguments")
	}
	work, err := os.MkdirTemp("", "lookalike-quality")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	switch *dataset {
	case "":
		if *catalogPath == "" || *queriesPath == "" {
			return usagef("give --dataset, or --catalog and --queries")
		}
	case "grocery", "clothing":
		dir, err := findSharedDir("datasets")
		if err != nil {
			return err
		}
		layout := datasetLayouts()[*dataset]
		catSplits, qSplits := []string{"iconic", "train"}, []string{"val"}
		if *dataset == "clothing" {
			catSplits, qSplits, *label = []string{"train"}, []string{"validation"}, "category"
			if *products {
				return usagef("--products: the clothing dataset labels classes, not products")
			}
		} else if *shot == "" {
			*shot = "iconic__"
		}
		*catalogPath, *queriesPath = filepath.Join(work, "catalog.csv"), filepath.Join(work, "queries.csv")
		if _, err := writeDatasetManifest(filepath.Join(dir, *dataset), *catalogPath, layout, catSplits, 0, *products); err != nil {
			return err
		}
		if _, err := writeDatasetManifest(filepath.Join(dir, *dataset), *queriesPath, layout, qSplits, 0, false); err != nil {
			return err
		}
	default:
		return usagef("--dataset must be grocery or clothing, got %q", *dataset)
	}
	catRows, err := manifestRows(*catalogPath)
	if err != nil {
		return err
	}
	queryRows, err := manifestRows(*queriesPath)
	if err != nil {
		return err
	}
	labelOf := func(category, title string, attrs map[string]string) string {
		switch *label {
		case "title":
			return title
		case "category":
			return category
		}
		return attrs[*label]
	}

	emb, _, err := mf.open(ctx, a.logger)
	if err != nil {
		return err
	}
	defer emb.Close()
	c, err := catalog.Open(ctx, catalog.Config{DataDir: filepath.Join(work, "data"), Embedder: emb, Logger: a.logger})
	if err != nil {
		return err
	}
	defer c.Close()

	// Ingest the catalogue, remembering which photos are catalogue shots.
	shots := map[[2]string]bool{}
	relevant := map[string]int{}
	photos := 0
	catDir := filepath.Dir(*catalogPath)
	for i := 0; i < len(catRows); i += 8 {
		batch := catRows[i:min(i+8, len(catRows))]
		writes := make([]catalog.Write, len(batch))
		for j, row := range batch {
			w := catalog.Write{ID: row.ID, Category: row.Category, Title: row.Title, Attributes: row.Attributes}
			for _, ph := range row.Photos {
				img, err := os.ReadFile(resolveImage(catDir, ph.Image))
				if err != nil {
					return fmt.Errorf("catalogue line %d: %w", ph.Line, err)
				}
				w.Photos = append(w.Photos, catalog.PhotoWrite{ID: ph.ID, Image: img, ImageURL: ph.Image})
			}
			writes[j] = w
		}
		for j, r := range c.UpsertBatch(ctx, writes) {
			if r.Err != nil {
				return fmt.Errorf("catalogue line %d: %w", batch[j].Line, r.Err)
			}
			row := batch[j]
			relevant[labelOf(row.Category, row.Title, row.Attributes)]++
			for n, ph := range r.Photos {
				photos++
				if *shot != "" && n < len(row.Photos) && strings.Contains(row.Photos[n].Image, *shot) {
					shots[[2]string{row.ID, ph.ID}] = true
				}
			}
		}
	}
	var queries []quality.Query
	qDir := filepath.Dir(*queriesPath)
	for _, row := range queryRows {
		img, err := os.ReadFile(resolveImage(qDir, row.Image))
		if err != nil {
			return fmt.Errorf("query line %d: %w", row.Line, err)
		}
		queries = append(queries, quality.Query{Image: img, Label: labelOf(row.Category, row.Title, row.Attributes)})
	}
	opt := quality.Options{
		Label:  func(p catalog.Product) string { return labelOf(p.Category, p.Title, p.Attributes) },
		Search: catalog.SearchOptions{K: *k},
	}
	if len(shots) > 0 {
		opt.CatalogueShot = func(p catalog.Product, photo string) bool { return shots[[2]string{p.ID, photo}] }
	}
	rep, err := quality.Evaluate(ctx, c, queries, relevant, opt)
	if err != nil {
		return err
	}
	out := qualityJSON{Catalog: *catalogPath, Queries: *queriesPath, Products: len(catRows), Photos: photos,
		Searched: rep.Queries, Failed: rep.Failed, RecallAt: map[string]float64{}, MAP10: rep.MAP10, P10: rep.P10,
		MillisPerQuery: rep.MillisPerQuery}
	if *dataset != "" {
		out.Catalog, out.Queries = *dataset+" catalogue", *dataset+" queries"
	}
	for k, v := range rep.RecallAt {
		out.RecallAt[fmt.Sprint(k)] = v
	}
	if opt.CatalogueShot != nil {
		v := rep.CatalogueShotAt10
		out.CatalogueShotAt10 = &v
	}
	if *asJSON {
		return writeJSON(a.stdout, out)
	}
	tw := newTable(a.stdout)
	fmt.Fprintf(tw, "catalogue\t%s: %d products, %d photos\n", out.Catalog, out.Products, out.Photos)
	fmt.Fprintf(tw, "queries\t%s: %d searched, %d failed\n", out.Queries, out.Searched, out.Failed)
	ks := make([]string, 0, len(out.RecallAt))
	for k := range out.RecallAt {
		ks = append(ks, k)
	}
	sort.Slice(ks, func(i, j int) bool { return len(ks[i]) < len(ks[j]) || (len(ks[i]) == len(ks[j]) && ks[i] < ks[j]) })
	for _, k := range ks {
		fmt.Fprintf(tw, "R@%s\t%.3f\n", k, out.RecallAt[k])
	}
	fmt.Fprintf(tw, "mAP@10\t%.3f\n", out.MAP10)
	fmt.Fprintf(tw, "P@10\t%.3f\n", out.P10)
	if out.CatalogueShotAt10 != nil {
		fmt.Fprintf(tw, "catalogue shot in top 10\t%.3f\n", *out.CatalogueShotAt10)
	}
	fmt.Fprintf(tw, "ms per query\t%.2f (embedding and search)\n", out.MillisPerQuery)
	return tw.Flush()
}

// manifestRows reads a manifest and fails on any bad row (a quality run needs all of them).
func manifestRows(path string) ([]manifestRow, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	rows, rejects, err := readManifest(f, path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(rejects) > 0 {
		return nil, fmt.Errorf("%s line %d: %s", path, rejects[0].Line, rejects[0].Reason)
	}
	return rows, nil
}
