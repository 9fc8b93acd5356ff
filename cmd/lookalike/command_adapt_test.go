package main

import (
	"context"
	"encoding/csv"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"lookalike/adapt"
	"lookalike/catalog"
)

func TestAdaptRefusesBadFlags(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"nothing to learn from", []string{"adapt"}, "give --dataset, or --catalog"},
		{"two sources", []string{"adapt", "--dataset", "grocery", "--catalog", "c.csv"}, "not both"},
		{"an unknown dataset", []string{"adapt", "--dataset", "abo"}, "--dataset must be grocery or clothing"},
		{"zero dims", []string{"adapt", "--dataset", "grocery", "--dims", "0"}, "--dims"},
		{"shrink 1", []string{"adapt", "--dataset", "grocery", "--shrink", "1"}, "--shrink"},
		{"a zero shot weight", []string{"adapt", "--dataset", "grocery", "--shot-weight", "10,0"}, "--shot-weight"},
		{"a shot weight that is no number", []string{"adapt", "--dataset", "grocery", "--shot-weight", "ten"}, "--shot-weight"},
		{"everything held apart", []string{"adapt", "--dataset", "grocery", "--held-apart", "1"}, "--held-apart"},
		{"an argument", []string{"adapt", "x"}, "takes no arguments"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := runCLI(t, nil, tc.args...)
			if code != exitUsage || !strings.Contains(stderr, tc.want) {
				t.Errorf("exit %d, stderr %q; want %d and %q", code, stderr, exitUsage, tc.want)
			}
		})
	}
}

