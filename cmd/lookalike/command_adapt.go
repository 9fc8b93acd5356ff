package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"lookalike/adapt"
	"lookalike/catalog"
	"lookalike/embed"
)

// Defaults of lookalike adapt: the grid it tries, from wider sweeps on the shared photos'
// validation (benchmarks/results/adapt.md): fewer dimensions lose the catalogue shots, less
// shrinkage loses the groups never fitted. A catalogue shot weighs 10 or 30 photos: at 1 the
// projection learns the street photos' look and pulls them away from the shot, and which
// of the two serves a catalogue better depends on how many photos each product has.
const (
	defaultAdaptDims       = "256,512,768"
	defaultAdaptShrink     = "0.03,0.1,0.3"
	defaultAdaptShotWeight = "10,30"
	defaultAdaptSeed       = 1
)

// adaptJSON is `lookalike adapt --json`.
type adaptJSON struct {
	Catalog string `json:"catalog"`
	Label   string `json:"label"`
	Model   string `json:"model"`
	Photos  int    `json:"photos"`
	Groups  int    `json:"groups"`
	Seed    uint64 `json:"seed"`
	// ShotWeights are the catalogue-shot weights tried (one, unused, when the catalogue
	// marks no shots).
	ShotWeights []float64 `json:"shot_weights"`
	Tolerance   float64   `json:"tolerance"`
	// TrainingGroups are fitted in the held-apart check; HeldApartGroups never are.
	TrainingGroups  []string `json:"training_groups"`
	HeldApartGroups []string `json:"held_apart_groups"`
	// ValidationPhotos is the validation catalogue; SeenQueries and UnseenQueries its
	// queries from the training groups and from the held-apart ones, none of them fitted.
	ValidationPhotos int `json:"validation_photos"`
	SeenQueries      int `json:"seen_queries"`
	UnseenQueries    int `json:"unseen_queries"`
	// Raw is the model's own vectors on the validation.
	Raw     adaptFiguresJSON  `json:"raw"`
	Configs []adaptConfigJSON `json:"configs"`
	// Chosen indexes Configs (-1 when every one made validation worse).
	Chosen int `json:"chosen"`
	// ChosenGain is the chosen configuration minus raw on the validation, each figure with
	// its 95% paired-bootstrap interval over the validation queries: how sure the gain is.
	ChosenGain *adaptGainJSON `json:"chosen_gain,omitempty"`
	// Written is the projection file (empty without --out or when refused), fitted on every
	// photo of every group with the chosen configuration.
	Written  string `json:"written,omitempty"`
	Checksum string `json:"checksum,omitempty"`
	// Spec is the model spec written beside it: the model's own plus the projection as a
	// post-processing step, what serve, ingest and quality take as --spec.
	Spec        string  `json:"spec,omitempty"`
	FitPhotos   int     `json:"fit_photos,omitempty"`
	Refused     string  `json:"refused,omitempty"`
	MillisApply float64 `json:"ms_per_apply"`
}

// adaptGainJSON is the chosen configuration's gain on both validations.
type adaptGainJSON struct {
	Seen   []gainJSON `json:"seen"`
	Unseen []gainJSON `json:"unseen"`
}

// adaptFiguresJSON holds the two validation figures: new photos of groups it was fitted on,
// and photos of groups it never saw.
type adaptFiguresJSON struct {
	Seen   figuresJSON `json:"seen_groups"`
	Unseen figuresJSON `json:"held_apart_groups"`
}

// adaptConfigJSON is one configuration tried.
type adaptConfigJSON struct {
	Dims   int     `json:"dims"`
	Shrink float64 `json:"shrink"`
	// ShotWeight is what a catalogue shot weighs against one other photo in the fit.
	ShotWeight float64 `json:"shot_weight"`
	// Capped says why Dims is below the --dims asked for ("" when it is not).
	Capped string `json:"capped,omitempty"`
	// UnseenDims is the dimension of the held-apart check's projection: Dims, or the
	// directions its fewer training photos span when that is less.
	UnseenDims int              `json:"held_apart_dims"`
	Figures    adaptFiguresJSON `json:"figures"`
	// Worse names what it lost against the raw vectors ("" when nothing beyond tolerance).
	Worse string `json:"worse,omitempty"`
}

