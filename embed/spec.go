package embed

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Resize policies a Spec may name.
const (
	// ResizeShorterThenCrop scales the shorter side to Spec.Resize.ShorterSide, keeping the
	// aspect ratio, then cuts the centre Width x Height.
	ResizeShorterThenCrop = "shorter_side_then_center_crop"
	// ResizeStretch scales the whole image to Width x Height, ignoring the aspect ratio.
	ResizeStretch = "stretch"
)

// Interpolation kernels a Spec may name (golang.org/x/image/draw scalers).
const (
	KernelBiLinear       = "bilinear"
	KernelApproxBiLinear = "approx_bilinear"
	KernelCatmullRom     = "catmull_rom"
	KernelNearest        = "nearest"
)

// Channel orders and tensor layouts a Spec may name.
const (
	ChannelsRGB = "RGB"
	ChannelsBGR = "BGR"
	LayoutNCHW  = "NCHW"
	LayoutNHWC  = "NHWC"
)

// Resize says how an image of any size becomes the model's Width x Height.
type Resize struct {
	// Policy is ResizeShorterThenCrop or ResizeStretch.
	Policy string `json:"policy"`
	// ShorterSide is the length the shorter side is scaled to before the centre crop
	// (ResizeShorterThenCrop only; 256 for a 224 crop is the ImageNet convention).
	ShorterSide int `json:"shorter_side,omitempty"`
	// Kernel is the interpolation: KernelBiLinear, KernelApproxBiLinear, KernelCatmullRom
	// or KernelNearest. It is part of the spec because it changes the vectors.
	Kernel string `json:"kernel"`
}

// PostStep is one transformation applied to the L2-normalised model output (centring on a
// catalogue mean, a whitening, a learned projection), recorded in the spec and therefore in
// the model Identity: vectors before and after a step are different spaces.
type PostStep struct {
	// Op names the step: PostProject is the only one.
	Op string `json:"op"`
	// File is the step's parameters, relative to the spec file. It is not part of the
	// Identity (SHA256 is), so moving the file does not orphan a catalogue.
	File string `json:"file,omitempty"`
	// SHA256 is the hex digest of File's bytes; Open refuses a file that does not match.
	SHA256 string `json:"sha256,omitempty"`
}

// Spec is what a model needs besides its weights: tensor names, input geometry and
// normalisation, and the output dimension. Its canonical JSON is part of the model Identity.
type Spec struct {
	// Input and Output are the names of the image input tensor and the embedding output.
	Input  string `json:"input"`
	Output string `json:"output"`
	// Width and Height are the model's input size in pixels.
	Width  int `json:"width"`
	Height int `json:"height"`
	// Resize says how an image is brought to Width x Height.
	Resize Resize `json:"resize"`
	// Channels is ChannelsRGB or ChannelsBGR: the order of colour planes in the tensor.
	Channels string `json:"channels"`
	// Layout is LayoutNCHW or LayoutNHWC.
	Layout string `json:"layout"`
	// PixelScale is what a full-intensity (255) pixel maps to before Mean and Std are
	// applied: 1 for models trained on [0,1] inputs, 255 for [0,255].
	PixelScale float32 `json:"pixel_scale"`
	// Mean and Std normalise each channel, in Channels order: (x - Mean) / Std.
	Mean [3]float32 `json:"mean"`
	Std  [3]float32 `json:"std"`
	// Dim is the length of the model's output vector (before Post, which may change it).
	Dim int `json:"dim"`
	// Post lists transformations of the normalised output, applied in order.
	Post []PostStep `json:"post,omitempty"`
	// Pooling, when set, pools the model's feature map instead of reading Output (pooling.go).
	Pooling *Pooling `json:"pooling,omitempty"`
	// Views, when set, replace the single Resize: each view is embedded and the unit
	// vectors summed and L2-normalised (views.go).
	Views []View `json:"views,omitempty"`
}

// DefaultModelFile is the file name of the default model in ../shared/models.
const DefaultModelFile = "mobilenetv2-12-int8-emb.onnx"

// DefaultSpec is the spec of the MobileNetV2 embedding models in ../shared/models
// (both the int8 and the float variants).
func DefaultSpec() Spec {
	return Spec{
		Input:  "input",
		Output: "embedding",
		Width:  224,
		Height: 224,
		Resize: Resize{
			Policy:      ResizeShorterThenCrop,
			ShorterSide: 256,
			Kernel:      KernelBiLinear,
		},
		Channels:   ChannelsRGB,
		Layout:     LayoutNCHW,
		PixelScale: 1,
		Mean:       [3]float32{0.485, 0.456, 0.406},
		Std:        [3]float32{0.229, 0.224, 0.225},
		Dim:        1280,
	}
}

// TensorLen is the number of float32s one image occupies in the input tensor.
func (s Spec) TensorLen() int { return 3 * s.Width * s.Height }

