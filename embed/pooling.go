package embed

import (
	"fmt"
	"math"
)

// Pooling operators a Spec may name.
const (
	// PoolGAP is global average pooling: each channel's mean over the map. On the shared
	// MobileNetV2 it reproduces the model's own "embedding" output.
	PoolGAP = "gap"
	// PoolGeM is generalised mean pooling, (mean x^p)^(1/p) per channel: p = 1 is GAP, and
	// larger p leans towards the maximum, so a small object's strong responses count more.
	PoolGeM = "gem"
	// PoolRMAC is regional maximum activations of convolutions: per region the channel
	// maxima, L2-normalised, summed over the whole map and a multi-scale grid of square
	// regions, and L2-normalised. It keeps where an object's parts are strongest instead of
	// averaging them with the background.
	PoolRMAC = "rmac"
)

// Pooling says how the model's last convolutional feature map becomes a vector, instead of
// reading the model's own pooled output.
type Pooling struct {
	// Op is PoolGAP, PoolGeM or PoolRMAC.
	Op string `json:"op"`
	// P is GeM's exponent (PoolGeM only; 3 is the usual choice).
	P float32 `json:"p,omitempty"`
	// Levels is R-MAC's number of grid scales (PoolRMAC only; 3 is the usual choice).
	Levels int `json:"levels,omitempty"`
	// Overlap is how much neighbouring R-MAC regions of one scale overlap, as a fraction of
	// their side (PoolRMAC only; 0.4 is the usual choice).
	Overlap float32 `json:"overlap,omitempty"`
	// Output is the feature-map tensor the session fetches: float32 [N, Dim, h, w].
	Output string `json:"output"`
	// Dequantize, when set, derives Output at load time: the model gets one more graph
	// output, Output = DequantizeLinear(Input, Scale, ZeroPoint), because a quantized model
	// exposes its feature map only as uint8 (see AddDequantizedOutput).
	Dequantize *Dequantize `json:"dequantize,omitempty"`
}

// Dequantize names a quantized tensor and its quantisation parameters in a model graph.
type Dequantize struct {
	// Input is the uint8 tensor, for example "627_quantized".
	Input string `json:"input"`
	// Scale and ZeroPoint are its scale and zero point tensors.
	Scale     string `json:"scale"`
	ZeroPoint string `json:"zero_point"`
}

// validate appends to add the problems of a pooling spec.
func (p *Pooling) validate(add func(string, ...any)) {
	switch p.Op {
	case PoolGAP:
	case PoolGeM:
		if !(p.P >= 1 && p.P <= 16) {
			add("pooling.p %v must be within 1..16 for %s", p.P, PoolGeM)
		}
	case PoolRMAC:
		if p.Levels < 1 || p.Levels > 8 {
			add("pooling.levels %d must be within 1..8 for %s", p.Levels, PoolRMAC)
		}
		if !(p.Overlap >= 0 && p.Overlap < 1) {
			add("pooling.overlap %v must be within [0, 1) for %s", p.Overlap, PoolRMAC)
		}
	default:
		add("pooling.op %q is not %s, %s or %s", p.Op, PoolGAP, PoolGeM, PoolRMAC)
	}
	if p.Op != PoolGeM && p.P != 0 {
		add("pooling.p is for %s only", PoolGeM)
	}
	if p.Op != PoolRMAC && (p.Levels != 0 || p.Overlap != 0) {
		add("pooling.levels and pooling.overlap are for %s only", PoolRMAC)
	}
	if p.Output == "" {
		add("pooling.output (the feature-map tensor) is empty")
	}
	if d := p.Dequantize; d != nil && (d.Input == "" || d.Scale == "" || d.ZeroPoint == "") {
		add("pooling.dequantize needs input, scale and zero_point")
	}
}