func runAdapt(ctx context.Context, a *app, args []string) error {
	fs := newFlagSet(a, "adapt", "[flags]",
		"Learn a linear projection of the embeddings from the catalogue's own groups (the photos of one\n"+
			"label are positives): supervised whitening, y = L2(P(L2(v) - mean)), P the leading eigenvectors\n"+
			"of W1 St W1 times W1 with W1 = Sw^-1/2 (Sw the within-group covariance, shrunk; St the total\n"+
			"one). It embeds the catalogue once and validates on photos it does not fit: a contiguous quarter\n"+
			"of every group's photos (never a catalogue shot) searches the rest, both from groups it fits and\n"+
			"from groups --seed holds apart (fitted without them). Of the --dims x --shrink x --shot-weight\n"+
			"tried, those not worse than the raw model on any figure by more than --tolerance compete on\n"+
			"mAP@10 of the fitted groups, plus the reciprocal rank of their catalogue shot in the top 10 when\n"+
			"the catalogue marks shots (a street photo should find its pack shot, and high); the winner is\n"+
			"refitted on every photo and written to --out. When all are worse nothing\n"+
			"is written (exit 1). --dataset grocery (iconic+train, label = product) or clothing (train, label\n"+
			"= class) use the shared photos; their query split is left to 'lookalike quality --projection'.")
	var mf modelFlags
	mf.register(fs, a)
	dataset := fs.String("dataset", "", "grocery or clothing: the shared catalogue photos")
	catalogPath := fs.String("catalog", "", "catalogue manifest (as for ingest)")
	label := fs.String("label", "title", "what a row is labelled with: title, category or an attribute column (the groups)")
	shot := fs.String("catalogue-shot", "", "photos whose image path contains this are catalogue shots (grocery: iconic__)")
	products := fs.Bool("products", false, "with --dataset grocery: one product per grocery product with all its photos")
	var dimsList, shrinkList, weightList stringList
	fs.Var(&dimsList, "dims", "projected dimensions to try (comma-separated; default "+defaultAdaptDims+")")
	fs.Var(&shrinkList, "shrink", "within-group covariance shrinkages in [0, 1) to try (comma-separated; default "+defaultAdaptShrink+")")
	fs.Var(&weightList, "shot-weight", "weights of a catalogue shot against one other photo to try (comma-separated, above 0; default "+defaultAdaptShotWeight+")")
	seed := fs.Uint64("seed", defaultAdaptSeed, "seed of the split into training and held-apart groups and of the validation photos")
	heldApart := fs.Float64("held-apart", 0.5, "share of the groups held apart from the held-apart check's fit")
	tolerance := fs.Float64("tolerance", 0.02, "how far below the raw model a validation figure may fall")
	perGroup := fs.Int("per-group", 0, "at most this many photos per group besides catalogue shots (0: all; a quick run)")
	out := fs.String("out", "", "write the projection here (nothing is written without it)")
	specOut := fs.String("spec-out", "", "with --out: write the model spec that applies the projection here (default: --out with the extension .spec.json)")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usagef("takes no arguments")
	}
	dims, shrinks, weights, err := adaptGrid(dimsList, shrinkList, weightList)
	if err != nil {
		return err
	}
	if !(*heldApart > 0 && *heldApart < 1) || !(*tolerance >= 0) || *perGroup < 0 {
		return usagef("--held-apart must be in (0, 1), --tolerance and --per-group at least 0")
	}
	work, err := os.MkdirTemp("", "lookalike-adapt")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	name := *catalogPath
	switch {
	case *dataset != "":
		if *catalogPath != "" {
			return usagef("give --dataset or --catalog, not both")
		}
		cat, _, l, s, err := sharedDataset(*dataset, work, *products)
		if err != nil {
			return err
		}
		*catalogPath, *label, name = cat, l, *dataset+" catalogue"
		if *shot == "" {
			*shot = s
		}
	case *catalogPath == "":
		return usagef("give --dataset, or --catalog with --label")
	}

	emb, _, err := mf.open(ctx, a.logger)
	if err != nil {
		return err
	}
	defer emb.Close()
	set, err := loadLabelled(ctx, emb, *catalogPath, "", *label, *shot, *perGroup)
	if err != nil {
		return err
	}
	labels := make([]string, len(set.photos))
	for i, ph := range set.photos {
		labels[i] = ph.label
	}
	train, held, err := splitGroups(labels, *seed, *heldApart)
	if err != nil {
		return err
	}
	shots := set.hasShots()
	if !shots {
		weights = weights[:1] // no photo it would weigh
	}
	report := adaptJSON{Catalog: name, Label: *label, Model: emb.Identity(), Photos: len(set.photos),
		Groups: len(train) + len(held), Seed: *seed, ShotWeights: weights, Tolerance: *tolerance,
		TrainingGroups: train, HeldApartGroups: held, Chosen: -1}
	isHeld := map[string]bool{}
	for _, g := range held {
		isHeld[g] = true
	}

	// The validation: a quarter of every group's photos (never a catalogue shot) searches
	// the rest. The seen fit learns from every group's remaining photos, the held-apart fit
	// only from the training groups' remaining photos.
	queries := validationQueries(set.photos, *seed)
	var catalogue, seenFit, unseenFit, seenQ, unseenQ []labelledPhoto
	for i, ph := range set.photos {
		switch {
		case queries[i] && isHeld[ph.label]:
			unseenQ = append(unseenQ, ph)
		case queries[i]:
			seenQ = append(seenQ, ph)
		default:
			catalogue = append(catalogue, ph)
			seenFit = append(seenFit, ph)
			if !isHeld[ph.label] {
				unseenFit = append(unseenFit, ph)
			}
		}
	}
	report.ValidationPhotos, report.SeenQueries, report.UnseenQueries = len(catalogue), len(seenQ), len(unseenQ)
	evaluate := func(f transform, identity string, dim int, qs []labelledPhoto) (figuresJSON, error) {
		rep, err := evaluateVectors(ctx, a.logger, work, dim, identity, set.rows, catalogue, qs, f, catalog.SearchOptions{K: 10})
		if err != nil {
			return figuresJSON{}, err
		}
		return figuresOf(rep, shots), nil
	}
	both := func(seenF, unseenF transform, seenID, unseenID string, seenDim, unseenDim int) (adaptFiguresJSON, error) {
		seen, err := evaluate(seenF, seenID, seenDim, seenQ)
		if err != nil {
			return adaptFiguresJSON{}, err
		}
		unseen, err := evaluate(unseenF, unseenID, unseenDim, unseenQ)
		return adaptFiguresJSON{Seen: seen, Unseen: unseen}, err
	}
	if report.Raw, err = both(nil, nil, emb.Identity(), emb.Identity(), emb.Dim(), emb.Dim()); err != nil {
		return err
	}
	var timer applyTimer
	for _, w := range weights {
		for _, s := range shrinks {
			seenPs, err := fitDims(samplesOf(seenFit, w), s, dims, nil)
			if err != nil {
				return fmt.Errorf("fit on the seen groups: %w", err)
			}
			unseenPs, err := fitDims(samplesOf(unseenFit, w), s, dims, nil)
			if err != nil {
				return fmt.Errorf("fit on the training groups: %w", err)
			}
			for i, d := range dims {
				sp, up := seenPs[i], unseenPs[i]
				timer.p = sp
				seenApply := timer.apply
				figs, err := both(seenApply, up.Apply, projectionIdentity(emb.Identity(), sp), projectionIdentity(emb.Identity(), up), sp.Out(), up.Out())
				if err != nil {
					return err
				}
				cfg := adaptConfigJSON{Dims: sp.Out(), Shrink: s, ShotWeight: w, UnseenDims: up.Out(), Figures: figs}
				if sp.Out() != d {
					cfg.Capped = fmt.Sprintf("--dims %d: the %d photos fitted span %d directions", d, len(seenFit), sp.Out())
				}
				if worse := figs.Seen.worseThan(report.Raw.Seen, *tolerance); worse != "" {
					cfg.Worse = "seen groups: " + worse
				} else if worse := figs.Unseen.worseThan(report.Raw.Unseen, *tolerance); worse != "" {
					cfg.Worse = "held-apart groups: " + worse
				}
				report.Configs = append(report.Configs, cfg)
			}
		}
	}
	report.MillisApply = timer.millis()
	// The best on the seen groups, which is what a catalogue fitted on itself meets.
	for i, c := range report.Configs {
		if c.Worse == "" && (report.Chosen < 0 || c.Figures.Seen.merit() > report.Configs[report.Chosen].Figures.Seen.merit()) {
			report.Chosen = i
		}
	}
	if report.Chosen >= 0 {
		c := report.Configs[report.Chosen].Figures
		var g adaptGainJSON
		if g.Seen, err = gainOf(report.Raw.Seen, c.Seen); err != nil {
			return err
		}
		if g.Unseen, err = gainOf(report.Raw.Unseen, c.Unseen); err != nil {
			return err
		}
		report.ChosenGain = &g
	}
	if report.Chosen < 0 {
		report.Refused = "every configuration made validation worse; no projection written"
	} else if *out != "" {
		c := report.Configs[report.Chosen]
		meta := map[string]string{"model": emb.Identity(), "label": *label, "catalogue": name,
			"shot_weight": strconv.FormatFloat(c.ShotWeight, 'g', -1, 64), "seed": strconv.FormatUint(*seed, 10)}
		ps, err := fitDims(samplesOf(set.photos, c.ShotWeight), c.Shrink, []int{c.Dims}, meta)
		if err != nil {
			return fmt.Errorf("fit on every photo: %w", err)
		}
		err = writeFileAtomically(*out, func(w io.Writer) error { return ps[0].Write(w) })
		if err != nil {
			return fmt.Errorf("write projection: %w", err)
		}
		report.Written, report.Checksum, report.FitPhotos = *out, ps[0].Checksum(), len(set.photos)
		if *specOut == "" {
			*specOut = strings.TrimSuffix(*out, filepath.Ext(*out)) + ".spec.json"
		}
		if err := writeProjectedSpec(*specOut, *out, emb.Spec(), ps[0]); err != nil {
			return err
		}
		report.Spec = *specOut
	}
	if *asJSON {
		if err := writeJSON(a.stdout, report); err != nil {
			return err
		}
	} else if err := printAdapt(a, report); err != nil {
		return err
	}
	if report.Refused != "" {
		return fmt.Errorf("%s", report.Refused)
	}
	return ctx.Err()
}

