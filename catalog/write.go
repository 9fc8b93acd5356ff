package catalog

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"sync"

	"lookalike/embed"
	"lookalike/index"
	"lookalike/store"
)

// Write is one product to add or change.
//
// By default the product's photos become exactly Photos: stored photos not listed are
// removed. With KeepOtherPhotos, stored photos not listed (and not in RemovePhotos) stay, so
// one photo can be added or removed without resending the others. Metadata (category,
// title, attributes) is always replaced by what the write carries.
type Write struct {
	// ID is the product id; required.
	ID string
	// Category, Title and Attributes replace the stored ones.
	Category   string
	Title      string
	Attributes map[string]string
	// Photos are stored or kept, in this order (after the other kept photos).
	Photos []PhotoWrite
	// RemovePhotos names stored photos to remove (meaningful with KeepOtherPhotos).
	RemovePhotos []string
	// KeepOtherPhotos keeps stored photos that Photos does not mention.
	KeepOtherPhotos bool
	// CheckDuplicates compares every photo the write embeds with the catalogue as it was
	// before the write and reports its copies and exact duplicates in UpsertResult.Duplicates.
	CheckDuplicates bool
}

// PhotoDuplicate is a written photo's strongest match among other products' photos.
type PhotoDuplicate struct {
	// PhotoID is the written photo.
	PhotoID string
	// Tier and Signals place the match under the catalogue's policy.
	Tier    Tier
	Signals Signals
	// ProductID and MatchedPhotoID name the photo it matched.
	ProductID, MatchedPhotoID string
}

// PhotoWrite is one photo of a Write. With Image, the photo is embedded (unless a stored
// photo of the same id has the same bytes); with Vector, the ready embedding is stored; with
// neither, the stored photo of that ID is kept as it is (only ImageURL may change).
type PhotoWrite struct {
	// ID names the photo in its product; empty derives it from the bytes or the vector.
	ID string
	// Image is the encoded photo.
	Image []byte
	// Vector is a ready embedding of the catalogue's dimension; normalised here.
	Vector []float32
	// ImageURL is where the photo came from, echoed back in results.
	ImageURL string
}

// Outcome says what an upsert did.
type Outcome int

const (
	// Created means the id was new.
	Created Outcome = iota + 1
	// Updated means the id existed and was changed.
	Updated
	// Unchanged means the id existed with the same photos and metadata; nothing was
	// embedded or written.
	Unchanged
)

// String names the outcome for logs.
func (o Outcome) String() string {
	switch o {
	case Created:
		return "created"
	case Updated:
		return "updated"
	case Unchanged:
		return "unchanged"
	default:
		return fmt.Sprintf("outcome(%d)", int(o))
	}
}

// UpsertResult is the result of one write. Err is set (and Outcome zero) when it failed.
type UpsertResult struct {
	// ID is the product id of the write.
	ID string
	// Outcome says what happened.
	Outcome Outcome
	// Photos are the product's photos after the write (without vectors).
	Photos []Photo
	// Embedded counts the photos that ran through the model for this write.
	Embedded int
	// Duplicates lists, with Write.CheckDuplicates, the written photos that are copies or
	// exact duplicates of another product's photo.
	Duplicates []PhotoDuplicate
	// Err says why the write failed.
	Err error
}

// pending is a write on its way through UpsertBatch: the product's new state, with the
// photos still to embed.
type pending struct {
	pos     int
	write   Write
	photos  []store.Photo // new state; Vector nil for photos kept as stored
	images  [][]byte      // per photo: bytes to embed, or nil
	existed bool
	base    *entry // the stored entry it was planned on (nil for a new product)
	// embedded marks the photos the model ran on for this write (nil: none yet).
	embedded []bool
}

// normalise checks a client vector and returns an L2-normalised copy.
func normalise(vec []float32, dim int) ([]float32, error) {
	if len(vec) != dim {
		return nil, fmt.Errorf("%w: vector has dimension %d, want %d", ErrInvalidArgument, len(vec), dim)
	}
	var sum float64
	for _, v := range vec {
		f := float64(v)
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return nil, fmt.Errorf("%w: vector holds NaN or Inf", ErrInvalidArgument)
		}
		sum += f * f
	}
	if sum == 0 {
		return nil, fmt.Errorf("%w: vector is all zeros", ErrInvalidArgument)
	}
	inv := 1 / math.Sqrt(sum)
	out := make([]float32, len(vec))
	for i, v := range vec {
		out[i] = float32(float64(v) * inv)
	}
	return out, nil
}