// pool turns one image's feature map (c channels of h x w, channel-major as the model
// writes NCHW) into a c-long vector in out; R-MAC's is L2-normalised, the others are not
// (the caller normalises every view's vector).
func (p *Pooling) pool(out, fmap []float32, c, h, w int) {
	hw := h * w
	switch p.Op {
	case PoolGAP:
		for k := range c {
			var s float64
			for _, x := range fmap[k*hw : (k+1)*hw] {
				s += float64(x)
			}
			out[k] = float32(s / float64(hw))
		}
	case PoolGeM:
		pp := float64(p.P)
		// An integer p (the usual 3) is repeated multiplication: math.Pow on every cell
		// cost more than the model run of a 280 view.
		ip := int(p.P)
		if float32(ip) != p.P {
			ip = 0
		}
		for k := range c {
			var s float64
			for _, x := range fmap[k*hw : (k+1)*hw] {
				// A ReLU map is non-negative; the clamp keeps a stray negative (a
				// dequantised zero point off by one) from making the power NaN.
				v := max(float64(x), 1e-6)
				if ip > 0 {
					pw := v
					for range ip - 1 {
						pw *= v
					}
					s += pw
				} else {
					s += math.Pow(v, pp)
				}
			}
			out[k] = float32(math.Pow(s/float64(hw), 1/pp))
		}
	case PoolRMAC:
		clear(out[:c])
		region := make([]float32, c)
		for _, r := range rmacRegions(h, w, p.Levels, float64(p.Overlap)) {
			for k := range c {
				ch := fmap[k*hw : (k+1)*hw]
				m := float32(math.Inf(-1))
				for y := r.y; y < r.y+r.h; y++ {
					for _, x := range ch[y*w+r.x : y*w+r.x+r.w] {
						m = max(m, x)
					}
				}
				region[k] = m
			}
			var ss float64
			for _, x := range region {
				ss += float64(x) * float64(x)
			}
			if ss == 0 {
				continue // a dead region says nothing; its direction is undefined
			}
			inv := float32(1 / math.Sqrt(ss))
			for k, x := range region {
				out[k] += x * inv
			}
		}
	}
}

// rect is a region of a feature map, in cells.
type rect struct{ x, y, w, h int }

// rmacRegions returns the R-MAC regions of an h x w map: the whole map, then for each
// level l = 1..levels squares of side 2*min(h,w)/(l+1) laid on a grid whose step makes
// neighbours overlap by about overlap of their side (Tolias et al., "Particular object
// retrieval with integral max-pooling of CNN activations", 2016, with the usual whole-map
// region added). At 7x7, 3 levels and 0.4 that is 1 + 1 + 4 + 9 = 15 regions; the long
// side of a non-square map gets extra positions where the overlap allows.
func rmacRegions(h, w, levels int, overlap float64) []rect {
	regions := []rect{{0, 0, w, h}}
	short, long := min(h, w), max(h, w)
	// The extra positions along the long side: the count whose overlap is nearest the asked
	// one, as in the reference implementation.
	extra := 0
	if long > short {
		best := math.Inf(1)
		for n := 1; n <= 6; n++ {
			step := float64(long-short) / float64(n)
			if d := math.Abs((float64(short)-step)/float64(short) - overlap); d < best {
				best, extra = d, n
			}
		}
	}
	for l := 1; l <= levels; l++ {
		side := int(math.Floor(2 * float64(short) / float64(l+1)))
		if side < 1 {
			break
		}
		ny, nx := l, l
		if w > h {
			nx += extra
		} else if h > w {
			ny += extra
		}
		for _, y := range gridStarts(h, side, ny) {
			for _, x := range gridStarts(w, side, nx) {
				regions = append(regions, rect{x, y, side, side})
			}
		}
	}
	return regions
}

// gridStarts returns the starts of n side-long windows spread over length, the first at 0
// and the last at or just before length-side, placed as the reference implementation does.
func gridStarts(length, side, n int) []int {
	if n <= 1 || length <= side {
		return []int{(length - side) / 2}
	}
	step := float64(length-side) / float64(n-1)
	half := math.Floor(float64(side)/2 - 1)
	starts := make([]int, 0, n)
	for i := range n {
		s := int(math.Floor(half+float64(i)*step) - half)
		if len(starts) == 0 || s != starts[len(starts)-1] { // one place counted once
			starts = append(starts, s)
		}
	}
	return starts
}

// featureMapShape checks a run's feature-map shape against the spec and returns its
// channels, height and width.
func featureMapShape(shape []int64, n, dim int, name string) (c, h, w int, err error) {
	if len(shape) != 4 || shape[0] != int64(n) || shape[1] != int64(dim) || shape[2] < 1 || shape[3] < 1 {
		return 0, 0, 0, fmt.Errorf("embed: feature map %q has shape %v, want [%d, %d, h, w]", name, shape, n, dim)
	}
	return int(shape[1]), int(shape[2]), int(shape[3]), nil
}