// Validate checks that the spec is self-consistent (without looking at a model).
func (s Spec) Validate() error {
	var problems []string
	add := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	if s.Input == "" {
		add("input tensor name is empty")
	}
	if s.Output == "" {
		add("output tensor name is empty")
	}
	if s.Width <= 0 || s.Height <= 0 || s.Width > 4096 || s.Height > 4096 {
		add("input size %dx%d is outside 1..4096", s.Width, s.Height)
	}
	switch s.Resize.Policy {
	case ResizeShorterThenCrop:
		if s.Resize.ShorterSide < s.Width || s.Resize.ShorterSide < s.Height || s.Resize.ShorterSide > 8192 {
			add("resize.shorter_side %d must be at least the input size %dx%d (and at most 8192)",
				s.Resize.ShorterSide, s.Width, s.Height)
		}
	case ResizeStretch:
	default:
		add("resize.policy %q is not %q or %q", s.Resize.Policy, ResizeShorterThenCrop, ResizeStretch)
	}
	switch s.Resize.Kernel {
	case KernelBiLinear, KernelApproxBiLinear, KernelCatmullRom, KernelNearest:
	default:
		add("resize.kernel %q is not one of %s, %s, %s, %s", s.Resize.Kernel,
			KernelBiLinear, KernelApproxBiLinear, KernelCatmullRom, KernelNearest)
	}
	if s.Channels != ChannelsRGB && s.Channels != ChannelsBGR {
		add("channels %q is not %s or %s", s.Channels, ChannelsRGB, ChannelsBGR)
	}
	if s.Layout != LayoutNCHW && s.Layout != LayoutNHWC {
		add("layout %q is not %s or %s", s.Layout, LayoutNCHW, LayoutNHWC)
	}
	if !(s.PixelScale > 0) {
		add("pixel_scale %v must be positive", s.PixelScale)
	}
	for i, sd := range s.Std {
		if !(sd > 0) {
			add("std[%d] = %v must be positive", i, sd)
		}
	}
	if s.Dim <= 0 || s.Dim > 1<<16 {
		add("dim %d is outside 1..65536", s.Dim)
	}
	for i, p := range s.Post {
		switch {
		case p.Op != PostProject:
			add("post[%d].op %q is not %q", i, p.Op, PostProject)
		case p.File == "":
			add("post[%d].file is empty", i)
		case len(p.SHA256) != 64 || strings.Trim(p.SHA256, "0123456789abcdef") != "":
			add("post[%d].sha256 %q is not 64 lower-case hex digits", i, p.SHA256)
		}
	}
	if s.Pooling != nil {
		s.Pooling.validate(add)
	}
	s.validateViews(add)
	if len(problems) > 0 {
		return fmt.Errorf("embed: invalid spec: %s", strings.Join(problems, "; "))
	}
	return nil
}

// CanonicalJSON is the spec's stable serialisation: fixed field order, no whitespace.
// Equal specs give equal bytes, so it can be hashed into the model Identity.
func (s Spec) CanonicalJSON() []byte {
	b, err := json.Marshal(s)
	if err != nil {
		// Spec holds only strings, ints, float32s and slices of those; Marshal cannot fail
		// except on NaN or Inf, which Validate rejects before anyone hashes a spec.
		panic(fmt.Sprintf("embed: marshal spec: %v", err))
	}
	return b
}

// ParseSpec decodes a spec from JSON, rejecting unknown fields so a typo cannot silently
// fall back to a default, and validates it.
func ParseSpec(data []byte) (Spec, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var s Spec
	if err := dec.Decode(&s); err != nil {
		return Spec{}, fmt.Errorf("embed: parse spec: %w", err)
	}
	if err := s.Validate(); err != nil {
		return Spec{}, err
	}
	return s, nil
}

// SpecPathFor returns the spec file that sits beside modelPath: "<model>.onnx.json" or
// "<model>.json". It returns "" when there is none.
func SpecPathFor(modelPath string) string {
	candidates := []string{modelPath + ".json"}
	if ext := filepath.Ext(modelPath); ext != "" {
		candidates = append(candidates, strings.TrimSuffix(modelPath, ext)+".json")
	}
	for _, c := range candidates {
		if st, err := os.Stat(c); err == nil && !st.IsDir() {
			return c
		}
	}
	return ""
}