// adaptGrid parses --dims, --shrink and --shot-weight.
func adaptGrid(dimsList, shrinkList, weightList stringList) ([]int, []float64, []float64, error) {
	if len(dimsList) == 0 {
		dimsList.Set(defaultAdaptDims)
	}
	if len(shrinkList) == 0 {
		shrinkList.Set(defaultAdaptShrink)
	}
	if len(weightList) == 0 {
		weightList.Set(defaultAdaptShotWeight)
	}
	var dims []int
	for _, s := range dimsList {
		d, err := strconv.Atoi(s)
		if err != nil || d < 1 || d > adapt.MaxDim {
			return nil, nil, nil, usagef("--dims: %q is not a dimension in 1..%d", s, adapt.MaxDim)
		}
		dims = append(dims, d)
	}
	var shrinks []float64
	for _, s := range shrinkList {
		f, err := strconv.ParseFloat(s, 64)
		if err != nil || !(f >= 0 && f < 1) {
			return nil, nil, nil, usagef("--shrink: %q is not in [0, 1)", s)
		}
		shrinks = append(shrinks, f)
	}
	var weights []float64
	for _, s := range weightList {
		f, err := strconv.ParseFloat(s, 64)
		if err != nil || !(f > 0) || math.IsInf(f, 0) {
			return nil, nil, nil, usagef("--shot-weight: %q is not a weight above 0", s)
		}
		weights = append(weights, f)
	}
	return dims, shrinks, weights, nil
}

