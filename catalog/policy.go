package catalog

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/bits"
	"strings"
	"time"

	"lookalike/embed"
)

// Tier says how sure a duplicate is; a higher tier is surer.
type Tier int

const (
	// TierNone: not a duplicate.
	TierNone Tier = iota
	// TierLookAlike: only the embedding agrees (the same product re-shot, or a different
	// product that looks the same). A candidate for review, never a certain duplicate.
	TierLookAlike
	// TierCopy: the same photo re-encoded, resized, lightly cropped or re-coloured: the
	// perceptual hash and the embedding agree (or the embedding alone, very closely).
	TierCopy
	// TierExact: the same bytes.
	TierExact
)

// String names the tier as the API and the CLI spell it.
func (t Tier) String() string {
	switch t {
	case TierNone:
		return "none"
	case TierLookAlike:
		return "look-alike"
	case TierCopy:
		return "copy"
	case TierExact:
		return "exact"
	}
	return fmt.Sprintf("tier(%d)", int(t))
}

// ParseTier reads a tier's name ("" is TierNone).
func ParseTier(s string) (Tier, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "none":
		return TierNone, nil
	case "look-alike", "lookalike", "look_alike":
		return TierLookAlike, nil
	case "copy":
		return TierCopy, nil
	case "exact":
		return TierExact, nil
	}
	return TierNone, fmt.Errorf("%w: tier %q is not one of look-alike, copy, exact", ErrInvalidArgument, s)
}

// Signals are what the duplicate policy reads about one pair of photos.
type Signals struct {
	// Cosine is the similarity of the two photos' embeddings.
	Cosine float32
	// Hamming is the number of differing bits of their perceptual hashes, the smaller of
	// the direct comparison and the one with b mirrored left to right (a mirrored copy is
	// a copy); -1 when either photo has none (stored from a vector).
	Hamming int
	// SameBytes says the two photos have the same SHA-256.
	SameBytes bool
	// CropHamming is the number of differing bits between one photo's hash (or its mirror
	// hash) and the nearest crop window of the other photo (embed.Windows of its kept copy),
	// the smaller of the two ways round: small when one photo is a crop of the other, which
	// moves the whole photo's hash far. -1 when it was not computed: neither way had a kept
	// photo to take windows of and a hash to compare, or the policy's tier could not change
	// with it (the crop rule is off, the pair is a copy already, or its cosine is below the
	// rule's floor), since windows cost a decode and 175 hashes a photo.
	CropHamming int
	// CropCorrelation is how well the colours of the one photo and of the region of the
	// other that fits it best agree, the region found from the nearest windows
	// (embed.MatchCrop): near 1 for a crop, lower for a different product of the same
	// design, whose hash can come as near. Computed only when CropHamming is within the
	// crop rule's bound; 0 otherwise.
	CropCorrelation float32
}

func signalsOf(a, b photoEntry, cosine float32) Signals {
	s := Signals{Cosine: cosine, Hamming: -1, CropHamming: -1, SameBytes: a.sha256 != "" && a.sha256 == b.sha256}
	if a.hasPHash && b.hasPHash {
		s.Hamming = min(bits.OnesCount64(a.phash^b.phash), bits.OnesCount64(a.phash^b.phashMir))
	}
	return s
}

// Policy holds the thresholds that place a pair of photos in a tier. One policy serves both
// FindDuplicates and CheckDuplicate; Calibrate measures one on the catalogue itself and can
// store it as the catalogue's.
type Policy struct {
	// LookAlike: cosine at or above it makes at least a look-alike.
	LookAlike float32 `json:"look_alike"`
	// CopyCosine and CopyHamming: cosine at or above CopyCosine and hashes at most
	// CopyHamming bits apart make a copy.
	CopyCosine  float32 `json:"copy_cosine"`
	CopyHamming int     `json:"copy_hamming"`
	// CopyCosineAlone: cosine at or above it makes a copy whatever the hashes say (a flipped
	// or cropped copy moves the hash far); above 1 turns the rule off.
	CopyCosineAlone float32 `json:"copy_cosine_alone"`
	// CropHamming, CropCosine and CropCorrelation: a crop distance (Signals.CropHamming)
	// of at most CropHamming bits, cosine at or above CropCosine and a crop correlation at
	// or above CropCorrelation make a copy: one photo is a crop of the other. CropHamming 0
	// turns the rule off, which is what a policy stored before the rule existed reads as.
	CropHamming     int     `json:"crop_hamming"`
	CropCosine      float32 `json:"crop_cosine"`
	CropCorrelation float32 `json:"crop_correlation"`
	// Source says where the thresholds come from ("default", or the calibration's date).
	Source string `json:"source"`
}