// ResolveSpec finds the spec for a model: the file at specPath when given; otherwise a JSON
// file beside the model; otherwise DefaultSpec when the model is one of the MobileNetV2
// embedding models the spec was written for. Any other model without a spec is an error.
func ResolveSpec(modelPath, specPath string) (Spec, string, error) {
	if specPath == "" {
		specPath = SpecPathFor(modelPath)
	}
	if specPath != "" {
		data, err := os.ReadFile(specPath)
		if err != nil {
			return Spec{}, "", fmt.Errorf("embed: read spec: %w", err)
		}
		s, err := ParseSpec(data)
		if err != nil {
			return Spec{}, "", fmt.Errorf("%s: %w", specPath, err)
		}
		return s, specPath, nil
	}
	base := filepath.Base(modelPath)
	if strings.HasPrefix(base, "mobilenetv2-12-") && strings.HasSuffix(base, "-emb.onnx") {
		return DefaultSpec(), "", nil
	}
	return Spec{}, "", fmt.Errorf("embed: no spec for model %s: write %s.json (see embed.Spec) or pass a spec path",
		modelPath, modelPath)
}

// Identity names a model and its spec: "<model file base name>@sha256:<16 hex digits>",
// the digest covering the model bytes followed by the spec's canonical JSON. Vectors from
// models with different identities must never be compared.
func Identity(modelName string, model []byte, s Spec) string {
	h := sha256.New()
	h.Write(model)
	if len(s.Post) > 0 {
		s.Post = slices.Clone(s.Post)
		for i := range s.Post {
			s.Post[i].File = ""
		}
	}
	h.Write(s.CanonicalJSON())
	return fmt.Sprintf("%s@sha256:%s", filepath.Base(modelName), hex.EncodeToString(h.Sum(nil))[:16])
}

// TensorInfo describes one input or output of a loaded model.
type TensorInfo struct {
	Name string `json:"name"`
	// Type is the element type ("float32", "int64", ...) or the value kind when not a tensor.
	Type string `json:"type"`
	// Shape holds the dimensions; -1 marks a dynamic one.
	Shape []int64 `json:"shape"`
}

// CheckModel compares the spec against a model's real inputs and outputs and returns an
// error wrapping ErrSpecMismatch that names every disagreement.
func (s Spec) CheckModel(inputs, outputs []TensorInfo) error {
	var problems []string
	add := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	names := func(ts []TensorInfo) string {
		var n []string
		for _, t := range ts {
			n = append(n, fmt.Sprintf("%q", t.Name))
		}
		return "[" + strings.Join(n, ", ") + "]"
	}
	find := func(ts []TensorInfo, name string) (TensorInfo, bool) {
		for _, t := range ts {
			if t.Name == name {
				return t, true
			}
		}
		return TensorInfo{}, false
	}
	if len(inputs) != 1 {
		add("the model has %d inputs %s; this package feeds exactly one", len(inputs), names(inputs))
	}
	in, ok := find(inputs, s.Input)
	if !ok {
		add("spec input %q is not among the model's inputs %s", s.Input, names(inputs))
	} else {
		if in.Type != "float32" {
			add("input %q has element type %s, want float32", in.Name, in.Type)
		}
		var want []int64
		if s.Layout == LayoutNHWC {
			want = []int64{-1, int64(s.Height), int64(s.Width), 3}
		} else {
			want = []int64{-1, 3, int64(s.Height), int64(s.Width)}
		}
		if len(in.Shape) == 4 {
			s.checkViewSizes(in, add)
		}
		if len(in.Shape) != 4 {
			add("input %q has shape %v, want %d dimensions %v (%s)", in.Name, in.Shape, len(want), want, s.Layout)
		} else {
			for i, d := range in.Shape {
				if i == 0 {
					if d > 0 && d != 1 {
						add("input %q has a fixed batch size %d; the batcher needs a dynamic or unit batch", in.Name, d)
					}
					continue
				}
				if d > 0 && d != want[i] {
					add("input %q has shape %v, but the spec (%s, %dx%d) needs %v", in.Name, in.Shape, s.Layout, s.Width, s.Height, want)
					break
				}
			}
		}
	}
	out, ok := find(outputs, s.Output)
	if s.Pooling != nil {
		// The feature map's size follows the input's, so only each run can check its shape.
		if fm, ok := find(outputs, s.Pooling.Output); !ok {
			add("spec pooling.output %q is not among the model's outputs %s", s.Pooling.Output, names(outputs))
		} else if fm.Type != "float32" {
			add("feature map %q has element type %s, want float32", fm.Name, fm.Type)
		}
	} else if !ok {
		add("spec output %q is not among the model's outputs %s", s.Output, names(outputs))
	} else {
		if out.Type != "float32" {
			add("output %q has element type %s, want float32", out.Name, out.Type)
		}
		if len(out.Shape) != 2 {
			add("output %q has shape %v, want [N, %d]", out.Name, out.Shape, s.Dim)
		} else if d := out.Shape[1]; d > 0 && d != int64(s.Dim) {
			add("output %q has dimension %d, but the spec says dim %d", out.Name, d, s.Dim)
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: %s", ErrSpecMismatch, strings.Join(problems, "; "))
	}
	return nil
}