// validationQueries marks a quarter of every group's photos (at least one of a group with
// two or more, never a catalogue shot) as validation queries: one contiguous run in manifest
// order, starting where the seed says. Photos taken in one session sit next to each other in
// a manifest and look alike; a scattered quarter would leave every query its neighbours from
// the same session in the catalogue, and measure near-duplicates rather than new photos.
func validationQueries(photos []labelledPhoto, seed uint64) []bool {
	byGroup := map[string][]int{}
	var groups []string
	for i, ph := range photos {
		if ph.shot {
			continue
		}
		if _, ok := byGroup[ph.label]; !ok {
			groups = append(groups, ph.label)
		}
		byGroup[ph.label] = append(byGroup[ph.label], i)
	}
	sort.Strings(groups)
	rng := rand.New(rand.NewPCG(seed, 0x9e7))
	marked := make([]bool, len(photos))
	for _, g := range groups {
		idx := byGroup[g]
		if len(idx) < 2 {
			continue
		}
		start, n := rng.IntN(len(idx)), max(1, len(idx)/4)
		for k := range n {
			marked[idx[(start+k)%len(idx)]] = true
		}
	}
	return marked
}

func printAdapt(a *app, r adaptJSON) error {
	tw := newTable(a.stdout)
	fmt.Fprintf(tw, "catalogue\t%s: %d photos in %d groups (%s)\n", r.Catalog, r.Photos, r.Groups, r.Label)
	fmt.Fprintf(tw, "split\tseed %d: %d groups fitted, %d held apart (%s)\n", r.Seed, len(r.TrainingGroups), len(r.HeldApartGroups), strings.Join(r.HeldApartGroups, ", "))
	fmt.Fprintf(tw, "validation\t%d queries from fitted groups and %d from held-apart ones search %d photos; none of the queries is fitted\n", r.SeenQueries, r.UnseenQueries, r.ValidationPhotos)
	fmt.Fprintln(tw)
	shots := r.Raw.Seen.CatalogueShotAt10 != nil
	head := "\tseen R@1\tR@10\tmAP@10\tP@10"
	if shots {
		head += "\tshot@10\tshot MRR"
	}
	head += "\theld-apart R@1\tR@10\tmAP@10\tP@10"
	if shots {
		head += "\tshot@10\tshot MRR"
	}
	fmt.Fprintln(tw, head+"\t")
	row := func(name string, f adaptFiguresJSON, note string) {
		fmt.Fprintf(tw, "%s", name)
		for _, g := range []figuresJSON{f.Seen, f.Unseen} {
			fmt.Fprintf(tw, "\t%.3f\t%.3f\t%.3f\t%.3f", g.RecallAt["1"], g.RecallAt["10"], g.MAP10, g.P10)
			if shots {
				fmt.Fprintf(tw, "\t%.3f\t%.3f", *g.CatalogueShotAt10, *g.CatalogueShotMRR10)
			}
		}
		fmt.Fprintf(tw, "\t%s\n", note)
	}
	row("raw", r.Raw, "")
	for i, c := range r.Configs {
		note := c.Worse
		if i == r.Chosen {
			note = "chosen"
		}
		name := fmt.Sprintf("dims %d, shrink %g", c.Dims, c.Shrink)
		if shots {
			name += fmt.Sprintf(", shot weight %g", c.ShotWeight)
		}
		if c.Capped != "" {
			name += " (capped)"
		}
		if c.UnseenDims != c.Dims {
			name += fmt.Sprintf(" (held apart: %d)", c.UnseenDims)
		}
		row(name, c.Figures, note)
	}
	fmt.Fprintln(tw)
	if g := r.ChosenGain; g != nil {
		fmt.Fprintf(tw, "how sure\tchosen - raw, 95%% paired-bootstrap interval over the validation queries\n")
		fmt.Fprintf(tw, "\tseen groups: %s\n", gainLine(g.Seen))
		fmt.Fprintf(tw, "\theld-apart groups: %s\n", gainLine(g.Unseen))
	}
	fmt.Fprintf(tw, "apply\t%.3f ms per photo\n", r.MillisApply)
	switch {
	case r.Refused != "":
		fmt.Fprintf(tw, "refused\t%s\n", r.Refused)
	case r.Written != "":
		c := r.Configs[r.Chosen]
		fmt.Fprintf(tw, "written\t%s (%s): refitted on all %d photos, dims %d, shrink %g, shot weight %g\n", r.Written, r.Checksum, r.FitPhotos, c.Dims, c.Shrink, c.ShotWeight)
		fmt.Fprintf(tw, "spec\t%s: pass it as --spec to serve, ingest or quality to search projected vectors\n", r.Spec)
	default:
		fmt.Fprintf(tw, "written\tnothing (no --out)\n")
	}
	return tw.Flush()
}