// Upsert adds or changes one product.
func (c *Catalog) Upsert(ctx context.Context, w Write) (UpsertResult, error) {
	res := c.UpsertBatch(ctx, []Write{w})[0]
	return res, res.Err
}

// UpsertBatch adds or changes many products, embedding their new photos concurrently (the
// embedder batches them) and writing them to the store in one transaction. Each write gets
// its own result in input order; a bad write never stops the others. A photo whose bytes
// (or vector) equal what is stored under its id is never embedded again, and a write that
// changes only metadata runs no model and leaves the graph alone. Writes to the same id
// apply in order, each on top of the one before.
func (c *Catalog) UpsertBatch(ctx context.Context, writes []Write) []UpsertResult {
	results := make([]UpsertResult, len(writes))
	for i, w := range writes {
		results[i].ID = w.ID
	}
	if err := c.enter(); err != nil {
		for i := range results {
			results[i].Err = err
		}
		return results
	}
	defer c.life.RUnlock()
	// Cut the batch into runs without a repeated id, so each write plans on top of the
	// stored result of the one before.
	for start := 0; start < len(writes); {
		seen := make(map[string]bool)
		end := start
		for end < len(writes) && !seen[writes[end].ID] {
			seen[writes[end].ID] = true
			end++
		}
		c.upsertRun(ctx, writes, start, end, results)
		start = end
	}
	return results
}

// upsertRun plans, embeds and writes writes[start:end], whose ids are distinct.
func (c *Catalog) upsertRun(ctx context.Context, writes []Write, start, end int, results []UpsertResult) {
	todo := make([]*pending, 0, end-start)
	for i := start; i < end; i++ {
		p, err := c.plan(ctx, i, writes[i])
		if err != nil {
			results[i].Err = err
			continue
		}
		if p == nil {
			c.unchanged(writes[i].ID, &results[i])
			continue
		}
		todo = append(todo, p)
	}
	// The model runs outside writeMu, so writers embed in parallel.
	analyses := c.embedAll(ctx, todo, results)
	for _, p := range todo {
		if p.write.CheckDuplicates && results[p.pos].Err == nil {
			results[p.pos].Duplicates = c.photoDuplicates(ctx, p)
		}
	}

	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	ready := todo[:0]
	for _, p := range todo {
		if results[p.pos].Err != nil {
			continue
		}
		if cur, _ := c.lookup(p.write.ID); cur != p.base {
			// Another writer changed the product since it was planned: plan again on top of
			// its state, reusing what was embedded (rare, so embedding the rest under the
			// lock is fine).
			q, err := c.plan(ctx, p.pos, p.write)
			if err == nil && q != nil {
				err = c.fill(ctx, q, analyses, &results[p.pos])
			}
			if err != nil {
				results[p.pos].Err = err
				continue
			}
			if q == nil {
				c.unchanged(p.write.ID, &results[p.pos])
				continue
			}
			p = q
		}
		ready = append(ready, p)
	}
	if len(ready) > 0 {
		c.write(ctx, ready, results)
	}
}

func (c *Catalog) unchanged(id string, r *UpsertResult) {
	r.Outcome = Unchanged
	if e, ok := c.lookup(id); ok {
		r.Photos = e.product().Photos
	}
}

