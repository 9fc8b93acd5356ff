package catalog

import (
	"context"
	"errors"
	"image"
	"sync"

	"lookalike/embed"
	"lookalike/index"
	"lookalike/store"
)

// cropPhoto is one photo of a pair as the crop signals read it: its hashes, its crop
// windows (embed.Windows), computed once on first use, and its pixels, decoded again each
// time they are needed (rarely: only for a pair whose hashes already say "crop"), so that
// a scan holds 1.4 kB a photo rather than its pixels.
type cropPhoto struct {
	ph   photoEntry
	read func() []byte // the photo's JPEG (kept copy or upload); nil when none
	once sync.Once
	w    embed.WindowHashes
	// computed, when set, is told the windows once they are computed.
	computed func(embed.WindowHashes)
}

// windows returns the photo's crop windows; nil when it has no pixels to take them of.
func (p *cropPhoto) windows() embed.WindowHashes {
	p.once.Do(func() {
		if img := p.pixels(); img != nil {
			p.w = embed.Windows(img)
			if p.computed != nil && p.w != nil {
				p.computed(p.w)
			}
		}
	})
	return p.w
}

// pixels decodes the photo upright, at no less than the kept photos' scale; nil when it has
// none or it does not decode.
func (p *cropPhoto) pixels() image.Image {
	data := p.read()
	if len(data) == 0 {
		return nil
	}
	d, err := embed.Decode(data, embed.DecodeOptions{MinShortSide: cropDecodeSide})
	if err != nil {
		return nil
	}
	return d.Upright()
}

// cropDecodeSide is the shorter side an upload is decoded to at least for its windows: the
// kept photos' (the default Spec's), so that both photos of a pair are compared at about
// the same scale, at a fraction of a full decode's cost.
const cropDecodeSide = 256

// uploadCrop is a photo that is not stored (a duplicate check's, a synthetic copy) as the
// crop signals read it.
func uploadCrop(ph photoEntry, data []byte) *cropPhoto {
	return &cropPhoto{ph: ph, read: func() []byte { return data }}
}

// cropResult is the crop signals of a pair (Signals.CropHamming and CropCorrelation).
type cropResult struct {
	hamming     int
	correlation float32
}

// noCrop is the crop signals of a pair they were not computed for.
var noCrop = cropResult{hamming: -1}

// cropSignals compares two photos both ways round: the nearer of a's hashes to b's windows
// and b's hashes to a's is the crop distance, and, when that is at most within bits, the
// better of the colour correlations of the directions that near (embed.MatchCrop) is the
// correlation.
func cropSignals(a, b *cropPhoto, within int) cropResult {
	out := noCrop
	type way struct {
		big, small *cropPhoto
		bits       int
	}
	var ways []way
	for _, w := range []way{{big: a, small: b}, {big: b, small: a}} {
		if !w.small.ph.hasPHash {
			continue
		}
		ws := w.big.windows()
		if len(ws) == 0 {
			continue
		}
		w.bits = min(ws.Min(w.small.ph.phash), ws.Min(w.small.ph.phashMir))
		ways = append(ways, w)
		if out.hamming < 0 || w.bits < out.hamming {
			out.hamming = w.bits
		}
	}
	if out.hamming < 0 || out.hamming > within {
		return out
	}
	for _, w := range ways {
		if w.bits > within {
			continue
		}
		big, small := w.big.pixels(), w.small.pixels()
		if big == nil || small == nil {
			continue
		}
		m := embed.MatchCrop(big, w.big.windows(), small, w.small.ph.phash, w.small.ph.phashMir)
		out.correlation = max(out.correlation, float32(m.Correlation))
	}
	return out
}

// cropWindows holds the stored photos' crop signals' inputs for one duplicate scan, check
// or calibration, so that a photo in many pairs has its windows computed once, and the
// signals of the pairs of stored photos worked out so far, since a scan meets most pairs
// from both sides. It is safe for concurrent use.
type cropWindows struct {
	c     *Catalog
	mu    sync.Mutex
	at    map[index.Key]*cropPhoto
	pairs map[[2]index.Key]cropResult // by the keys in order; withCrop's, of one policy
}

