package catalog

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"image"
	_ "image/jpeg" // kept photos are JPEGs
	"math"
	"math/bits"
	"math/rand/v2"
	"slices"
	"time"

	"lookalike/augment"
	"lookalike/embed"
)

// CalibrateOptions tunes Calibrate.
type CalibrateOptions struct {
	// Sample is how many photos with kept copies to draw; 0 means DefaultCalibrationSample.
	Sample int
	// TargetPrecision the recommended thresholds must reach; 0 means 0.99.
	TargetPrecision float64
	// Apply stores the recommended policy as the catalogue's.
	Apply bool
	// Seed draws the sample and the synthetic copies.
	Seed uint64
}

// Calibration limits and defaults.
const (
	DefaultCalibrationSample = 200
	MaxCalibrationSample     = 5000
	// negativeDepth is how many of a photo's most similar photos are searched for its hard
	// negatives, and negativeCosine the similarity from which a photo of another product
	// counts as one. A duplicate scan pairs every photo of two products, so the negatives
	// must cover the rare photo pair of two products that happen to hash alike, not only
	// the nearest few.
	negativeDepth  = 64
	negativeCosine = 0.8
	// maxNegativePhotos bounds the photos whose neighbours give negatives; negatives cost
	// a graph search each and no inference, so far more photos give negatives than copies.
	maxNegativePhotos = 20000
)

// CalibrationPoint is one rule at one threshold, measured on labelled pairs.
type CalibrationPoint struct {
	// Rule describes the rule, e.g. "copy: hamming<=6 & cosine>=0.90 | cosine>=0.97".
	Rule string
	// Precision and Recall of the rule; PrecisionLow the lower end of precision's 95%
	// Wilson interval.
	Precision, PrecisionLow, Recall float64
	// TruePositives and FalsePositives count what the rule called a duplicate.
	TruePositives, FalsePositives int
}

// CalibrationReport is what Calibrate measured and recommends.
type CalibrationReport struct {
	// Photos sampled; Positives (synthetic copies and Same decisions) and Negatives (hard
	// negatives and Different decisions) built from them; DecisionPairs of those came from
	// recorded decisions.
	Photos, Positives, Negatives, DecisionPairs int
	// Points measure rules on the fitting half's copies and the negatives of both halves.
	Points []CalibrationPoint
	// Recommended reaches the target precision on the fitting half's copies and calls none
	// of the negatives of either half a copy.
	Recommended Policy
	// HeldOutCopy and HeldOutLookAlike measure the recommended rules on the held-apart half:
	// on copies the choice never saw, and on negatives it did (it calls none of them).
	HeldOutCopy, HeldOutLookAlike CalibrationPoint
	// HeldOutEstimate is the copy rule chosen on the fitting half alone, negatives included,
	// measured on the held-apart half: how the choice does on pairs of different products
	// it never saw, such as products added later. Its false positives estimate how many of
	// those the recommended rule may still call copies.
	HeldOutEstimate CalibrationPoint
	// CopyRecallByTransform is the held-apart recall of the copy rule per kind of copy.
	CopyRecallByTransform map[string]float64
	// Applied says the policy was stored; TargetPrecision is the target used.
	Applied         bool
	TargetPrecision float64
	// Bound says how the copy rule was chosen: "wilson-95" (its precision's lower bound
	// reaches the target) or "point" (too few pairs for that; its measured precision does).
	Bound string
}

// labelled is one pair with its truth.
type labelled struct {
	sig      Signals
	positive bool
	kind     string // the copy's kind for synthetic positives
}