// plan works out the product's new state from the stored one, or nil when the write
// changes nothing.
func (c *Catalog) plan(ctx context.Context, pos int, w Write) (*pending, error) {
	if err := store.ValidateID(w.ID); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidArgument, err)
	}
	stored, existed := c.lookup(w.ID)
	var base []store.Photo
	if existed {
		for _, ph := range stored.photos {
			base = append(base, storePhoto(ph))
		}
	}
	byID := make(map[string]int, len(base))
	for i, ph := range base {
		byID[ph.ID] = i
	}

	p := &pending{pos: pos, write: w, existed: existed, base: stored}
	var listed []store.Photo
	var listedImages [][]byte
	seen := make(map[string]bool, len(w.Photos))
	for j, pw := range w.Photos {
		ph, image, err := c.photoState(ctx, w.ID, j, pw, base, byID)
		if err != nil {
			return nil, err
		}
		if seen[ph.ID] {
			return nil, fmt.Errorf("%w: product %q lists photo %q twice", ErrInvalidArgument, w.ID, ph.ID)
		}
		seen[ph.ID] = true
		listed = append(listed, ph)
		listedImages = append(listedImages, image)
	}
	removed := make(map[string]bool, len(w.RemovePhotos))
	for _, id := range w.RemovePhotos {
		if _, ok := byID[id]; !ok {
			return nil, fmt.Errorf("%w: product %q has no photo %q to remove", ErrNotFound, w.ID, id)
		}
		if seen[id] {
			return nil, fmt.Errorf("%w: product %q both writes and removes photo %q", ErrInvalidArgument, w.ID, id)
		}
		removed[id] = true
	}
	if w.KeepOtherPhotos {
		for _, ph := range base {
			if !seen[ph.ID] && !removed[ph.ID] {
				p.photos = append(p.photos, ph)
				p.images = append(p.images, nil)
			}
		}
	} else if len(w.RemovePhotos) > 0 {
		return nil, fmt.Errorf("%w: product %q: removing photos needs keep_other_photos (otherwise the listed photos are the whole set)", ErrInvalidArgument, w.ID)
	}
	p.photos = append(p.photos, listed...)
	p.images = append(p.images, listedImages...)
	switch {
	case len(p.photos) == 0 && !existed:
		return nil, fmt.Errorf("%w: product %q has no photo", ErrInvalidArgument, w.ID)
	case len(p.photos) == 0:
		return nil, fmt.Errorf("%w: product %q would be left without a photo (delete the product instead)", ErrInvalidArgument, w.ID)
	case len(p.photos) > store.MaxPhotos:
		return nil, fmt.Errorf("%w: product %q would have %d photos, at most %d", ErrInvalidArgument, w.ID, len(p.photos), store.MaxPhotos)
	}
	if existed && c.sameState(stored, w, p) {
		return nil, nil
	}
	return p, nil
}

// photoState turns one PhotoWrite into the photo's new stored state and, when it must be
// embedded, the bytes to embed.
func (c *Catalog) photoState(ctx context.Context, product string, j int, pw PhotoWrite, base []store.Photo, byID map[string]int) (store.Photo, []byte, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: product %q photo %d: %s", ErrInvalidArgument, product, j, fmt.Sprintf(format, args...))
	}
	var ph store.Photo
	switch {
	case len(pw.Image) > 0 && pw.Vector != nil:
		return ph, nil, bad("has both an image and a vector")
	case len(pw.Image) > 0:
		sum := sha256.Sum256(pw.Image)
		ph.SHA256 = hex.EncodeToString(sum[:])
		ph.ID = pw.ID
		if ph.ID == "" {
			ph.ID = store.BytesPhotoID(ph.SHA256)
		}
	case pw.Vector != nil:
		vec, err := normalise(pw.Vector, c.dim)
		if err != nil {
			return ph, nil, fmt.Errorf("product %q photo %d: %w", product, j, err)
		}
		ph.Vector = vec
		ph.ID = pw.ID
		if ph.ID == "" {
			ph.ID = store.VectorPhotoID(vec)
		}
	case pw.ID == "":
		return ph, nil, bad("has neither an image, a vector nor the id of a stored photo")
	default:
		i, ok := byID[pw.ID]
		if !ok {
			return ph, nil, fmt.Errorf("%w: product %q has no stored photo %q to keep (send its image)", ErrNotFound, product, pw.ID)
		}
		ph = base[i]
		ph.ImageURL = pw.ImageURL
		return ph, nil, nil
	}
	if err := store.ValidatePhotoID(ph.ID); err != nil {
		return ph, nil, fmt.Errorf("%w: product %q: %w", ErrInvalidArgument, product, err)
	}
	ph.ImageURL = pw.ImageURL
	if i, ok := byID[ph.ID]; ok {
		old := base[i]
		same := ph.SHA256 != "" && old.SHA256 == ph.SHA256
		if ph.Vector != nil && old.SHA256 == "" {
			same = c.storedVectorEquals(ctx, old, ph.Vector)
		}
		if same {
			// The stored vector stands: keep the photo (its key, vector, hashes, kept copy).
			old.ImageURL = ph.ImageURL
			return old, nil, nil
		}
	}
	if len(pw.Image) > 0 {
		return ph, pw.Image, nil
	}
	return ph, nil, nil
}

