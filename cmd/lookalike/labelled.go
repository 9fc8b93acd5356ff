package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"lookalike/adapt"
	"lookalike/catalog"
	"lookalike/embed"
	"lookalike/quality"
)

// This file holds what adapt and quality --projection share: a labelled photo collection
// embedded once, and catalogues built from its vectors (raw or projected) in a scratch
// directory, so one embedding serves every representation compared.

// sharedDataset writes the manifests of a shared dataset's standard split into work: the
// catalogue (grocery: iconic + train, clothing: train) and the queries (grocery: val,
// clothing: validation), with the label column and catalogue-shot marker that go with them.
func sharedDataset(dataset, work string, products bool) (catalogPath, queriesPath, label, shot string, err error) {
	layout, ok := datasetLayouts()[dataset]
	if !ok || dataset == "abo" {
		return "", "", "", "", usagef("--dataset must be grocery or clothing, got %q", dataset)
	}
	dir, err := findSharedDir("datasets")
	if err != nil {
		return "", "", "", "", err
	}
	catSplits, qSplits := []string{"iconic", "train"}, []string{"val"}
	label, shot = "title", "iconic__"
	if dataset == "clothing" {
		catSplits, qSplits, label, shot = []string{"train"}, []string{"validation"}, "category", ""
		if products {
			return "", "", "", "", usagef("--products: the clothing dataset labels classes, not products")
		}
	}
	catalogPath, queriesPath = filepath.Join(work, "catalog.csv"), filepath.Join(work, "queries.csv")
	if _, err := writeDatasetManifest(filepath.Join(dir, dataset), catalogPath, layout, catSplits, 0, products); err != nil {
		return "", "", "", "", err
	}
	if _, err := writeDatasetManifest(filepath.Join(dir, dataset), queriesPath, layout, qSplits, 0, false); err != nil {
		return "", "", "", "", err
	}
	return catalogPath, queriesPath, label, shot, nil
}

// rowLabel returns what a manifest row is labelled with under a --label choice.
func rowLabel(label string, row manifestRow) string {
	switch label {
	case "title":
		return row.Title
	case "category":
		return row.Category
	}
	return row.Attributes[label]
}

// labelledPhoto is one embedded photo of a labelled collection.
type labelledPhoto struct {
	product string // the catalogue product it belongs to ("" for a query)
	photo   string // its id within the product
	label   string
	shot    bool // a catalogue (shop) shot
	vector  []float32
}

// labelledSet is a catalogue and its queries, embedded.
type labelledSet struct {
	rows    map[string]manifestRow // catalogue products by id, for their metadata
	photos  []labelledPhoto        // catalogue photos, in manifest order
	queries []labelledPhoto
	// millisPerPhoto is the wall time of embedding them all (reading the files included,
	// every core busy) divided by their number: the cost of one photo at full throughput.
	millisPerPhoto float64
}

// hasShots reports whether any catalogue photo is a catalogue shot.
func (s *labelledSet) hasShots() bool {
	return slices.ContainsFunc(s.photos, func(ph labelledPhoto) bool { return ph.shot })
}

// loadLabelled reads and embeds the catalogue manifest (and the query manifest, when
// given). perGroup > 0 keeps at most that many photos per label besides catalogue shots,
// the first in manifest order: a quick run on a part of the collection.
func loadLabelled(ctx context.Context, emb *embed.Embedder, catalogPath, queriesPath, label, shot string, perGroup int) (*labelledSet, error) {
	catRows, err := manifestRows(catalogPath)
	if err != nil {
		return nil, err
	}
	set := &labelledSet{rows: map[string]manifestRow{}}
	var files []string
	kept := map[string]int{}
	for _, row := range catRows {
		l := rowLabel(label, row)
		if l == "" {
			return nil, fmt.Errorf("catalogue line %d: no %s label", row.Line, label)
		}
		for n, ph := range row.Photos {
			isShot := shot != "" && strings.Contains(ph.Image, shot)
			if perGroup > 0 && !isShot {
				if kept[l] >= perGroup {
					continue
				}
				kept[l]++
			}
			id := ph.ID
			if id == "" {
				id = fmt.Sprintf("photo-%d", n)
			}
			set.rows[row.ID] = row
			set.photos = append(set.photos, labelledPhoto{product: row.ID, photo: id, label: l, shot: isShot})
			files = append(files, resolveImage(filepath.Dir(catalogPath), ph.Image))
		}
	}
	if queriesPath != "" {
		qRows, err := manifestRows(queriesPath)
		if err != nil {
			return nil, err
		}
		qkept := map[string]int{}
		for _, row := range qRows {
			l := rowLabel(label, row)
			if perGroup > 0 {
				if qkept[l] >= perGroup {
					continue
				}
				qkept[l]++
			}
			set.queries = append(set.queries, labelledPhoto{label: l})
			files = append(files, resolveImage(filepath.Dir(queriesPath), row.Image))
		}
	}
	start := time.Now()
	vecs, err := embedFiles(ctx, emb, files)
	if err != nil {
		return nil, err
	}
	set.millisPerPhoto = float64(time.Since(start).Microseconds()) / 1000 / float64(max(len(files), 1))
	for i := range set.photos {
		set.photos[i].vector = vecs[i]
	}
	for i := range set.queries {
		set.queries[i].vector = vecs[len(set.photos)+i]
	}
	return set, nil
}