// Calibrate measures the duplicate policy on the catalogue itself, without labels from the
// user: for a sample of photos with kept copies, synthetic copies (augment.Copies) are the
// positives and every photo of another product among each photo's most similar ones the
// hard negatives, plus every recorded decision (Same: positive, Different: negative). The
// pairs are split in two halves by photo: the copy rule is chosen on one half's copies and
// measured on the other's, so the report's held-out recall is on copies the choice never
// saw.
//
// The copy rule recommended is the one of the family "hamming<=h & cosine>=c, or
// cosine>=a, or crop<=k & cosine>=d & correlation>=r" (the crop clause possibly absent)
// with the highest recall whose precision reaches the target with 95% confidence (the
// lower end of its Wilson interval; when the sample is too small for any rule to reach it
// so, the point precision decides and Report.Bound says so) and that calls none of the
// hard negatives of either half a copy. The rule chosen the same way with the fitting
// half's negatives alone is measured on the held-apart half too (Report.HeldOutEstimate):
// how often such a choice calls pairs of different products it never saw copies. Every
// pair's crop signals are worked out from the kept photos (the copies' own windows from the
// copies) for the search. The look-alike threshold is the highest cosine that still catches
// 99% of the copies (look-alikes are review candidates, so the net is wide on purpose).
func (c *Catalog) Calibrate(ctx context.Context, opt CalibrateOptions) (CalibrationReport, error) {
	if opt.Sample == 0 {
		opt.Sample = DefaultCalibrationSample
	}
	if opt.TargetPrecision == 0 {
		opt.TargetPrecision = 0.99
	}
	switch {
	case opt.Sample < 2 || opt.Sample > MaxCalibrationSample:
		return CalibrationReport{}, fmt.Errorf("%w: sample is %d, must be 2..%d", ErrInvalidArgument, opt.Sample, MaxCalibrationSample)
	case math.IsNaN(opt.TargetPrecision) || opt.TargetPrecision <= 0 || opt.TargetPrecision > 1:
		return CalibrationReport{}, fmt.Errorf("%w: target precision %v must be in (0, 1]", ErrInvalidArgument, opt.TargetPrecision)
	}
	if err := c.enter(); err != nil {
		return CalibrationReport{}, err
	}
	defer c.life.RUnlock()

	type sampled struct {
		e  *entry
		ph photoEntry
	}
	c.metaMu.RLock()
	var pool []sampled
	for _, e := range c.byID {
		for _, ph := range e.photos {
			if ph.hasPHash {
				pool = append(pool, sampled{e, ph})
			}
		}
	}
	c.metaMu.RUnlock()
	// Copies need a kept photo; negatives need only the stored hash and vector.
	kept := 0
	for _, s := range pool {
		if s.ph.keptBytes > 0 {
			kept++
		}
	}
	if kept < 2 {
		return CalibrationReport{}, fmt.Errorf("%w: calibration needs photos with kept copies (serve with --keep-photos); %d found", ErrInvalidArgument, kept)
	}
	slices.SortFunc(pool, func(x, y sampled) int { return cmp.Compare(x.ph.key, y.ph.key) })
	rng := rand.New(rand.NewPCG(opt.Seed, 0x6c6f6f6b616c696b))
	rng.Shuffle(len(pool), func(i, j int) { pool[i], pool[j] = pool[j], pool[i] })
	all := pool
	var sample []sampled
	for _, s := range pool {
		if s.ph.keptBytes > 0 && len(sample) < opt.Sample {
			sample = append(sample, s)
		}
	}

	halves := [2][]labelled{}
	report := CalibrationReport{Photos: len(sample), TargetPrecision: opt.TargetPrecision, CopyRecallByTransform: map[string]float64{}}
	// Every pair gets its crop distance, whatever its other signals say: the rule search
	// needs it for rules the run-time policy would not compute it for.
	crops := c.newCropWindows()
	for i, s := range sample {
		if err := ctx.Err(); err != nil {
			return CalibrationReport{}, err
		}
		pairs, err := c.copyPairs(ctx, crops, s.e, s.ph, rng)
		if err != nil {
			return CalibrationReport{}, err
		}
		halves[i%2] = append(halves[i%2], pairs...)
	}
	decided, err := c.decisionsByPair(ctx)
	if err != nil {
		return CalibrationReport{}, err
	}
	same := make(map[productPair]bool)
	for p, d := range decided {
		same[p] = d.Verdict == Same
	}
	// On every core: the crop distances decode each photo's kept copy.
	negSources := all[:min(len(all), maxNegativePhotos)]
	negs := make([][]labelled, len(negSources))
	err = parallelFor(ctx, len(negSources), func(i int) error {
		var err error
		negs[i], err = c.negativePairs(ctx, crops, negSources[i].e, negSources[i].ph, same)
		return err
	})
	if err != nil {
		return CalibrationReport{}, err
	}
	for i, neg := range negs {
		halves[i%2] = append(halves[i%2], neg...)
	}
	ds, err := c.decisions(ctx)
	if err != nil {
		return CalibrationReport{}, err
	}
	for i, d := range ds {
		ea, okA := c.lookup(d.A)
		eb, okB := c.lookup(d.B)
		if !okA || !okB {
			continue
		}
		ka, kb, score := c.closestPhotos(ctx, ea, eb)
		pa, _ := ea.photo(ka)
		pb, _ := eb.photo(kb)
		sig := signalsOf(pa, pb, score)
		cropSignals(crops.photo(ctx, pa), crops.photo(ctx, pb), embed.CropSearchBits).set(&sig)
		halves[i%2] = append(halves[i%2], labelled{sig: sig, positive: d.Verdict == Same, kind: "decision"})
		report.DecisionPairs++
	}
	for _, h := range halves {
		for _, l := range h {
			if l.positive {
				report.Positives++
			} else {
				report.Negatives++
			}
		}
	}

	fit, held := halves[0], halves[1]
	estimate, _, _ := choosePolicy(fit, opt.TargetPrecision)
	report.HeldOutEstimate = measure(held, "fitting half alone: "+copyRuleName(estimate), isCopy(estimate))
	// The recommended rule may call none of the catalogue's known pairs of different
	// products a copy, whichever half holds them: they are sparse near the rule's boundary,
	// so a rule fitted on half of them meets the other half's (two God-Morgon juice cartons,
	// whose photos differ only in the fruit on the pack, were called copies so). The
	// held-apart copies stay unseen, so the held-apart recall is still an honest estimate.
	constrained := slices.Clone(fit)
	for _, l := range held {
		if !l.positive {
			constrained = append(constrained, l)
		}
	}
	policy, points, bound := choosePolicy(constrained, opt.TargetPrecision)
	report.Bound = bound
	policy.Source = fmt.Sprintf("calibrated %s on %d photos (%d positives, %d negatives), target precision %.3g",
		time.Now().UTC().Format(time.RFC3339), report.Photos, report.Positives, report.Negatives, opt.TargetPrecision)
	report.Points, report.Recommended = points, policy
	report.HeldOutCopy = measure(held, copyRuleName(policy), isCopy(policy))
	report.HeldOutLookAlike = measure(held, fmt.Sprintf("look-alike: cosine>=%.3f", policy.LookAlike),
		func(s Signals) bool { return policy.Tier(s) >= TierLookAlike })
	byKind := map[string][2]int{}
	for _, l := range held {
		if !l.positive || l.kind == "decision" {
			continue
		}
		n := byKind[l.kind]
		n[1]++
		if isCopy(policy)(l.sig) {
			n[0]++
		}
		byKind[l.kind] = n
	}
	for k, n := range byKind {
		report.CopyRecallByTransform[k] = float64(n[0]) / float64(n[1])
	}
	if opt.Apply {
		if err := c.setPolicy(ctx, policy); err != nil {
			return CalibrationReport{}, err
		}
		report.Applied = true
	}
	return report, nil
}

