package embed

import (
	"context"
	"errors"
	"fmt"
	"time"

	ort "github.com/yalue/onnxruntime_go"
)

// maxViews bounds Spec.Views: each view is one more model run per photo.
const maxViews = 16

// errViewsNeedPhoto refuses a ready tensor under a spec with views.
var errViewsNeedPhoto = errors.New("embed: the spec's views are cut from the photo, not from one tensor: use Embed")

// View is one crop of a photo that multi-view embedding runs the model on: the shorter side
// scaled to ShorterSide, the centre Crop x Crop cut, optionally mirrored left to right. A
// photo's vector is the L2-normalised sum of its views' unit vectors, so that scale and
// mirror changes between a query and a stored photo matter less.
type View struct {
	// ShorterSide is the length the shorter side is scaled to, at least Crop.
	ShorterSide int `json:"shorter_side"`
	// Crop is the side of the square centre crop, the model's input size for this view.
	Crop int `json:"crop"`
	// Mirror flips the crop left to right.
	Mirror bool `json:"mirror,omitempty"`
}

// validateViews appends to add the problems of the spec's views.
func (s Spec) validateViews(add func(string, ...any)) {
	if len(s.Views) > maxViews {
		add("%d views, at most %d", len(s.Views), maxViews)
	}
	for i, v := range s.Views {
		if v.Crop < 1 || v.Crop > 4096 {
			add("views[%d].crop %d is outside 1..4096", i, v.Crop)
		}
		if v.ShorterSide < v.Crop || v.ShorterSide > 8192 {
			add("views[%d].shorter_side %d must be at least its crop %d (and at most 8192)", i, v.ShorterSide, v.Crop)
		}
	}
}

// checkViewSizes appends to add each view whose size the model's four-dimensional input
// shape fixes to something else.
func (s Spec) checkViewSizes(in TensorInfo, add func(string, ...any)) {
	hi, wi := 2, 3
	if s.Layout == LayoutNHWC {
		hi, wi = 1, 2
	}
	for i, v := range s.Views {
		if h, w := in.Shape[hi], in.Shape[wi]; h > 0 && h != int64(v.Crop) || w > 0 && w != int64(v.Crop) {
			add("input %q has shape %v, which fixes the size views[%d] (%dx%d) needs to change", in.Name, in.Shape, i, v.Crop, v.Crop)
		}
	}
}

// viewSpec is the single-image spec that preprocesses one view.
func (s Spec) viewSpec(v View) Spec {
	vs := s
	vs.Width, vs.Height = v.Crop, v.Crop
	vs.Resize.Policy, vs.Resize.ShorterSide = ResizeShorterThenCrop, v.ShorterSide
	vs.Pooling, vs.Views = nil, nil
	return vs
}

// ownPipeline reports whether the spec needs the pooled, multi-size model runs of this
// file rather than the Embedder's fixed-size ones.
func (s Spec) ownPipeline() bool { return s.Pooling != nil || len(s.Views) > 0 }

// needsDynamicInput reports whether a view's size differs from Width x Height.
func (s Spec) needsDynamicInput() bool {
	for _, v := range s.Views {
		if v.Crop != s.Width || v.Crop != s.Height {
			return true
		}
	}
	return false
}

// maxTensorLen is the most float32s one image of any view occupies.
func (s Spec) maxTensorLen() int {
	n := s.TensorLen()
	for _, v := range s.Views {
		n = max(n, 3*v.Crop*v.Crop)
	}
	return n
}

// maxShorterSide is the largest shorter side any view scales to (0 without views).
func (s Spec) maxShorterSide() int {
	n := 0
	for _, v := range s.Views {
		n = max(n, v.ShorterSide)
	}
	return n
}

// sessionModel returns the model bytes the sessions load: the file itself, or a copy with
// the feature map as an output and the input size made dynamic when the spec needs them.
// The copy exists only in memory; being a pure function of the file and the spec, it is
// named by the Identity over those two.
func (s Spec) sessionModel(model []byte) ([]byte, error) {
	var err error
	if s.Pooling != nil && s.Pooling.Dequantize != nil {
		if model, err = AddDequantizedOutput(model, *s.Pooling.Dequantize, s.Pooling.Output); err != nil {
			return nil, err
		}
	}
	if s.needsDynamicInput() {
		if model, err = WithDynamicInputSize(model, s.Input, s.Layout); err != nil {
			return nil, err
		}
	}
	return model, nil
}