// storedVectorEquals reports whether the stored photo's vector equals vec. When the
// backend cannot say, the photo counts as changed and is written again: never wrong.
func (c *Catalog) storedVectorEquals(ctx context.Context, old store.Photo, vec []float32) bool {
	stored, err := c.vector(ctx, old.Key)
	return err == nil && stored != nil && slices.Equal(stored, vec)
}

// sameState reports whether the planned state equals the stored entry: same metadata and
// the same photos (ids, order, URLs), none to embed or store anew.
func (c *Catalog) sameState(e *entry, w Write, p *pending) bool {
	if e.category != w.Category || e.title != w.Title || !maps.Equal(e.attributes, w.Attributes) ||
		len(e.photos) != len(p.photos) {
		return false
	}
	for i, ph := range p.photos {
		old := e.photos[i]
		if p.images[i] != nil || ph.Vector != nil || ph.ID != old.id || ph.Key != old.key || ph.ImageURL != old.imageURL {
			return false
		}
	}
	return true
}

func storePhoto(ph photoEntry) store.Photo {
	return store.Photo{
		ID: ph.id, Key: ph.key, ImageURL: ph.imageURL, SHA256: ph.sha256, PHash: ph.phash,
		PHashMirror: ph.phashMir, HasPHash: ph.hasPHash, KeptBytes: ph.keptBytes, Created: ph.created, Updated: ph.updated,
	}
}

// embedAll runs every photo that needs the model at once, so the embedder can fill its
// batches, and fills the pending photos in. A photo that fails fails its whole write. It
// returns the analyses by photo sha256, for a write that must be planned again.
func (c *Catalog) embedAll(ctx context.Context, todo []*pending, results []UpsertResult) map[string]embed.Analysis {
	analyses := make(map[string]embed.Analysis)
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, p := range todo {
		for i, image := range p.images {
			if image == nil {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				a, err := c.analyze(ctx, image)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					if results[p.pos].Err == nil {
						results[p.pos].Err = fmt.Errorf("product %q photo %q: %w", p.write.ID, p.photos[i].ID, err)
					}
					return
				}
				setAnalysis(&p.photos[i], a)
				p.images[i] = nil
				if p.embedded == nil {
					p.embedded = make([]bool, len(p.photos))
				}
				p.embedded[i] = true
				analyses[p.photos[i].SHA256] = a
				results[p.pos].Embedded++
			}()
		}
	}
	wg.Wait()
	return analyses
}

// photoDuplicates compares the photos a write embedded with the photos of other products
// and returns those whose strongest match is a copy or an exact duplicate.
func (c *Catalog) photoDuplicates(ctx context.Context, p *pending) []PhotoDuplicate {
	policy, err := c.policy(ctx)
	if err != nil {
		c.log.Warn("duplicate check on upsert skipped", "id", p.write.ID, "err", err)
		return nil
	}
	var out []PhotoDuplicate
	crops := c.newCropWindows()
	for i, ph := range p.photos {
		if p.embedded == nil || !p.embedded[i] {
			continue
		}
		q := photoEntry{sha256: ph.SHA256, phash: ph.PHash, phashMir: ph.PHashMirror, hasPHash: ph.HasPHash}
		// The new photo's windows come from its kept copy (none when photos are not kept),
		// read only when a candidate needs them.
		qCrop := uploadCrop(q, ph.Kept)
		var best *PhotoDuplicate
		ns, err := c.searchPhotos(ctx, ph.Vector, checkCandidates, 0, nil)
		if err != nil {
			c.log.Warn("duplicate check on upsert skipped", "id", p.write.ID, "err", err)
			return nil
		}
		for _, n := range ns {
			c.metaMu.RLock()
			e, ok := c.byKey[n.Key]
			c.metaMu.RUnlock()
			if !ok || e.id == p.write.ID {
				continue
			}
			other, _ := e.photo(n.Key)
			sig := signalsOf(q, other, n.Score)
			if policy.wantsCrop(sig) {
				cropSignals(qCrop, crops.photo(ctx, other), policy.CropHamming).set(&sig)
			}
			if t := policy.Tier(sig); t >= TierCopy && (best == nil || t > best.Tier || (t == best.Tier && sig.Cosine > best.Signals.Cosine)) {
				best = &PhotoDuplicate{PhotoID: ph.ID, Tier: t, Signals: sig, ProductID: e.id, MatchedPhotoID: other.id}
			}
		}
		if best != nil {
			out = append(out, *best)
		}
	}
	return out
}