// copyPairs makes a photo's synthetic copies and labels each against the photo: positives.
func (c *Catalog) copyPairs(ctx context.Context, crops *cropWindows, e *entry, ph photoEntry, rng *rand.Rand) ([]labelled, error) {
	vec, err := c.vector(ctx, ph.key)
	if err != nil || vec == nil {
		return nil, err // nil, nil: deleted meanwhile
	}
	kept, err := c.backend.KeptPhoto(ctx, ph.key)
	if err != nil {
		return nil, fmt.Errorf("catalog: calibration: kept photo of %q: %w", e.id, err)
	}
	img, _, err := image.Decode(bytes.NewReader(kept))
	if err != nil {
		return nil, fmt.Errorf("catalog: calibration: decode kept photo of %q: %w", e.id, err)
	}
	copies, err := augment.Copies(img, rng)
	if err != nil {
		return nil, fmt.Errorf("catalog: calibration: %w", err)
	}
	orig := crops.photo(ctx, ph)
	out := make([]labelled, 0, len(copies))
	for _, cp := range copies {
		a, err := c.embedder.Analyze(ctx, cp.Image, embed.AnalyzeOptions{})
		if err != nil {
			return nil, fmt.Errorf("catalog: calibration: analyse a %s copy of %q: %w", cp.Kind, e.id, err)
		}
		q := photoEntry{phash: a.PHash, phashMir: a.PHashMirror, hasPHash: true}
		sig := signalsOf(q, ph, dot(a.Vector, vec))
		// Both ways, as a check of the copy against the catalogue would.
		cropSignals(uploadCrop(q, cp.Image), orig, embed.CropSearchBits).set(&sig)
		out = append(out, labelled{sig: sig, positive: true, kind: cp.Kind})
	}
	return out, nil
}