// fetchName is the output the sessions fetch.
func (s Spec) fetchName() string {
	if s.Pooling != nil {
		return s.Pooling.Output
	}
	return s.Output
}

// viewPrep is one view's preprocessing state in a prepWorker.
type viewPrep struct {
	prep   *Preprocessor
	tensor []float32
	size   int // the crop's side; 0 for the spec's own Width x Height
	mirror bool
	// same is the index of an earlier view with the same shorter side and crop, -1 if none.
	same int
}

// newViewPreps returns a worker's preprocessing for each view; without views, the one
// preprocessor and tensor it already has.
func newViewPreps(s Spec, prep *Preprocessor, tensor []float32) []viewPrep {
	if len(s.Views) == 0 {
		return []viewPrep{{prep: prep, tensor: tensor, same: -1}}
	}
	vs := make([]viewPrep, len(s.Views))
	for i, v := range s.Views {
		vs[i] = viewPrep{tensor: make([]float32, 3*v.Crop*v.Crop), size: v.Crop, mirror: v.Mirror, same: -1}
		for j, u := range s.Views[:i] {
			if u.ShorterSide == v.ShorterSide && u.Crop == v.Crop {
				vs[i].same = j
				break
			}
		}
		if vs[i].same < 0 {
			vs[i].prep, _ = NewPreprocessor(s.viewSpec(v)) // validated with the spec
		}
	}
	return vs
}

// submitViews preprocesses each view of a decoded photo and queues it, one request per
// view, so that the batchers run views of one size together whichever photos they belong
// to. It returns the requests queued so far, which may read the worker's tensors until
// awaited, also when it fails.
func (e *Embedder) submitViews(ctx context.Context, w *prepWorker, d Decoded) ([]*request, error) {
	reqs := make([]*request, 0, len(w.views))
	for _, v := range w.views {
		if j := v.same; j >= 0 {
			// The mirror of an earlier view: flipping its tensor is cheaper than resampling.
			copy(v.tensor, w.views[j].tensor)
			if v.mirror != w.views[j].mirror {
				mirrorTensor(v.tensor, v.size, v.size, e.spec.Layout)
			}
		} else {
			if err := v.prep.Into(v.tensor, d); err != nil {
				return reqs, err
			}
			if v.mirror {
				mirrorTensor(v.tensor, v.size, v.size, e.spec.Layout)
			}
		}
		r := &request{ctx: ctx, input: v.tensor, size: v.size, done: make(chan struct{})}
		if err := e.enqueue(r); err != nil {
			return reqs, err
		}
		reqs = append(reqs, r)
	}
	return reqs, nil
}

// awaitViews waits for every view's vector and returns the photo's, post-processed.
// inFlight reports that a request was abandoned while a batch may still read its tensor.
func (e *Embedder) awaitViews(ctx context.Context, reqs []*request) (vec []float32, inFlight bool, err error) {
	if vec, inFlight, err = e.combineViews(ctx, reqs); err != nil {
		return nil, inFlight, err
	}
	vec, err = e.applyPost(vec)
	return vec, false, err
}

// combineViews waits for every view's unit vector: the one view's as it is, or the
// L2-normalised sum.
func (e *Embedder) combineViews(ctx context.Context, reqs []*request) (vec []float32, inFlight bool, err error) {
	if len(reqs) == 1 {
		return e.await(ctx, reqs[0])
	}
	sum := make([]float32, e.spec.Dim)
	for _, r := range reqs {
		v, abandoned, verr := e.await(ctx, r)
		inFlight = inFlight || abandoned
		if verr != nil {
			if err == nil {
				err = verr
			}
			continue
		}
		for i, x := range v {
			sum[i] += x
		}
	}
	if err != nil {
		return nil, inFlight, err
	}
	vec, err = normalized(sum)
	return vec, false, err
}