// embedFiles embeds image files in batches, failing on the first that does not embed.
func embedFiles(ctx context.Context, emb *embed.Embedder, files []string) ([][]float32, error) {
	out := make([][]float32, 0, len(files))
	const batch = 32
	for i := 0; i < len(files); i += batch {
		part := files[i:min(i+batch, len(files))]
		imgs := make([][]byte, len(part))
		for j, f := range part {
			b, err := os.ReadFile(f)
			if err != nil {
				return nil, fmt.Errorf("read photo: %w", err)
			}
			imgs[j] = b
		}
		vecs, errs := emb.EmbedBatch(ctx, imgs)
		for j, err := range errs {
			if err != nil {
				return nil, fmt.Errorf("embed %s: %w", part[j], err)
			}
		}
		out = append(out, vecs...)
	}
	return out, nil
}

// vectorsOnly is the embedder of a catalogue that is only ever given ready vectors: it has
// the vectors' dimension and an identity, and refuses photos.
type vectorsOnly struct {
	dim      int
	identity string
}

var errVectorsOnly = errors.New("this catalogue takes ready vectors only")

func (v vectorsOnly) Embed(context.Context, []byte) ([]float32, error) { return nil, errVectorsOnly }
func (v vectorsOnly) Analyze(context.Context, []byte, embed.AnalyzeOptions) (embed.Analysis, error) {
	return embed.Analysis{}, errVectorsOnly
}
func (v vectorsOnly) Dim() int         { return v.dim }
func (v vectorsOnly) Identity() string { return v.identity }

// transform maps a raw vector to the one a catalogue holds; nil keeps it raw.
type transform func([]float32) ([]float32, error)

// projectionIdentity names the vectors of a projection over a model, as a model identity
// with the projection in it would.
func projectionIdentity(model string, p *adapt.Projection) string {
	return model + "+projection@" + p.Checksum()
}

// applyTimer applies a projection and keeps the time it took, for the report's cost per photo.
type applyTimer struct {
	p     *adapt.Projection
	spent time.Duration
	n     int
}

func (a *applyTimer) apply(v []float32) ([]float32, error) {
	start := time.Now()
	y, err := a.p.Apply(v)
	a.spent += time.Since(start)
	a.n++
	return y, err
}

// millis is the mean time of one Apply.
func (a *applyTimer) millis() float64 {
	if a.n == 0 {
		return 0
	}
	return float64(a.spent.Microseconds()) / 1000 / float64(a.n)
}