// negativePairs labels the photos of other products among a photo's most similar ones:
// hard negatives. Each pair is labelled once, from the photo with the lower key; pairs of
// the same bytes and pairs decided Same are left out (they are duplicates, not negatives).
func (c *Catalog) negativePairs(ctx context.Context, crops *cropWindows, e *entry, ph photoEntry, same map[productPair]bool) ([]labelled, error) {
	vec, err := c.vector(ctx, ph.key)
	if err != nil || vec == nil {
		return nil, err
	}
	var out []labelled
	n := negativeDepth + len(e.photos)
	ns, err := c.searchPhotos(ctx, vec, n, 0, nil)
	if err != nil {
		return nil, err
	}
	for _, nb := range ns {
		if nb.Score < negativeCosine {
			break
		}
		if nb.Key <= ph.key {
			continue
		}
		c.metaMu.RLock()
		other, ok := c.byKey[nb.Key]
		c.metaMu.RUnlock()
		if !ok || other.id == e.id || same[productPair{min(e.id, other.id), max(e.id, other.id)}] {
			continue
		}
		oph, _ := other.photo(nb.Key)
		sig := signalsOf(ph, oph, nb.Score)
		if !sig.SameBytes {
			cropSignals(crops.photo(ctx, ph), crops.photo(ctx, oph), embed.CropSearchBits).set(&sig)
			out = append(out, labelled{sig: sig, positive: false, kind: "nearest-other"})
		}
	}
	return out, nil
}

// measure counts what rule calls a duplicate among pairs.
func measure(pairs []labelled, name string, rule func(Signals) bool) CalibrationPoint {
	p := CalibrationPoint{Rule: name}
	positives := 0
	for _, l := range pairs {
		if l.positive {
			positives++
		}
		if !rule(l.sig) {
			continue
		}
		if l.positive {
			p.TruePositives++
		} else {
			p.FalsePositives++
		}
	}
	called := p.TruePositives + p.FalsePositives
	if called > 0 {
		p.Precision = float64(p.TruePositives) / float64(called)
		p.PrecisionLow = wilsonLow(p.TruePositives, called)
	} else {
		p.Precision, p.PrecisionLow = 1, 0
	}
	if positives > 0 {
		p.Recall = float64(p.TruePositives) / float64(positives)
	}
	return p
}

// wilsonLow is the lower end of the 95% Wilson score interval of k successes in n.
func wilsonLow(k, n int) float64 {
	const z = 1.959963984540054
	p, nf := float64(k)/float64(n), float64(n)
	centre := p + z*z/(2*nf)
	spread := z * math.Sqrt(p*(1-p)/nf+z*z/(4*nf*nf))
	return (centre - spread) / (1 + z*z/nf)
}

func copyRuleName(p Policy) string {
	name := fmt.Sprintf("copy: hamming<=%d & cosine>=%.3f", p.CopyHamming, p.CopyCosine)
	if p.CopyCosineAlone <= 1 {
		name += fmt.Sprintf(" | cosine>=%.3f", p.CopyCosineAlone)
	}
	if p.CropHamming > 0 {
		name += fmt.Sprintf(" | crop<=%d & cosine>=%.3f & correlation>=%.3f", p.CropHamming, p.CropCosine, p.CropCorrelation)
	}
	return name
}