// mirrorTensor flips a w x h image tensor left to right in place.
func mirrorTensor(t []float32, w, h int, layout string) {
	if layout == LayoutNHWC {
		for y := range h {
			row := t[3*y*w : 3*(y+1)*w]
			for a, b := 0, w-1; a < b; a, b = a+1, b-1 {
				for c := range 3 {
					row[3*a+c], row[3*b+c] = row[3*b+c], row[3*a+c]
				}
			}
		}
		return
	}
	for r := range 3 * h {
		row := t[r*w : (r+1)*w]
		for a, b := 0, w-1; a < b; a, b = a+1, b-1 {
			row[a], row[b] = row[b], row[a]
		}
	}
}

// runViews runs a batch of requests under a spec with its own pipeline: one model run per
// input size among them, in the order the sizes first appear, each request getting its
// view's unit vector.
func (e *Embedder) runViews(live []*request) {
	sess := <-e.sessions
	defer func() { e.sessions <- sess }()
	for len(live) > 0 {
		size := live[0].size
		var group, rest []*request
		for _, r := range live {
			if r.size == size {
				group = append(group, r)
			} else {
				rest = append(rest, r)
			}
		}
		w, h := e.spec.Width, e.spec.Height
		if size > 0 {
			w, h = size, size
		}
		L := 3 * w * h
		for i, r := range group {
			copy(sess.in[i*L:(i+1)*L], r.input)
		}
		start := time.Now()
		vecs, err := e.runSized(sess, len(group), w, h)
		if e.cfg.Observer != nil {
			e.cfg.Observer.ObserveBatch(len(group), time.Since(start))
		}
		for i, r := range group {
			if err == nil {
				r.out = vecs[i]
			} else {
				r.err = err
			}
			close(r.done)
		}
		live = rest
	}
}

// runSized runs the session on the first n w x h inputs of its input buffer and returns
// their unit vectors: the fetched output pooled by the spec's Pooling, or as it is. The
// output is allocated by the runtime because the feature map's size follows the input's.
func (e *Embedder) runSized(s *session, n, w, h int) ([][]float32, error) {
	shape := ort.NewShape(int64(n), 3, int64(h), int64(w))
	if e.spec.Layout == LayoutNHWC {
		shape = ort.NewShape(int64(n), int64(h), int64(w), 3)
	}
	in, err := ort.NewTensor(shape, s.in[:n*3*w*h])
	if err != nil {
		return nil, fmt.Errorf("embed: input tensor: %w", err)
	}
	defer in.Destroy()
	outs := []ort.Value{nil}
	if err := s.s.Run([]ort.Value{in}, outs); err != nil {
		return nil, fmt.Errorf("embed: run model %s on %d images of %dx%d: %w", e.modelPath, n, w, h, err)
	}
	defer outs[0].Destroy()
	t, ok := outs[0].(*ort.Tensor[float32])
	if !ok {
		return nil, fmt.Errorf("embed: output %q is not a float32 tensor", e.spec.fetchName())
	}
	data, got := t.GetData(), []int64(t.GetShape())
	vecs := make([][]float32, n)
	if e.spec.Pooling == nil {
		if len(got) != 2 || got[0] != int64(n) || got[1] != int64(e.spec.Dim) {
			return nil, fmt.Errorf("embed: output %q has shape %v, want [%d, %d]", e.spec.Output, got, n, e.spec.Dim)
		}
		for i := range vecs {
			if vecs[i], err = normalized(data[i*e.spec.Dim : (i+1)*e.spec.Dim]); err != nil {
				return nil, err
			}
		}
		return vecs, nil
	}
	c, fh, fw, err := featureMapShape(got, n, e.spec.Dim, e.spec.Pooling.Output)
	if err != nil {
		return nil, err
	}
	pooled := make([]float32, c)
	for i := range vecs {
		e.spec.Pooling.pool(pooled, data[i*c*fh*fw:(i+1)*c*fh*fw], c, fh, fw)
		if vecs[i], err = normalized(pooled); err != nil {
			return nil, err
		}
	}
	return vecs, nil
}