// fill embeds a re-planned write's photos, taking each from analyses when it was embedded
// already.
func (c *Catalog) fill(ctx context.Context, p *pending, analyses map[string]embed.Analysis, r *UpsertResult) error {
	for i, image := range p.images {
		if image == nil {
			continue
		}
		a, ok := analyses[p.photos[i].SHA256]
		if !ok {
			var err error
			if a, err = c.analyze(ctx, image); err != nil {
				return fmt.Errorf("product %q photo %q: %w", p.write.ID, p.photos[i].ID, err)
			}
			r.Embedded++
		}
		setAnalysis(&p.photos[i], a)
		p.images[i] = nil
	}
	return nil
}

// maxIngestAnalyses bounds the photos being analysed for writes at once, over every writer:
// a batch of products with dozens of photos each would otherwise fill the embedder's queue
// and have its photos refused as overloaded. It leaves most of the queue to queries.
const maxIngestAnalyses = 64

// analyze runs one photo to be stored through the model, waiting for one of the catalogue's
// ingest slots first.
func (c *Catalog) analyze(ctx context.Context, image []byte) (embed.Analysis, error) {
	select {
	case c.ingestSlots <- struct{}{}:
	case <-ctx.Done():
		return embed.Analysis{}, ctx.Err()
	}
	defer func() { <-c.ingestSlots }()
	return c.embedder.Analyze(ctx, image, embed.AnalyzeOptions{Keep: c.keepPhotos})
}

func setAnalysis(ph *store.Photo, a embed.Analysis) {
	ph.Vector, ph.PHash, ph.PHashMirror, ph.HasPHash, ph.Kept = a.Vector, a.PHash, a.PHashMirror, true, a.Kept
}

// write stores ready products in the backend (durably, before it returns) and then
// publishes them in the product table. If the batch fails, each product is retried alone so
// that one bad product cannot fail the others. Caller holds writeMu.
func (c *Catalog) write(ctx context.Context, ready []*pending, results []UpsertResult) {
	batch := make([]store.Product, len(ready))
	for i, p := range ready {
		batch[i] = store.Product{
			ID: p.write.ID, Category: p.write.Category, Title: p.write.Title,
			Attributes: cloneAttributes(p.write.Attributes), Photos: p.photos,
		}
	}
	stored, err := c.backend.Put(ctx, batch)
	if err != nil {
		if len(ready) > 1 {
			c.log.Warn("batch write failed; writing products one by one", "products", len(ready), "err", err)
		}
		stored = make([]store.Product, len(ready))
		for i := range batch {
			sp, err := c.backend.Put(ctx, batch[i:i+1])
			if errors.Is(err, store.ErrInvalid) {
				results[ready[i].pos].Err = fmt.Errorf("%w: product %q: %w", ErrInvalidArgument, batch[i].ID, err)
				continue
			}
			if err != nil {
				results[ready[i].pos].Err = fmt.Errorf("product %q: store: %w", batch[i].ID, err)
				continue
			}
			stored[i] = sp[0]
		}
	}
	for i, sp := range stored {
		p := ready[i]
		if results[p.pos].Err != nil {
			continue
		}
		c.publish(sp)
		results[p.pos].Photos = entryFromStore(sp).product().Photos
		if p.existed {
			results[p.pos].Outcome = Updated
		} else {
			results[p.pos].Outcome = Created
		}
	}
}

// publish puts a stored product in the table, in place of its old state. Caller holds
// writeMu.
func (c *Catalog) publish(sp store.Product) {
	e := entryFromStore(sp)
	c.metaMu.Lock()
	defer c.metaMu.Unlock()
	if old := c.byID[e.id]; old != nil {
		for _, ph := range old.photos {
			if _, still := e.photo(ph.key); !still {
				delete(c.byKey, ph.key)
			}
		}
	}
	for _, ph := range e.photos {
		c.byKey[ph.key] = e
	}
	c.byID[e.id] = e
}