// isCopy is the rule "p calls it a copy".
func isCopy(p Policy) func(Signals) bool {
	return func(s Signals) bool { return p.Tier(s) >= TierCopy }
}

// cropBounds are the crop distances the rule search tries, loosest first (the correlation
// is what tells a crop from a look-alike; the distance only picks the windows to align).
var cropBounds = []int{embed.CropSearchBits, 10, 8, 6, 4}

// cropCorrelations are the crop correlations the rule search tries, strictest first. A
// crop is the same pixels, which correlate at 0.997 or more on the shared photos, while
// the nearest cartons of one brand's design reach 0.971: the search stays well above them.
var cropCorrelations = []float32{0.999, 0.995, 0.99, 0.985, 0.98}

// choosePolicy searches the copy-rule family for the highest recall at the target
// precision, and sets the look-alike cut at 99% recall of the positives. It returns the
// policy and the points worth showing: the best rule per hamming bound and per crop bound,
// the hash, the crop distance and the cosine alone, and the look-alike curve.
func choosePolicy(pairs []labelled, target float64) (Policy, []CalibrationPoint, string) {
	if p, pts, ok := chooseCopyRule(pairs, target, func(pt CalibrationPoint) float64 { return pt.PrecisionLow }); ok {
		return p, pts, "wilson-95"
	}
	p, pts, _ := chooseCopyRule(pairs, target, func(pt CalibrationPoint) float64 { return pt.Precision })
	return p, pts, "point"
}

// positiveSet is a set of the positives of a list of pairs, by their rank among them.
type positiveSet []uint64

func (s positiveSet) union(t positiveSet) int {
	n := 0
	for i := range s {
		n += bits.OnesCount64(s[i] | t[i])
	}
	return n
}

// clause is one part of a copy rule with the positives it calls; it calls no negative.
type clause struct {
	p      Policy
	called positiveSet
}

