package catalog

import (
	"encoding/json"
	"errors"
	"math"
	"testing"

	"lookalike/embed"
)

func TestPolicyTier(t *testing.T) {
	def := DefaultPolicy()
	noCrop := def
	noCrop.CropHamming = 0
	// A crop distance comes with the correlation of an exact crop, as MatchCrop gives it.
	sig := func(cosine float32, hamming, crop int) Signals {
		s := Signals{Cosine: cosine, Hamming: hamming, CropHamming: crop}
		if crop >= 0 {
			s.CropCorrelation = 0.999
		}
		return s
	}
	sibling := sig(0.94, 20, 4)
	sibling.CropCorrelation = 0.97
	tests := []struct {
		name   string
		policy Policy
		s      Signals
		want   Tier
	}{
		{"same bytes", def, Signals{Cosine: 0.5, Hamming: 40, CropHamming: -1, SameBytes: true}, TierExact},
		{"hash and cosine", def, sig(0.93, 6, -1), TierCopy},
		{"hash too far", def, sig(0.93, 7, -1), TierLookAlike},
		{"cosine alone", def, sig(0.975, 30, -1), TierCopy},
		{"crop within its bound", def, sig(0.93, 20, def.CropHamming), TierCopy},
		{"crop one bit too far", def, sig(0.93, 20, def.CropHamming+1), TierLookAlike},
		{"crop below its cosine", def, sig(def.CropCosine-0.01, 20, 0), TierNone},
		{"crop not computed", def, sig(0.93, 20, -1), TierLookAlike},
		{"a carton of the same design: near windows, colours apart", def, sibling, TierLookAlike},
		{"crop rule off", noCrop, sig(0.93, 20, 0), TierLookAlike},
		{"crop below the look-alike cut", Policy{LookAlike: 0.9, CopyCosineAlone: 2, CropHamming: 8, CropCosine: 0.85, CropCorrelation: 0.99}, sig(0.87, 20, 3), TierCopy},
		{"nothing", def, sig(0.5, 30, 30), TierNone},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.policy.Tier(tc.s); got != tc.want {
				t.Errorf("Tier(%+v) = %v, want %v", tc.s, got, tc.want)
			}
		})
	}
}

func TestPolicyWantsCrop(t *testing.T) {
	def := DefaultPolicy()
	noCrop := def
	noCrop.CropHamming = 0
	tests := []struct {
		name   string
		policy Policy
		s      Signals
		want   bool
	}{
		{"a look-alike the crop rule could make a copy", def, Signals{Cosine: 0.93, Hamming: 20, CropHamming: -1}, true},
		{"a copy already", def, Signals{Cosine: 0.93, Hamming: 2, CropHamming: -1}, false},
		{"exact already", def, Signals{Cosine: 0.93, Hamming: 20, CropHamming: -1, SameBytes: true}, false},
		{"below the crop rule's cosine", def, Signals{Cosine: def.CropCosine - 0.01, Hamming: 20, CropHamming: -1}, false},
		{"the rule is off", noCrop, Signals{Cosine: 0.93, Hamming: 20, CropHamming: -1}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.policy.wantsCrop(tc.s); got != tc.want {
				t.Errorf("wantsCrop(%+v) = %v, want %v", tc.s, got, tc.want)
			}
		})
	}
	if got := (Policy{LookAlike: 0.9, CropHamming: 8, CropCosine: 0.85}).candidateCosine(); got != 0.85 {
		t.Errorf("candidate cosine %v, want the crop rule's 0.85", got)
	}
	if got := (Policy{LookAlike: 0.9, CropCosine: 0.85}).candidateCosine(); got != 0.9 {
		t.Errorf("candidate cosine without a crop rule %v, want the look-alike cut 0.9", got)
	}
}

func TestPolicyValidate(t *testing.T) {
	def := DefaultPolicy()
	with := func(f func(p *Policy)) Policy { p := def; f(&p); return p }
	tests := []struct {
		name string
		p    Policy
		ok   bool
	}{
		{"default", def, true},
		{"crop rule off", with(func(p *Policy) { p.CropHamming, p.CropCosine = 0, 0 }), true},
		{"crop bound as far as windows are aligned", with(func(p *Policy) { p.CropHamming = embed.CropSearchBits }), true},
		{"crop bound negative", with(func(p *Policy) { p.CropHamming = -1 }), false},
		{"crop bound past the aligned windows", with(func(p *Policy) { p.CropHamming = embed.CropSearchBits + 1 }), false},
		{"crop correlation over 1", with(func(p *Policy) { p.CropCorrelation = 1.01 }), false},
		{"crop cosine over 1", with(func(p *Policy) { p.CropCosine = 1.5 }), false},
		{"crop cosine NaN", with(func(p *Policy) { p.CropCosine = float32(math.NaN()) }), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.p.validate()
			if (err == nil) != tc.ok {
				t.Errorf("validate(%+v) = %v, want ok %v", tc.p, err, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalidArgument) {
				t.Errorf("error %v does not wrap ErrInvalidArgument", err)
			}
		})
	}
}

// A policy stored before the crop rule existed has no crop fields: it must keep meaning
// what it meant, with the rule off.
func TestStoredPolicyBeforeTheCropRule(t *testing.T) {
	raw := `{"look_alike":0.9,"copy_cosine":0.9,"copy_hamming":6,"copy_cosine_alone":0.97,"source":"calibrated 2026-11-30"}`
	var p Policy
	if err := json.Unmarshal([]byte(raw), &p); err != nil {
		t.Fatal(err)
	}
	if err := p.validate(); err != nil {
		t.Fatal(err)
	}
	crop := Signals{Cosine: 0.93, Hamming: 20, CropHamming: 0}
	if p.CropHamming != 0 || p.Tier(crop) != TierLookAlike || p.wantsCrop(Signals{Cosine: 0.93, Hamming: 20, CropHamming: -1}) {
		t.Errorf("old policy %+v reads a crop as %v, want the rule off", p, p.Tier(crop))
	}
	round, err := json.Marshal(DefaultPolicy())
	if err != nil {
		t.Fatal(err)
	}
	var back Policy
	if err := json.Unmarshal(round, &back); err != nil || back != DefaultPolicy() {
		t.Errorf("the default policy does not survive JSON: %s -> %+v (%v)", round, back, err)
	}
}
