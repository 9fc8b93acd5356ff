package main

import (
	"context"
	"fmt"
	"sort"

	"google.golang.org/protobuf/encoding/protojson"

	lookalikev1 "lookalike/proto/lookalike/v1"
)

func runCalibrate(ctx context.Context, a *app, args []string) error {
	fs := newFlagSet(a, "calibrate", "[flags]",
		"Measure the duplicate policy on the catalogue itself, with no labels from you: synthetic copies of a\n"+
			"sample of its kept photos (re-encoded, resized, cropped, rotated, brightened, mirrored, captioned) are\n"+
			"the positives, each photo's most similar other products the hard negatives, plus every decision\n"+
			"recorded with 'dedup resolve'. Prints precision and recall per rule, the recommended thresholds\n"+
			"(chosen on one half of the sample, checked on the other) and, with --apply, stores them as the\n"+
			"catalogue's policy for 'dedup' and 'check'.")
	var cf clientFlags
	cf.register(fs, a)
	sample := fs.Int("sample", 200, "photos to sample (with kept copies), 2..5000")
	target := fs.Float64("target-precision", 0.99, "precision the recommended copy rule must reach")
	apply := fs.Bool("apply", false, "store the recommended policy as the catalogue's")
	seed := fs.Uint64("seed", 1, "seed of the sample and the copies")
	asJSON := fs.Bool("json", false, "print the report as JSON (the API's CalibrateReport)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usagef("takes no arguments")
	}
	if *sample < 2 || *sample > 5000 {
		return usagef("--sample must be in 2..5000, got %d", *sample)
	}
	if *target <= 0 || *target > 1 {
		return usagef("--target-precision must be in (0, 1], got %g", *target)
	}
	// Calibration embeds about ten copies per sampled photo: give it room.
	if cf.timeout > 0 {
		cf.timeout *= 10
	}
	rep, err := callOnce(ctx, &cf, func(ctx context.Context, c lookalikev1.LookalikeClient) (*lookalikev1.CalibrateReport, error) {
		return c.Calibrate(ctx, &lookalikev1.CalibrateRequest{Sample: uint32(*sample), TargetPrecision: float32(*target), Apply: *apply, Seed: *seed})
	})
	if err != nil {
		return err
	}
	if *asJSON {
		b, err := protojson.MarshalOptions{Multiline: true, UseProtoNames: true, EmitUnpopulated: true}.Marshal(rep)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(a.stdout, string(b))
		return err
	}
	w := a.stdout
	fmt.Fprintf(w, "%d photos sampled: %d positive pairs (synthetic copies, same-product decisions), %d negative pairs (nearest other products, different-product decisions); %d pairs from decisions\n",
		rep.GetPhotos(), rep.GetPositives(), rep.GetNegatives(), rep.GetDecisionPairs())
	fmt.Fprintf(w, "\nrules on the fitting half's copies and the negatives of both halves (target precision %.3g):\n", rep.GetTargetPrecision())
	tw := newTable(w)
	fmt.Fprintln(tw, "RULE\tPRECISION\t95% LOW\tRECALL\tTP\tFP")
	row := func(p *lookalikev1.CalibrationPoint) {
		fmt.Fprintf(tw, "%s\t%.4f\t%.4f\t%.4f\t%d\t%d\n", p.GetRule(), p.GetPrecision(), p.GetPrecisionLow(), p.GetRecall(), p.GetTruePositives(), p.GetFalsePositives())
	}
	for _, p := range rep.GetPoints() {
		row(p)
	}
	tw.Flush()
	fmt.Fprintln(w, "\non the held-apart half: the recommended rules (chosen against the negatives of both halves), and the copy rule chosen on the fitting half alone:")
	tw = newTable(w)
	fmt.Fprintln(tw, "RULE\tPRECISION\t95% LOW\tRECALL\tTP\tFP")
	row(rep.GetHeldOutCopy())
	row(rep.GetHeldOutLookAlike())
	row(rep.GetHeldOutEstimate())
	tw.Flush()
	if fp := rep.GetHeldOutEstimate().GetFalsePositives(); fp > 0 {
		fmt.Fprintf(w, "chosen on half of the negatives, the rule called %d of the other half's pairs of different products copies: the recommended rule avoids them, but may call about as many pairs it has not seen (products added later) copies; review copies before merging\n", fp)
	}
	kinds := make([]string, 0, len(rep.GetCopyRecallByTransform()))
	for k := range rep.GetCopyRecallByTransform() {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	fmt.Fprint(w, "\nheld-apart copy recall by kind of copy:")
	for _, k := range kinds {
		fmt.Fprintf(w, " %s %.2f", k, rep.GetCopyRecallByTransform()[k])
	}
	p := rep.GetRecommended()
	fmt.Fprintf(w, "\n\nrecommended policy: look-alike cosine >= %.3f; copy hamming <= %d and cosine >= %.3f, or cosine >= %.3f%s\n",
		p.GetLookAlike(), p.GetCopyHamming(), p.GetCopyCosine(), p.GetCopyCosineAlone(), cropRule(p.GetCropHamming(), p.GetCropCosine(), p.GetCropCorrelation()))
	if rep.GetApplied() {
		fmt.Fprintln(w, "stored as the catalogue's duplicate policy")
	} else {
		fmt.Fprintln(w, "not stored (run again with --apply to use it)")
	}
	return nil
}