// writeProjectedSpec writes the model spec that applies projection p, stored at projPath,
// after the steps of the spec it was fitted under. The spec names the file relative to
// itself, so the two can move together.
func writeProjectedSpec(specPath, projPath string, fitted embed.Spec, p *adapt.Projection) error {
	absSpec, err := filepath.Abs(specPath)
	if err != nil {
		return err
	}
	absProj, err := filepath.Abs(projPath)
	if err != nil {
		return err
	}
	rel, err := filepath.Rel(filepath.Dir(absSpec), absProj)
	if err != nil {
		return err
	}
	s := fitted
	s.Post = append(slices.Clone(fitted.Post), embed.PostStep{Op: embed.PostProject, File: rel,
		SHA256: strings.TrimPrefix(p.Checksum(), "sha256:")})
	if err := s.Validate(); err != nil {
		return err
	}
	err = writeFileAtomically(specPath, func(w io.Writer) error {
		_, err := w.Write(append(s.CanonicalJSON(), '\n'))
		return err
	})
	if err != nil {
		return fmt.Errorf("write spec: %w", err)
	}
	return nil
}

// merit is what adapt maximises among the configurations it may choose: mAP@10, plus the
// catalogue shot's reciprocal rank in the top 10 when the catalogue marks shots, since a
// shop with one pack shot per product is searched by street photos. The rank rather than
// shot@10: on a catalogue's own photos nearly every configuration puts the shot in the top
// 10, and only how high it comes still tells them apart.
func (f figuresJSON) merit() float64 {
	m := f.MAP10
	if f.CatalogueShotMRR10 != nil {
		m += *f.CatalogueShotMRR10
	}
	return m
}