// Delete removes a product with all its photos and returns it as it was (without vectors).
func (c *Catalog) Delete(ctx context.Context, id string) (Product, error) {
	if err := c.enter(); err != nil {
		return Product{}, err
	}
	defer c.life.RUnlock()
	if err := store.ValidateID(id); err != nil {
		return Product{}, fmt.Errorf("%w: %w", ErrInvalidArgument, err)
	}
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	sp, err := c.backend.Delete(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return Product{}, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	if err != nil {
		return Product{}, fmt.Errorf("catalog: delete %q: %w", id, err)
	}
	c.metaMu.Lock()
	for _, ph := range sp.Photos {
		delete(c.byKey, ph.Key)
	}
	delete(c.byID, sp.ID)
	c.metaMu.Unlock()
	return entryFromStore(sp).product(), nil
}

// Get returns a product; its photos' vectors only when withVectors is set.
func (c *Catalog) Get(ctx context.Context, id string, withVectors bool) (Product, error) {
	if err := c.enter(); err != nil {
		return Product{}, err
	}
	defer c.life.RUnlock()
	if !withVectors {
		e, ok := c.lookup(id)
		if !ok {
			return Product{}, fmt.Errorf("%w: %q", ErrNotFound, id)
		}
		return e.product(), ctx.Err()
	}
	e, vecs, err := c.withVectors(ctx, id)
	if err != nil {
		return Product{}, err
	}
	p := e.product()
	for i := range p.Photos {
		p.Photos[i].Vector = vecs[i]
	}
	return p, ctx.Err()
}

// withVectors returns a product's entry and its photos' vectors, from one state of the
// product. A write that removes photos publishes the product's new entry before it deletes
// them from the graph, so a vector missing under an entry just read means that a newer
// entry is there: read again (the product may be gone by then, or still exist).
func (c *Catalog) withVectors(ctx context.Context, id string) (*entry, [][]float32, error) {
	for try := 0; ; try++ {
		e, ok := c.lookup(id)
		if !ok {
			return nil, nil, fmt.Errorf("%w: %q", ErrNotFound, id)
		}
		keys := make([]index.Key, len(e.photos))
		for i, ph := range e.photos {
			keys[i] = ph.key
		}
		vecs, err := c.backend.Vectors(ctx, keys)
		if err != nil {
			return nil, nil, fmt.Errorf("catalog: read vectors: %w", err)
		}
		if !slices.ContainsFunc(vecs, func(v []float32) bool { return v == nil }) {
			return e, vecs, nil
		}
		if err := ctx.Err(); err != nil {
			return nil, nil, err
		}
		if try == 100 {
			return nil, nil, fmt.Errorf("%w: %q keeps changing; try again", ErrNotFound, id)
		}
		if try >= 2 {
			// The backend removes a changed product's old photos before the table shows
			// its new state: wait for the write in flight to publish it.
			c.writeMu.Lock()
			//lint:ignore SA2001 an empty critical section is the point: a barrier
			c.writeMu.Unlock()
		}
	}
}

// KeptPhoto returns the kept copy (JPEG) of a product's photo and the photo's metadata.
// ErrNotFound when the product, the photo or a kept copy of it does not exist.
func (c *Catalog) KeptPhoto(ctx context.Context, id, photoID string) ([]byte, Photo, error) {
	if err := c.enter(); err != nil {
		return nil, Photo{}, err
	}
	defer c.life.RUnlock()
	e, ok := c.lookup(id)
	if !ok {
		return nil, Photo{}, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	for _, ph := range e.photos {
		if ph.id != photoID {
			continue
		}
		if ph.keptBytes == 0 {
			return nil, Photo{}, fmt.Errorf("%w: product %q photo %q has no kept copy", ErrNotFound, id, photoID)
		}
		jpeg, err := c.backend.KeptPhoto(ctx, ph.key)
		if errors.Is(err, store.ErrNotFound) {
			return nil, Photo{}, fmt.Errorf("%w: product %q photo %q was changed meanwhile", ErrNotFound, id, photoID)
		}
		if err != nil {
			return nil, Photo{}, fmt.Errorf("catalog: kept photo: %w", err)
		}
		return jpeg, ph.photo(), ctx.Err()
	}
	return nil, Photo{}, fmt.Errorf("%w: product %q has no photo %q", ErrNotFound, id, photoID)
}

// lookup returns the entry of a stored product id.
func (c *Catalog) lookup(id string) (*entry, bool) {
	c.metaMu.RLock()
	defer c.metaMu.RUnlock()
	e, ok := c.byID[id]
	return e, ok
}