func (c *Catalog) newCropWindows() *cropWindows {
	return &cropWindows{c: c, at: make(map[index.Key]*cropPhoto), pairs: make(map[[2]index.Key]cropResult)}
}

// photo returns a stored photo's crop input, read from its kept copy, its windows from the
// catalogue's cache when they are there. A kept photo that cannot be read is logged and
// counts as none: the crop signals refine a tier, and one unreadable photo must not fail a
// whole scan.
func (cw *cropWindows) photo(ctx context.Context, ph photoEntry) *cropPhoto {
	cw.mu.Lock()
	defer cw.mu.Unlock()
	if p := cw.at[ph.key]; p != nil {
		return p
	}
	k := windowKey{ph.key, ph.sha256}
	p := &cropPhoto{ph: ph, computed: func(w embed.WindowHashes) { cw.c.windows.put(k, w) }, read: func() []byte {
		if ph.keptBytes == 0 {
			return nil
		}
		kept, err := cw.c.backend.KeptPhoto(ctx, ph.key)
		if err != nil {
			if !errors.Is(err, store.ErrNotFound) {
				cw.c.log.Warn("cannot read a kept photo for the crop signals", "photo", ph.id, "err", err)
			}
			return nil
		}
		return kept
	}}
	if w, ok := cw.c.windows.get(k); ok {
		p.w = w
		p.once.Do(func() {}) // known already
	}
	cw.at[ph.key] = p
	return p
}

// windowCacheSize is how many photos' windows a catalogue keeps, 1.4 kB each.
const windowCacheSize = 8192

// windowKey names a stored photo's pixels: its key, and its SHA-256, since a photo replaced
// under the same id keeps its key.
type windowKey struct {
	key    index.Key
	sha256 string
}

// windowCache keeps the crop windows of the stored photos compared most recently, across
// scans, checks and writes: the neighbours of a photo being checked or written are mostly
// the same few photos again (those of the products written just before it, at ingest), and
// their windows cost a decode and 175 hashes each. It forgets the oldest first.
type windowCache struct {
	mu   sync.Mutex
	at   map[windowKey]embed.WindowHashes
	ring []windowKey // in the order put, as a ring of its capacity
	next int
}

func newWindowCache(size int) *windowCache {
	return &windowCache{at: make(map[windowKey]embed.WindowHashes, size), ring: make([]windowKey, 0, size)}
}

func (c *windowCache) get(k windowKey) (embed.WindowHashes, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	w, ok := c.at[k]
	return w, ok
}

func (c *windowCache) put(k windowKey, w embed.WindowHashes) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.at[k]; ok {
		return
	}
	if len(c.ring) < cap(c.ring) {
		c.ring = append(c.ring, k)
	} else {
		delete(c.at, c.ring[c.next])
		c.ring[c.next] = k
		c.next = (c.next + 1) % len(c.ring)
	}
	c.at[k] = w
}

// withCrop completes the signals of two stored photos with the crop signals when the
// policy's tier could change with them.
func (cw *cropWindows) withCrop(ctx context.Context, p Policy, a, b photoEntry, s Signals) cropResult {
	if !p.wantsCrop(s) {
		return noCrop
	}
	k := [2]index.Key{min(a.key, b.key), max(a.key, b.key)}
	cw.mu.Lock()
	r, ok := cw.pairs[k]
	cw.mu.Unlock()
	if ok {
		return r
	}
	// cropSignals is the same both ways round, so the pair is worked out once (or twice,
	// when both sides meet it at the same time: the same answer).
	r = cropSignals(cw.photo(ctx, a), cw.photo(ctx, b), p.CropHamming)
	cw.mu.Lock()
	cw.pairs[k] = r
	cw.mu.Unlock()
	return r
}

// set puts crop signals into s.
func (r cropResult) set(s *Signals) {
	s.CropHamming, s.CropCorrelation = r.hamming, r.correlation
}