// chooseCopyRule is choosePolicy with the precision a rule must bring to the target; ok
// is false when no rule of the family reaches it.
//
// A rule is the union of a hash clause ("hamming<=h & cosine>=c, or cosine>=a") and a
// crop clause ("crop<=k & cosine>=d & correlation>=r", or none), and it may call no
// negative, so neither clause may: each clause is measured alone, those that call a
// negative are dropped, and the rest are combined by their sets of positives. With no
// false positive, precision is 1 and its lower bound depends only on how many positives
// the rule calls. The hash clauses are tried in the order of the search without crops, and
// no crop clause comes first, so that the crop rule is chosen only when it finds more
// copies; among crop clauses that find as many, the strictest correlation wins.
func chooseCopyRule(pairs []labelled, target float64, precision func(CalibrationPoint) float64) (Policy, []CalibrationPoint, bool) {
	off := float32(1.01)
	var cosines []float32
	for c := float32(0.80); c <= 0.9901; c += 0.01 {
		cosines = append(cosines, c)
	}
	var alone []float32
	for a := float32(0.93); a <= 0.9951; a += 0.005 {
		alone = append(alone, a)
	}
	alone = append(alone, off)
	var positives []int // positives[i]: the rank of pair i among the positives, or -1
	npos := 0
	for _, l := range pairs {
		if l.positive {
			positives = append(positives, npos)
			npos++
		} else {
			positives = append(positives, -1)
		}
	}
	words := (npos + 63) / 64
	// measureClause returns the positives rule calls; false when it calls a negative.
	measureClause := func(rule func(Signals) bool) (positiveSet, bool) {
		set := make(positiveSet, words)
		for i, l := range pairs {
			if !rule(l.sig) {
				continue
			}
			if !l.positive {
				// Precision depends on how many copies were made per negative, which is
				// arbitrary; a copy rule a team can trust also calls none of the hard
				// negatives (two different products) a copy.
				return nil, false
			}
			set[positives[i]/64] |= 1 << (positives[i] % 64)
		}
		return set, true
	}
	var hashClauses []clause
	for h := 0; h <= 24; h += 2 {
		for _, cc := range cosines {
			for _, a := range alone {
				p := Policy{CopyHamming: h, CopyCosine: cc, CopyCosineAlone: a, LookAlike: 2}
				if set, ok := measureClause(isCopy(p)); ok {
					hashClauses = append(hashClauses, clause{p, set})
				}
			}
		}
	}
	cropClauses := []clause{{Policy{}, make(positiveSet, words)}}
	for _, r := range cropCorrelations {
		for _, k := range cropBounds {
			for _, d := range cosines {
				p := Policy{CropHamming: k, CropCosine: d, CropCorrelation: r}
				rule := func(s Signals) bool {
					return s.CropHamming >= 0 && s.CropHamming <= k && s.Cosine >= d && s.CropCorrelation >= r
				}
				if set, ok := measureClause(rule); ok {
					cropClauses = append(cropClauses, clause{p, set})
				}
			}
		}
	}

	best := DefaultPolicy()
	bestTP := 0
	// The best rule per hamming bound and per crop bound, for the points.
	rowBest := map[int]Policy{}
	rowTP := map[int]int{}
	cropBest := map[int]Policy{}
	cropTP := map[int]int{}
	for _, cr := range cropClauses {
		for _, hc := range hashClauses {
			tp := hc.called.union(cr.called)
			if tp == 0 {
				continue
			}
			pt := CalibrationPoint{Precision: 1, PrecisionLow: wilsonLow(tp, tp), TruePositives: tp}
			if precision(pt) < target {
				continue
			}
			p := hc.p
			p.CropHamming, p.CropCosine, p.CropCorrelation = cr.p.CropHamming, cr.p.CropCosine, cr.p.CropCorrelation
			if tp > rowTP[p.CopyHamming] {
				rowBest[p.CopyHamming], rowTP[p.CopyHamming] = p, tp
			}
			if tp > cropTP[p.CropHamming] {
				cropBest[p.CropHamming], cropTP[p.CropHamming] = p, tp
			}
			if tp > bestTP {
				best, bestTP = p, tp
			}
		}
	}
	var points []CalibrationPoint
	shown := map[Policy]bool{}
	show := func(p Policy, ok bool) {
		if ok && !shown[p] {
			shown[p] = true
			points = append(points, measure(pairs, copyRuleName(p), isCopy(p)))
		}
	}
	for h := 0; h <= 24; h += 2 {
		p, ok := rowBest[h]
		show(p, ok)
	}
	for _, k := range append([]int{0}, cropBounds...) {
		p, ok := cropBest[k]
		show(p, ok)
	}
	for _, h := range []int{4, 8} {
		points = append(points, measure(pairs, fmt.Sprintf("hash alone: hamming<=%d", h), func(s Signals) bool { return s.Hamming >= 0 && s.Hamming <= h }))
	}
	for _, k := range []int{6, 8, 10} {
		points = append(points, measure(pairs, fmt.Sprintf("crop alone: crop<=%d", k), func(s Signals) bool { return s.CropHamming >= 0 && s.CropHamming <= k }))
	}
	for _, r := range []float32{0.98, 0.99} {
		points = append(points, measure(pairs, fmt.Sprintf("crop alone: crop<=%d & correlation>=%.2f", embed.CropSearchBits, r), func(s Signals) bool {
			return s.CropHamming >= 0 && s.CropHamming <= embed.CropSearchBits && s.CropCorrelation >= r
		}))
	}
	for _, a := range []float32{0.94, 0.96, 0.97, 0.98} {
		points = append(points, measure(pairs, fmt.Sprintf("cosine alone: cosine>=%.2f", a), func(s Signals) bool { return s.Cosine >= a }))
	}
	// Look-alike: the highest cosine that still catches 99% of the positives.
	var pos []float32
	for _, l := range pairs {
		if l.positive {
			pos = append(pos, l.sig.Cosine)
		}
	}
	best.LookAlike = DefaultDuplicateThreshold
	if len(pos) > 0 {
		slices.Sort(pos)
		cut := pos[int(0.01*float64(len(pos)))]
		best.LookAlike = float32(math.Floor(float64(cut)*1000) / 1000)
		points = append(points, measure(pairs, fmt.Sprintf("look-alike: cosine>=%.3f", best.LookAlike),
			func(s Signals) bool { return s.Cosine >= best.LookAlike }))
	}
	return best, points, bestTP > 0
}