// groceryPart writes manifests for a part of the shared grocery photos: every product's
// catalogue shot and its first perProduct train photos as the catalogue, its first
// queriesPerProduct val photos (where it has so many) as the queries, n of them.
func groceryPart(t *testing.T, perProduct, queriesPerProduct int) (catalogPath, queriesPath string, n int) {
	t.Helper()
	dir, err := findSharedDir("datasets")
	if err != nil {
		t.Skip(err)
	}
	f, err := os.Open(filepath.Join(dir, "grocery", "labels.csv"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	recs, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	col := map[string]int{}
	for i, h := range recs[0] {
		col[h] = i
	}
	out := t.TempDir()
	catalogPath, queriesPath = filepath.Join(out, "catalog.csv"), filepath.Join(out, "queries.csv")
	var cat, queries [][]string
	head := []string{"id", "image", "category", "title"}
	cat, queries = append(cat, head), append(queries, head)
	taken := map[[2]string]int{}
	for _, r := range recs[1:] {
		split, label := r[col["split"]], r[col["label"]]
		row := []string{strings.TrimSuffix(filepath.Base(r[col["file"]]), ".jpg"), filepath.Join(dir, "grocery", r[col["file"]]), r[col["coarse_label"]], label}
		switch key := [2]string{split, label}; {
		case split == "iconic":
			cat = append(cat, row)
		case split == "train" && taken[key] < perProduct:
			cat = append(cat, row)
			taken[key]++
		case split == "val" && taken[key] < queriesPerProduct:
			queries = append(queries, row)
			taken[key]++
		}
	}
	for path, rows := range map[string][][]string{catalogPath: cat, queriesPath: queries} {
		w, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := csv.NewWriter(w).WriteAll(rows); err != nil {
			t.Fatal(err)
		}
		w.Close()
	}
	return catalogPath, queriesPath, len(queries) - 1
}

// adapt on a part of the grocery photos with the real model, the file it writes read back,
// quality --projection scoring it on street photos it never saw, and the refusal of a
// projection that makes validation worse.
func TestAdaptThenQualityOnGroceryPhotos(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("embeds a part of the grocery photos and trains on them")
	}
	catalogPath, queriesPath, nq := groceryPart(t, 8, 2)
	out := filepath.Join(t.TempDir(), "grocery.proj")
	base := []string{"--catalog", catalogPath, "--label", "title", "--catalogue-shot", "iconic__", "--json"}

	// A part this small validates on 62 photos, where one query is 0.016 of a figure: the
	// tolerance is wide so the test checks the mechanics and the gain on fitted groups.
	code, stdout, stderr := runCLI(t, nil, append([]string{"adapt", "--dims", "64", "--shrink", "0.3", "--shot-weight", "20", "--tolerance", "0.2", "--out", out}, base...)...)
	if code != exitOK {
		t.Fatalf("adapt: exit %d: %s", code, stderr)
	}
	var r adaptJSON
	mustJSON(t, stdout, &r)
	if r.Photos != 31*9 || r.Groups != 31 || len(r.TrainingGroups) != 15 || len(r.HeldApartGroups) != 16 {
		t.Fatalf("adapt covered %d photos in %d groups, split %d/%d", r.Photos, r.Groups, len(r.TrainingGroups), len(r.HeldApartGroups))
	}
	// Two of every product's 8 street photos are queries; the catalogue shots never are.
	if r.SeenQueries+r.UnseenQueries != 62 || r.ValidationPhotos != 31*9-62 || r.UnseenQueries != 32 {
		t.Errorf("validation: %d + %d queries against %d photos", r.SeenQueries, r.UnseenQueries, r.ValidationPhotos)
	}
	if len(r.Configs) != 1 || r.Chosen != 0 || r.Configs[0].ShotWeight != 20 || r.Written != out || r.Refused != "" {
		t.Fatalf("configs %+v, chosen %d, written %q, refused %q", r.Configs, r.Chosen, r.Written, r.Refused)
	}
	// How sure: every figure's interval holds its difference, and the difference is the
	// chosen figures minus the raw ones.
	if r.ChosenGain == nil || len(r.ChosenGain.Seen) != 6 || len(r.ChosenGain.Unseen) != 6 {
		t.Fatalf("chosen gain %+v, want six figures for each validation", r.ChosenGain)
	}
	for _, g := range append(r.ChosenGain.Seen, r.ChosenGain.Unseen...) {
		if !(g.Low <= g.Diff && g.Diff <= g.High) {
			t.Errorf("gain %+v: the interval does not hold the difference", g)
		}
	}
	if g := r.ChosenGain.Seen[2]; g.Figure != "mAP@10" || math.Abs(g.Diff-(r.Configs[0].Figures.Seen.MAP10-r.Raw.Seen.MAP10)) > 1e-9 {
		t.Errorf("seen mAP@10 gain %+v, figures %.3f -> %.3f", g, r.Raw.Seen.MAP10, r.Configs[0].Figures.Seen.MAP10)
	}
	seen := r.Configs[0].Figures.Seen
	t.Logf("validation on fitted groups: mAP@10 %.3f -> %.3f, catalogue shot@10 %.3f -> %.3f", r.Raw.Seen.MAP10, seen.MAP10, *r.Raw.Seen.CatalogueShotAt10, *seen.CatalogueShotAt10)
	if seen.MAP10 < r.Raw.Seen.MAP10+0.1 || *seen.CatalogueShotAt10 < *r.Raw.Seen.CatalogueShotAt10+0.1 {
		t.Errorf("the projection does not bring new photos of fitted groups closer to their group and its catalogue shot")
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	p, err := adapt.Read(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if p.Checksum() != r.Checksum || p.In() != 1280 || p.Out() != 64 || p.Meta()["model"] != r.Model || p.Meta()["samples"] != "279" || p.Meta()["shot_weight"] != "20" {
		t.Errorf("the file: %s %d -> %d, meta %v; the report: %s", p.Checksum(), p.In(), p.Out(), p.Meta(), r.Checksum)
	}

	code, stdout, stderr = runCLI(t, nil, "quality", "--catalog", catalogPath, "--queries", queriesPath,
		"--label", "title", "--catalogue-shot", "iconic__", "--projection", out, "--json")
	if code != exitOK {
		t.Fatalf("quality --projection: exit %d: %s", code, stderr)
	}
	var q qualityProjectionJSON
	mustJSON(t, stdout, &q)
	t.Logf("street photos: R@1 %.3f -> %.3f, catalogue shot@10 %.3f -> %.3f; transfer R@1 %.3f -> %.3f",
		q.Raw.RecallAt["1"], q.Projected.RecallAt["1"], *q.Raw.CatalogueShotAt10, *q.Projected.CatalogueShotAt10,
		q.Transfer.Raw.RecallAt["1"], q.Transfer.Projected.RecallAt["1"])
	if q.Photos != 279 || q.Raw.Queries != nq || q.Projected.Queries != nq || q.Checksum != r.Checksum || q.Dims != 64 {
		t.Errorf("quality covered %d photos, %d/%d queries, projection %s of %d dims", q.Photos, q.Raw.Queries, q.Projected.Queries, q.Checksum, q.Dims)
	}
	if q.Transfer == nil || q.Transfer.Raw.Queries == 0 || q.Transfer.Raw.Queries >= nq || q.Transfer.Shrink != 0.3 || q.Transfer.ShotWeight != 20 {
		t.Fatalf("transfer %+v", q.Transfer)
	}
	if len(q.Gain) != 6 || len(q.Transfer.Gain) != 6 {
		t.Errorf("quality gains %+v and %+v, want six figures each", q.Gain, q.Transfer.Gain)
	}
	if *q.Projected.CatalogueShotAt10 <= *q.Raw.CatalogueShotAt10 {
		t.Errorf("projected street photos find their catalogue shot no more often than raw ones")
	}

	// The spec adapt wrote beside the projection makes the embedder project every photo, so
	// a catalogue ingesting the photos through it answers exactly as the report scored.
	if want := strings.TrimSuffix(out, ".proj") + ".spec.json"; r.Spec != want {
		t.Fatalf("spec written to %q, want %q", r.Spec, want)
	}
	code, stdout, stderr = runCLI(t, nil, "quality", "--catalog", catalogPath, "--queries", queriesPath,
		"--label", "title", "--catalogue-shot", "iconic__", "--spec", r.Spec, "--json")
	if code != exitOK {
		t.Fatalf("quality --spec: exit %d: %s", code, stderr)
	}
	var served qualityJSON
	mustJSON(t, stdout, &served)
	for k, want := range q.Projected.RecallAt {
		if got := served.RecallAt[k]; math.Abs(got-want) > 1e-9 {
			t.Errorf("served R@%s %.3f, the report's projected %.3f", k, got, want)
		}
	}
	if math.Abs(served.MAP10-q.Projected.MAP10) > 1e-9 || math.Abs(*served.CatalogueShotAt10-*q.Projected.CatalogueShotAt10) > 1e-9 {
		t.Errorf("served mAP@10 %.3f shot@10 %.3f, the report's projected %.3f and %.3f",
			served.MAP10, *served.CatalogueShotAt10, q.Projected.MAP10, *q.Projected.CatalogueShotAt10)
	}

	// derive: a raw catalogue of some of the photos, projected without embedding them again,
	// is the catalogue the projected spec makes.
	raw := filepath.Join(t.TempDir(), "raw")
	code, stdout, stderr = runCLI(t, nil, "model", "--json")
	if code != exitOK {
		t.Fatalf("model: exit %d: %s", code, stderr)
	}
	var rawModel, projModel modelJSON
	mustJSON(t, stdout, &rawModel)
	code, stdout, stderr = runCLI(t, nil, "model", "--json", "--spec", r.Spec)
	if code != exitOK {
		t.Fatalf("model --spec: exit %d: %s", code, stderr)
	}
	mustJSON(t, stdout, &projModel)
	writeRawCatalogue(t, raw, catalogPath, 12)
	derived := filepath.Join(t.TempDir(), "derived")
	code, stdout, stderr = runCLI(t, nil, "derive", "--from", raw, "--to", derived, "--spec", r.Spec, "--json")
	if code != exitOK {
		t.Fatalf("derive: exit %d: %s", code, stderr)
	}
	var d deriveJSON
	mustJSON(t, stdout, &d)
	if d.Products != 12 || d.Photos != 12 || d.KeptPhotos != 12 || d.Steps != 1 || d.Identity != projModel.Identity || d.Dim != 64 || d.Identity == rawModel.Identity {
		t.Errorf("derive: %+v; the projected model is %s", d, projModel.Identity)
	}
	code, _, stderr = runCLI(t, nil, "derive", "--from", derived, "--to", filepath.Join(t.TempDir(), "again"), "--spec", r.Spec)
	if code != exitFailure || !strings.Contains(stderr, "already holds this spec's vectors") {
		t.Errorf("deriving projected vectors again: exit %d, %q", code, stderr)
	}
	code, _, stderr = runCLI(t, nil, "derive", "--from", derived, "--to", filepath.Join(t.TempDir(), "pooled"), "--spec", filepath.Join("..", "..", "docs", "specs", "mobilenetv2-int8-rmac.json"))
	if code != exitFailure || !strings.Contains(stderr, "embed the photos again") {
		t.Errorf("deriving pooled vectors from projected ones: exit %d, %q", code, stderr)
	}

	// One dimension cannot tell 31 products apart: validation gets worse, nothing is written.
	refused := filepath.Join(t.TempDir(), "refused.proj")
	code, stdout, stderr = runCLI(t, nil, append([]string{"adapt", "--dims", "1", "--shrink", "0.3", "--out", refused}, base...)...)
	if code != exitFailure || !strings.Contains(stderr, "made validation worse") {
		t.Fatalf("adapt --dims 1: exit %d, stderr %q", code, stderr)
	}
	mustJSON(t, stdout, &r)
	if r.Chosen != -1 || r.Configs[0].Worse == "" {
		t.Errorf("chosen %d, worse %q", r.Chosen, r.Configs[0].Worse)
	}
	if _, err := os.Stat(refused); !os.IsNotExist(err) {
		t.Errorf("a refused projection was written (%v)", err)
	}
}

// writeRawCatalogue ingests the first n photos of a manifest into a new data directory with
// the default model, keeping photos, and closes it.
func writeRawCatalogue(t *testing.T, dir, manifest string, n int) {
	t.Helper()
	rows, err := manifestRows(manifest)
	if err != nil {
		t.Fatal(err)
	}
	var mf modelFlags
	emb, _, err := mf.open(context.Background(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer emb.Close()
	ctx := context.Background()
	c, err := catalog.Open(ctx, catalog.Config{DataDir: dir, Embedder: emb, KeepPhotos: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, row := range rows[:n] {
		img, err := os.ReadFile(resolveImage(filepath.Dir(manifest), row.Photos[0].Image))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Upsert(ctx, catalog.Write{ID: row.ID, Title: row.Title, Photos: []catalog.PhotoWrite{{Image: img}}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
}

// The merit adapt ranks by: two configurations with every catalogue shot in the top 10 are
// told apart by how high the shot comes; without shots it is mAP@10 alone.
func TestAdaptMeritRanksByTheShotsRank(t *testing.T) {
	f := func(v float64) *float64 { return &v }
	for _, tc := range []struct {
		name        string
		better, not figuresJSON
	}{
		{"shot first beats shot tenth at the same shot@10",
			figuresJSON{MAP10: 0.9, CatalogueShotAt10: f(1), CatalogueShotMRR10: f(0.9)},
			figuresJSON{MAP10: 0.9, CatalogueShotAt10: f(1), CatalogueShotMRR10: f(0.1)}},
		{"mAP@10 counts beside the rank",
			figuresJSON{MAP10: 0.95, CatalogueShotAt10: f(1), CatalogueShotMRR10: f(0.5)},
			figuresJSON{MAP10: 0.80, CatalogueShotAt10: f(1), CatalogueShotMRR10: f(0.6)}},
		{"no shots: mAP@10 alone", figuresJSON{MAP10: 0.7}, figuresJSON{MAP10: 0.6}},
	} {
		if !(tc.better.merit() > tc.not.merit()) {
			t.Errorf("%s: merit %v not above %v", tc.name, tc.better.merit(), tc.not.merit())
		}
	}
}