// DefaultPolicy is the policy of a catalogue that was never calibrated. Its thresholds
// come from the measurements on the shared photos quoted in the duplicates issue: re-encoded
// copies of a photo score 0.977-0.982, two different milk cartons 0.958, and a perceptual
// hash within 5 bits was right 99.6% of the time. The crop rule's come from the crop issue's
// measurements on grocery photos: an 80-95% crop hashes within 10 bits of one of its photo's
// windows, 99 in 100 score a cosine of 0.87 or more, and all correlate at 0.997 or more once
// aligned, while cartons of one brand come within 4 bits but correlate at 0.971 at most.
func DefaultPolicy() Policy {
	return Policy{LookAlike: DefaultDuplicateThreshold, CopyCosine: 0.90, CopyHamming: 6, CopyCosineAlone: 0.97,
		CropHamming: embed.CropSearchBits, CropCosine: 0.85, CropCorrelation: 0.99, Source: "default"}
}

func (p Policy) validate() error {
	for _, t := range []float32{p.LookAlike, p.CopyCosine, p.CropCosine, p.CropCorrelation} {
		if math.IsNaN(float64(t)) || t < -1 || t > 1 {
			return fmt.Errorf("%w: policy threshold %v is outside [-1, 1]", ErrInvalidArgument, t)
		}
	}
	if math.IsNaN(float64(p.CopyCosineAlone)) {
		return fmt.Errorf("%w: policy copy_cosine_alone is NaN", ErrInvalidArgument)
	}
	if p.CopyHamming < 0 || p.CopyHamming > 64 {
		return fmt.Errorf("%w: policy copy_hamming %d is outside 0..64", ErrInvalidArgument, p.CopyHamming)
	}
	// Windows further than embed.CropSearchBits are never aligned, so no correlation
	// exists for a looser bound.
	if p.CropHamming < 0 || p.CropHamming > embed.CropSearchBits {
		return fmt.Errorf("%w: policy crop_hamming %d is outside 0..%d (0: no crop rule)", ErrInvalidArgument, p.CropHamming, embed.CropSearchBits)
	}
	return nil
}

// Tier places a pair of photos.
func (p Policy) Tier(s Signals) Tier {
	switch {
	case s.SameBytes:
		return TierExact
	case s.Cosine >= p.CopyCosineAlone,
		s.Hamming >= 0 && s.Hamming <= p.CopyHamming && s.Cosine >= p.CopyCosine,
		p.cropCopy(s):
		return TierCopy
	case s.Cosine >= p.LookAlike:
		return TierLookAlike
	}
	return TierNone
}

// cropCopy says the crop rule makes the pair a copy.
func (p Policy) cropCopy(s Signals) bool {
	return p.CropHamming > 0 && s.CropHamming >= 0 && s.CropHamming <= p.CropHamming && s.Cosine >= p.CropCosine &&
		s.CropCorrelation >= p.CropCorrelation
}

// wantsCrop says the crop distance could change the tier of a pair whose other signals are
// s: the crop rule is on, the pair is not a copy already and its cosine reaches the rule's.
func (p Policy) wantsCrop(s Signals) bool {
	return p.CropHamming > 0 && s.Cosine >= p.CropCosine && p.Tier(s) < TierCopy
}

// candidateCosine is the lowest cosine at which a pair can be a look-alike or a copy by the
// crop rule: the cut a duplicate scan searches to.
func (p Policy) candidateCosine() float32 {
	if p.CropHamming > 0 {
		return min(p.LookAlike, p.CropCosine)
	}
	return p.LookAlike
}

// settingPolicy names the stored policy among the store's settings.
const settingPolicy = "duplicate_policy"

// Policy returns the catalogue's duplicate policy: the stored one, or DefaultPolicy.
func (c *Catalog) Policy(ctx context.Context) (Policy, error) {
	if err := c.enter(); err != nil {
		return Policy{}, err
	}
	defer c.life.RUnlock()
	return c.policy(ctx)
}

func (c *Catalog) policy(ctx context.Context) (Policy, error) {
	raw, err := c.backend.Setting(ctx, settingPolicy)
	if err != nil {
		return Policy{}, fmt.Errorf("catalog: read duplicate policy: %w", err)
	}
	if raw == nil {
		return DefaultPolicy(), nil
	}
	var p Policy
	if err := json.Unmarshal(raw, &p); err != nil {
		return Policy{}, fmt.Errorf("catalog: stored duplicate policy: %w", err)
	}
	return p, nil
}

// SetPolicy stores p as the catalogue's duplicate policy (durably; it survives restarts and
// travels with backups). A zero Source is filled with the time.
func (c *Catalog) SetPolicy(ctx context.Context, p Policy) error {
	if err := c.enter(); err != nil {
		return err
	}
	defer c.life.RUnlock()
	return c.setPolicy(ctx, p)
}

func (c *Catalog) setPolicy(ctx context.Context, p Policy) error {
	if err := p.validate(); err != nil {
		return err
	}
	if p.Source == "" {
		p.Source = "set " + time.Now().UTC().Format(time.RFC3339)
	}
	raw, err := json.Marshal(p)
	if err != nil {
		return err
	}
	if err := c.backend.SetSetting(ctx, settingPolicy, raw); err != nil {
		return fmt.Errorf("catalog: store duplicate policy: %w", err)
	}
	return nil
}