// evaluateVectors builds a scratch catalogue of photos (through f) under dir, searches it
// with the queries (through f) and measures the answers.
func evaluateVectors(ctx context.Context, logger *slog.Logger, dir string, dim int, identity string,
	rows map[string]manifestRow, photos, queries []labelledPhoto, f transform, search catalog.SearchOptions) (quality.Report, error) {
	if f == nil {
		f = func(v []float32) ([]float32, error) { return v, nil }
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return quality.Report{}, err
	}
	data, err := os.MkdirTemp(dir, "catalogue")
	if err != nil {
		return quality.Report{}, err
	}
	defer os.RemoveAll(data)
	c, err := catalog.Open(ctx, catalog.Config{DataDir: data, Embedder: vectorsOnly{dim: dim, identity: identity}, Logger: logger})
	if err != nil {
		return quality.Report{}, err
	}
	defer c.Close()
	// Products in first-photo order, each with the photos it has here.
	var order []string
	byProduct := map[string][]labelledPhoto{}
	for _, ph := range photos {
		if _, ok := byProduct[ph.product]; !ok {
			order = append(order, ph.product)
		}
		byProduct[ph.product] = append(byProduct[ph.product], ph)
	}
	labels := map[string]string{}
	shots := map[[2]string]bool{}
	relevant := map[string]int{}
	for i := 0; i < len(order); i += 64 {
		ids := order[i:min(i+64, len(order))]
		writes := make([]catalog.Write, len(ids))
		for j, id := range ids {
			row := rows[id]
			w := catalog.Write{ID: id, Category: row.Category, Title: row.Title, Attributes: row.Attributes}
			if len(search.Boosts) > 0 {
				w.Attributes = markShot(w.Attributes, slices.ContainsFunc(byProduct[id], func(p labelledPhoto) bool { return p.shot }))
			}
			for _, ph := range byProduct[id] {
				v, err := f(ph.vector)
				if err != nil {
					return quality.Report{}, fmt.Errorf("product %s photo %s: %w", id, ph.photo, err)
				}
				w.Photos = append(w.Photos, catalog.PhotoWrite{ID: ph.photo, Vector: v})
				if ph.shot {
					shots[[2]string{id, ph.photo}] = true
				}
			}
			labels[id] = byProduct[id][0].label
			relevant[labels[id]]++
			writes[j] = w
		}
		for j, r := range c.UpsertBatch(ctx, writes) {
			if r.Err != nil {
				return quality.Report{}, fmt.Errorf("product %s: %w", ids[j], r.Err)
			}
		}
	}
	qs := make([]quality.Query, len(queries))
	for i, q := range queries {
		v, err := f(q.vector)
		if err != nil {
			return quality.Report{}, fmt.Errorf("query %d: %w", i, err)
		}
		qs[i] = quality.Query{Vector: v, Label: q.label}
	}
	opt := quality.Options{
		Label:  func(p catalog.Product) string { return labels[p.ID] },
		Search: search,
	}
	if len(shots) > 0 {
		opt.CatalogueShot = func(p catalog.Product, photo string) bool { return shots[[2]string{p.ID, photo}] }
	}
	return quality.Evaluate(ctx, c, qs, relevant, opt)
}

// figuresJSON is one evaluation's figures in the JSON of adapt and quality --projection.
type figuresJSON struct {
	Queries           int                `json:"queries"`
	RecallAt          map[string]float64 `json:"recall_at"`
	MAP10             float64            `json:"map_at_10"`
	P10               float64            `json:"precision_at_10"`
	CatalogueShotAt10 *float64           `json:"catalogue_shot_at_10,omitempty"`
	// CatalogueShotMRR10 is the mean reciprocal rank of the label's catalogue shot in the
	// first 10 (0 for a query whose shot is not there).
	CatalogueShotMRR10 *float64 `json:"catalogue_shot_mrr_at_10,omitempty"`
	// report is what the figures come from, for gainOf.
	report quality.Report
}

func figuresOf(rep quality.Report, shots bool) figuresJSON {
	f := figuresJSON{Queries: rep.Queries, RecallAt: map[string]float64{}, MAP10: rep.MAP10, P10: rep.P10, report: rep}
	for k, v := range rep.RecallAt {
		f.RecallAt[fmt.Sprint(k)] = v
	}
	if shots {
		v, m := rep.CatalogueShotAt10, rep.CatalogueShotMRR10
		f.CatalogueShotAt10, f.CatalogueShotMRR10 = &v, &m
	}
	return f
}

// worseThan names the first figure of f below base by more than tol ("" when none is).
func (f figuresJSON) worseThan(base figuresJSON, tol float64) string {
	check := []struct {
		name      string
		got, want float64
	}{
		{"R@1", f.RecallAt["1"], base.RecallAt["1"]},
		{"R@10", f.RecallAt["10"], base.RecallAt["10"]},
		{"mAP@10", f.MAP10, base.MAP10},
		{"P@10", f.P10, base.P10},
	}
	if f.CatalogueShotAt10 != nil && base.CatalogueShotAt10 != nil {
		check = append(check, struct {
			name      string
			got, want float64
		}{"catalogue shot@10", *f.CatalogueShotAt10, *base.CatalogueShotAt10})
	}
	for _, c := range check {
		if c.got < c.want-tol-1e-9 {
			return fmt.Sprintf("%s %.3f < %.3f", c.name, c.got, c.want)
		}
	}
	return ""
}

