package main

import (
	"context"
	"fmt"

	lookalikev1 "lookalike/proto/lookalike/v1"
)

// checkJSON is `lookalike check --json`.
type checkJSON struct {
	Image       string      `json:"image"`
	IsDuplicate bool        `json:"is_duplicate"`
	Threshold   float32     `json:"threshold"`
	BestMatch   *resultJSON `json:"best_match"` // null when nothing is inside the filter
	// Tier of the best match under the catalogue's duplicate policy, its hash distance and
	// its crop distance (-1 when unknown or not needed) and crop correlation (0 when not
	// computed).
	Tier            string  `json:"tier"`
	Hamming         int32   `json:"hamming"`
	CropHamming     int32   `json:"crop_hamming"`
	CropCorrelation float32 `json:"crop_correlation"`
}

func runCheck(ctx context.Context, a *app, args []string) error {
	fs := newFlagSet(a, "check", "[flags] IMAGE",
		"Is this photo already in the catalogue? Finds its strongest match and its tier under the\n"+
			"catalogue's duplicate policy: exact (same bytes), copy (hash and embedding agree: a re-encoded or\n"+
			"lightly edited photo; or one photo is a crop of the other) or look-alike (only the embedding\n"+
			"agrees, at or above --threshold), e.g. before accepting a seller's new listing. The exit status\n"+
			"is 0 either way; scripts read --json.")
	var cf clientFlags
	var ff filterFlags
	cf.register(fs, a)
	ff.register(fs)
	threshold := fs.Float64("threshold", 0, "look-alike cut (0: the catalogue's policy, 0.9 until calibrated)")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("want exactly one IMAGE, got %d arguments", fs.NArg())
	}
	if *threshold < -1 || *threshold > 1 {
		return usagef("--threshold must be a similarity in -1..1, got %g", *threshold)
	}
	ref := fs.Arg(0)
	img, err := newImageLoader(cf.timeout).load(ctx, ref)
	if err != nil {
		return fmt.Errorf("read image: %w", err)
	}
	req := &lookalikev1.CheckDuplicateRequest{Image: img, Filter: ff.proto()}
	if *threshold != 0 {
		t := float32(*threshold)
		req.Threshold = &t
	}
	resp, err := callOnce(ctx, &cf, func(ctx context.Context, c lookalikev1.LookalikeClient) (*lookalikev1.CheckDuplicateResponse, error) {
		return c.CheckDuplicate(ctx, req)
	})
	if err != nil {
		return err
	}
	out := checkJSON{Image: ref, IsDuplicate: resp.GetIsDuplicate(), Threshold: resp.GetThreshold(),
		Tier: tierName(resp.GetTier()), Hamming: -1, CropHamming: -1}
	if bm := resp.GetBestMatch(); bm != nil {
		out.BestMatch = &resultJSON{Rank: 1, Score: bm.GetScore(), PhotoID: bm.GetPhotoId(), Product: toProductJSON(bm.GetProduct())}
		out.Hamming = resp.GetSignals().GetHamming()
		out.CropHamming = resp.GetSignals().GetCropHamming()
		out.CropCorrelation = resp.GetSignals().GetCropCorrelation()
	}
	if *asJSON {
		return writeJSON(a.stdout, out)
	}
	switch {
	case out.BestMatch == nil:
		fmt.Fprintf(a.stdout, "not a duplicate: no product to compare with\n")
	case out.IsDuplicate:
		crop := ""
		if out.CropHamming >= 0 {
			crop = cropText(out.CropHamming, out.CropCorrelation)
		}
		fmt.Fprintf(a.stdout, "DUPLICATE (%s) of %s photo %s (%s): cosine %.4f, hash distance %d%s, look-alike threshold %.2f\n",
			out.Tier, out.BestMatch.Product.ID, out.BestMatch.PhotoID, clean(out.BestMatch.Product.Title, 60), out.BestMatch.Score, out.Hamming, crop, out.Threshold)
	default:
		fmt.Fprintf(a.stdout, "not a duplicate: closest is %s (%s), score %.4f < threshold %.2f\n", out.BestMatch.Product.ID, clean(out.BestMatch.Product.Title, 60), out.BestMatch.Score, out.Threshold)
	}
	return nil
}
