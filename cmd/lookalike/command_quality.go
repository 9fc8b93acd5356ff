package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"lookalike/adapt"
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
	// CatalogueShotMRR10 is the mean reciprocal rank of the label's catalogue shot in the
	// first 10 (0 for a query whose shot is not there).
	CatalogueShotMRR10 *float64 `json:"catalogue_shot_mrr_at_10,omitempty"`
	MillisPerQuery     float64  `json:"ms_per_query"`
}

func runQuality(ctx context.Context, a *app, args []string) error {
	fs := newFlagSet(a, "quality", "[flags]",
		"Measure retrieval quality on labelled photos, in process (no server): a catalogue manifest is\n"+
			"ingested into a temporary catalogue, every query photo searches it, and a result is right when\n"+
			"it has the query's label. Prints R@1/5/10, mAP@10, P@10 and, with --catalogue-shot, how often the\n"+
			"label's catalogue (shop) shot is among the first 10 and its mean reciprocal rank there (MRR@10:\n"+
			"1 first, 1/2 second, 0 outside). --dataset grocery (val street photos against iconic+train)\n"+
			"and --dataset clothing (validation against train) use the shared photos.\n"+
			"--projection FILE adds the projected vectors beside the raw ones and a transfer check: the same\n"+
			"training fitted on the catalogue photos of half the labels, scored on the other half's queries.")
	var mf modelFlags
	mf.register(fs, a)
	dataset := fs.String("dataset", "", "grocery or clothing: the shared photos with their standard split")
	catalogPath := fs.String("catalog", "", "catalogue manifest (as for ingest)")
	queriesPath := fs.String("queries", "", "query manifest (as for ingest; each row's first photo searches)")
	label := fs.String("label", "title", "what a row is labelled with: title, category or an attribute column")
	shot := fs.String("catalogue-shot", "", "photos whose image path contains this are catalogue shots (grocery: iconic__)")
	products := fs.Bool("products", false, "with --dataset grocery: one product per grocery product with all its photos (otherwise every photo is a product)")
	k := fs.Int("k", 10, "results per query (at least 10)")
	projectionPath := fs.String("projection", "", "a projection file from 'lookalike adapt': report the raw and the projected vectors side by side, each photo embedded once")
	seed := fs.Uint64("seed", defaultAdaptSeed, "with --projection: seed of the transfer check's split of the labels")
	heldApart := fs.Float64("held-apart", 0.5, "with --projection: share of the labels the transfer check holds out of its fit")
	noTransfer := fs.Bool("no-transfer", false, "with --projection: skip the transfer check (a projection fitted on the other labels, scored on the held-out labels' queries)")
	expand := fs.Int("expand", 0, "query expansion: re-search with the query plus its first N photos (0: off)")
	expandAlpha := fs.Float64("expand-alpha", 0, "with --expand: weight each photo by its score to this power (0: equally)")
	boostShots := fs.Float64("boost-shots", 0, "add this to the score of catalogue shots (products with a --catalogue-shot photo get the attribute "+shotAttribute+"=true, and every search boosts it)")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usagef("takes no arguments")
	}
	if *expand < 0 || *expand > catalog.MaxExpand || *expandAlpha < 0 || *expandAlpha > 100 || *boostShots < -1 || *boostShots > 1 {
		return usagef("--expand must be in 0..%d, --expand-alpha in 0..100 and --boost-shots in -1..1", catalog.MaxExpand)
	}
	search := catalog.SearchOptions{K: *k, Expand: *expand, ExpandAlpha: float32(*expandAlpha)}
	if *boostShots != 0 {
		search.Boosts = []catalog.Boost{{Attribute: shotAttribute, Value: "true", Add: float32(*boostShots)}}
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
	default:
		cat, q, l, sh, err := sharedDataset(*dataset, work, *products)
		if err != nil {
			return err
		}
		*catalogPath, *queriesPath, *label = cat, q, l
		if *shot == "" {
			*shot = sh
		}
	}
	if *projectionPath != "" {
		names := [2]string{*catalogPath, *queriesPath}
		if *dataset != "" {
			names = [2]string{*dataset + " catalogue", *dataset + " queries"}
		}
		return runQualityProjected(ctx, a, &mf, qualityProjected{
			catalogPath: *catalogPath, queriesPath: *queriesPath, names: names, label: *label, shot: *shot,
			projection: *projectionPath, seed: *seed, heldApart: *heldApart, transfer: !*noTransfer, asJSON: *asJSON, search: search,
		})
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
			if len(search.Boosts) > 0 && *shot != "" {
				w.Attributes = markShot(w.Attributes, slices.ContainsFunc(row.Photos, func(p manifestPhoto) bool { return strings.Contains(p.Image, *shot) }))
			}
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
		Search: search,
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
		v, m := rep.CatalogueShotAt10, rep.CatalogueShotMRR10
		out.CatalogueShotAt10, out.CatalogueShotMRR10 = &v, &m
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
		fmt.Fprintf(tw, "catalogue shot MRR@10\t%.3f\n", *out.CatalogueShotMRR10)
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

// qualityProjected is what quality --projection needs from the command line.
type qualityProjected struct {
	catalogPath, queriesPath string
	names                    [2]string // how the report names the catalogue and the queries
	label, shot              string
	projection               string
	seed                     uint64
	heldApart                float64
	transfer                 bool
	asJSON                   bool
	search                   catalog.SearchOptions // K and the query expansion of every search
}

// qualityProjectionJSON is `lookalike quality --projection FILE --json`.
type qualityProjectionJSON struct {
	Catalog    string            `json:"catalog"`
	Queries    string            `json:"queries"`
	Products   int               `json:"products"`
	Photos     int               `json:"photos"`
	Projection string            `json:"projection"`
	Checksum   string            `json:"checksum"`
	Dims       int               `json:"dims"`
	Meta       map[string]string `json:"meta"`
	// Raw and Projected search the same catalogue photos with the same queries.
	Raw       figuresJSON `json:"raw"`
	Projected figuresJSON `json:"projected"`
	// Gain is projected minus raw with a 95% paired-bootstrap interval over the queries.
	Gain        []gainJSON `json:"gain"`
	MillisApply float64    `json:"ms_per_apply"`
	// MillisPerPhoto is the embedding's cost: the wall time of embedding every catalogue
	// and query photo, all cores busy, divided by their number.
	MillisPerPhoto float64 `json:"ms_per_photo"`
	// Transfer is the check on labels the projection never saw (absent with --no-transfer).
	Transfer *transferJSON `json:"transfer,omitempty"`
}

// transferJSON is the transfer check: the projection's training (its dims and shrink, its
// catalogue-shot weight) refitted on the catalogue photos of the training labels only,
// scored on the held-out labels' queries against the whole catalogue.
type transferJSON struct {
	Seed           uint64      `json:"seed"`
	TrainingLabels []string    `json:"training_labels"`
	HeldOutLabels  []string    `json:"held_out_labels"`
	FitPhotos      int         `json:"fit_photos"`
	Dims           int         `json:"dims"`
	Shrink         float64     `json:"shrink"`
	ShotWeight     float64     `json:"shot_weight"`
	Raw            figuresJSON `json:"raw"`
	Projected      figuresJSON `json:"projected"`
	Gain           []gainJSON  `json:"gain"`
}

func runQualityProjected(ctx context.Context, a *app, mf *modelFlags, q qualityProjected) error {
	f, err := os.Open(q.projection)
	if err != nil {
		return fmt.Errorf("projection: %w", err)
	}
	p, err := adapt.Read(f)
	f.Close()
	if err != nil {
		return fmt.Errorf("projection %s: %w", q.projection, err)
	}
	emb, _, err := mf.open(ctx, a.logger)
	if err != nil {
		return err
	}
	defer emb.Close()
	meta := p.Meta()
	if m := meta["model"]; p.In() != emb.Dim() || (m != "" && m != emb.Identity()) {
		return fmt.Errorf("projection %s was fitted on %d-d vectors of %q, not on this model's (%d-d, %s)", q.projection, p.In(), m, emb.Dim(), emb.Identity())
	}
	set, err := loadLabelled(ctx, emb, q.catalogPath, q.queriesPath, q.label, q.shot, 0)
	if err != nil {
		return err
	}
	shots := set.hasShots()
	work, err := os.MkdirTemp("", "lookalike-quality")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	score := func(f transform, identity string, dim int, queries []labelledPhoto) (figuresJSON, error) {
		rep, err := evaluateVectors(ctx, a.logger, work, dim, identity, set.rows, set.photos, queries, f, q.search)
		if err != nil {
			return figuresJSON{}, err
		}
		return figuresOf(rep, shots), nil
	}
	out := qualityProjectionJSON{Catalog: q.names[0], Queries: q.names[1], Products: len(set.rows), Photos: len(set.photos),
		Projection: q.projection, Checksum: p.Checksum(), Dims: p.Out(), Meta: meta, MillisPerPhoto: set.millisPerPhoto}
	if out.Raw, err = score(nil, emb.Identity(), emb.Dim(), set.queries); err != nil {
		return err
	}
	timer := applyTimer{p: p}
	if out.Projected, err = score(timer.apply, projectionIdentity(emb.Identity(), p), p.Out(), set.queries); err != nil {
		return err
	}
	out.MillisApply = timer.millis()
	if out.Gain, err = gainOf(out.Raw, out.Projected); err != nil {
		return err
	}
	if q.transfer {
		if out.Transfer, err = transferCheck(set, meta, p.Out(), q, score, emb.Identity()); err != nil {
			return err
		}
	}
	if q.asJSON {
		return writeJSON(a.stdout, out)
	}
	return printQualityProjected(a, out)
}

// transferCheck refits the projection's training on the catalogue photos of part of the
// labels and scores it on the other labels' queries.
func transferCheck(set *labelledSet, meta map[string]string, dims int, q qualityProjected,
	score func(transform, string, int, []labelledPhoto) (figuresJSON, error), model string) (*transferJSON, error) {
	shrink, err := strconv.ParseFloat(meta["shrink"], 64)
	if err != nil {
		return nil, fmt.Errorf("the projection records no shrink to refit with (%w); pass --no-transfer", err)
	}
	shotWeight := 1.0
	if s, ok := meta["shot_weight"]; ok {
		if shotWeight, err = strconv.ParseFloat(s, 64); err != nil {
			return nil, fmt.Errorf("projection shot_weight %q: %w", s, err)
		}
	}
	labels := make([]string, len(set.photos))
	for i, ph := range set.photos {
		labels[i] = ph.label
	}
	train, held, err := splitGroups(labels, q.seed, q.heldApart)
	if err != nil {
		return nil, err
	}
	isTrain := map[string]bool{}
	for _, l := range train {
		isTrain[l] = true
	}
	var fit, queries []labelledPhoto
	for _, ph := range set.photos {
		if isTrain[ph.label] {
			fit = append(fit, ph)
		}
	}
	for _, qp := range set.queries {
		if !isTrain[qp.label] {
			queries = append(queries, qp)
		}
	}
	ps, err := fitDims(samplesOf(fit, shotWeight), shrink, []int{dims}, nil)
	if err != nil {
		return nil, fmt.Errorf("transfer fit: %w", err)
	}
	t := &transferJSON{Seed: q.seed, TrainingLabels: train, HeldOutLabels: held, FitPhotos: len(fit),
		Dims: ps[0].Out(), Shrink: shrink, ShotWeight: shotWeight}
	if t.Raw, err = score(nil, model, len(set.photos[0].vector), queries); err != nil {
		return nil, err
	}
	if t.Projected, err = score(ps[0].Apply, projectionIdentity(model, ps[0]), ps[0].Out(), queries); err != nil {
		return nil, err
	}
	if t.Gain, err = gainOf(t.Raw, t.Projected); err != nil {
		return nil, err
	}
	return t, nil
}

func printQualityProjected(a *app, r qualityProjectionJSON) error {
	tw := newTable(a.stdout)
	fmt.Fprintf(tw, "catalogue\t%s: %d products, %d photos\n", r.Catalog, r.Products, r.Photos)
	fmt.Fprintf(tw, "queries\t%s: %d searched\n", r.Queries, r.Raw.Queries)
	fmt.Fprintf(tw, "projection\t%s (%s): %d dims, shrink %s, fitted on %s photos of %s groups\n", r.Projection, r.Checksum, r.Dims, r.Meta["shrink"], r.Meta["samples"], r.Meta["groups"])
	fmt.Fprintln(tw)
	cols := []figuresJSON{r.Raw, r.Projected}
	head := "\traw\tprojected"
	if t := r.Transfer; t != nil {
		cols = append(cols, t.Raw, t.Projected)
		head += "\ttransfer raw\ttransfer projected"
	}
	fmt.Fprintln(tw, head+"\t")
	line := func(name string, v func(figuresJSON) float64) {
		fmt.Fprint(tw, name)
		for _, c := range cols {
			fmt.Fprintf(tw, "\t%.3f", v(c))
		}
		fmt.Fprintln(tw, "\t")
	}
	fmt.Fprint(tw, "queries")
	for _, c := range cols {
		fmt.Fprintf(tw, "\t%d", c.Queries)
	}
	fmt.Fprintln(tw, "\t")
	for _, k := range []string{"1", "5", "10"} {
		line("R@"+k, func(f figuresJSON) float64 { return f.RecallAt[k] })
	}
	line("mAP@10", func(f figuresJSON) float64 { return f.MAP10 })
	line("P@10", func(f figuresJSON) float64 { return f.P10 })
	if r.Raw.CatalogueShotAt10 != nil {
		line("catalogue shot in top 10", func(f figuresJSON) float64 { return *f.CatalogueShotAt10 })
		line("catalogue shot MRR@10", func(f figuresJSON) float64 { return *f.CatalogueShotMRR10 })
	}
	fmt.Fprintln(tw)
	fmt.Fprintf(tw, "how sure\tprojected - raw, 95%% paired-bootstrap interval over the queries: %s\n", gainLine(r.Gain))
	fmt.Fprintf(tw, "embed\t%.2f ms per photo (all cores busy)\n", r.MillisPerPhoto)
	fmt.Fprintf(tw, "apply\t%.3f ms per photo\n", r.MillisApply)
	if t := r.Transfer; t != nil {
		fmt.Fprintf(tw, "transfer\tseed %d: refitted (dims %d, shrink %g) on the %d catalogue photos of %d labels; scored on the queries of the %d others (%s)\n",
			t.Seed, t.Dims, t.Shrink, t.FitPhotos, len(t.TrainingLabels), len(t.HeldOutLabels), strings.Join(t.HeldOutLabels, ", "))
		fmt.Fprintf(tw, "\thow sure: %s\n", gainLine(t.Gain))
	}
	return tw.Flush()
}