// splitGroups deals the labels into a training part and a held-apart part, by seed: the
// same labels and seed always give the same split, whatever order they come in.
func splitGroups(labels []string, seed uint64, heldApart float64) (train, held []string, err error) {
	uniq := slices.Clone(labels)
	sort.Strings(uniq)
	uniq = slices.Compact(uniq)
	n := int(float64(len(uniq))*heldApart + 0.5)
	if len(uniq) < 3 || n < 1 || n > len(uniq)-2 {
		return nil, nil, fmt.Errorf("%d groups cannot be split into at least 2 to train on and 1 held apart (held-apart share %g)", len(uniq), heldApart)
	}
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	rng.Shuffle(len(uniq), func(i, j int) { uniq[i], uniq[j] = uniq[j], uniq[i] })
	held, train = uniq[:n], uniq[n:]
	sort.Strings(held)
	sort.Strings(train)
	return train, held, nil
}

// samplesOf turns photos into training samples, catalogue shots weighted shotWeight.
func samplesOf(photos []labelledPhoto, shotWeight float64) []adapt.Sample {
	out := make([]adapt.Sample, len(photos))
	for i, ph := range photos {
		out[i] = adapt.Sample{Vector: ph.vector, Group: ph.label, Weight: 1}
		if ph.shot {
			out[i].Weight = shotWeight
		}
	}
	return out
}

// fitDims trains on samples at one shrink and returns projections for each of dims, each
// capped at the directions the samples span (reported back as the dims used).
func fitDims(samples []adapt.Sample, shrink float64, dims []int, meta map[string]string) ([]*adapt.Projection, error) {
	s, err := adapt.Analyze(samples)
	if err != nil {
		return nil, err
	}
	w, err := s.Whiten(shrink)
	if err != nil {
		return nil, err
	}
	out := make([]*adapt.Projection, len(dims))
	for i, d := range dims {
		if out[i], err = w.Projection(min(d, s.Rank()), meta); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Bootstrap settings of every "how sure" the commands print: fixed, so reruns agree.
const (
	gainRounds = 2000
	gainSeed   = 1
)

// gainJSON is one figure's difference (after - before) with its 95% bootstrap interval.
type gainJSON struct {
	Figure string  `json:"figure"`
	Diff   float64 `json:"diff"`
	Low    float64 `json:"low"`
	High   float64 `json:"high"`
}

// gainOf says how sure the difference between two evaluations on the same queries is;
// the shot figures only when the catalogue marks catalogue shots.
func gainOf(before, after figuresJSON) ([]gainJSON, error) {
	g, err := quality.Gain(before.report, after.report, gainRounds, gainSeed)
	if err != nil {
		return nil, err
	}
	var out []gainJSON
	for _, iv := range g {
		if strings.HasPrefix(iv.Figure, "shot") && before.CatalogueShotAt10 == nil {
			continue
		}
		out = append(out, gainJSON{Figure: iv.Figure, Diff: iv.Diff, Low: iv.Low, High: iv.High})
	}
	return out, nil
}

// gainLine prints gains as "R@1 +0.230 [+0.140, +0.320], ...".
func gainLine(gs []gainJSON) string {
	parts := make([]string, len(gs))
	for i, g := range gs {
		parts[i] = fmt.Sprintf("%s %+.3f [%+.3f, %+.3f]", g.Figure, g.Diff, g.Low, g.High)
	}
	return strings.Join(parts, ", ")
}

// shotAttribute marks the products of a quality run that have a catalogue shot, for
// quality --boost-shots.
const shotAttribute = "catalogue_shot"

// markShot returns attrs with shotAttribute set when shot, without changing attrs.
func markShot(attrs map[string]string, shot bool) map[string]string {
	if !shot {
		return attrs
	}
	out := maps.Clone(attrs)
	if out == nil {
		out = map[string]string{}
	}
	out[shotAttribute] = "true"
	return out
}
