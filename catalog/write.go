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
	"time"

	"lookalike/index"
	"lookalike/store"
)

// Product is a stored catalogue entry.
type Product struct {
	ID          string
	Category    string
	Title       string
	ImageURL    string
	Attributes  map[string]string
	ImageSHA256 string // hex; empty for products stored from a ready vector
	Created     time.Time
	Updated     time.Time
	Vector      []float32 // only from Get with withVector
}

// UpsertItem is one product to add or replace: exactly one of Image and Vector is set.
type UpsertItem struct {
	ID         string
	Image      []byte    // encoded photo; embedded by the catalogue
	Vector     []float32 // ready embedding of the catalogue's dimension; normalised here
	Category   string
	Title      string
	ImageURL   string
	Attributes map[string]string
}

// Outcome says what an upsert did.
type Outcome int

const (
	// Created means the id was new.
	Created Outcome = iota + 1
	// Updated means the id existed and was replaced.
	Updated
	// Unchanged means the id existed with the same photo (or vector) and metadata; nothing
	// was embedded or written.
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

// UpsertResult is the result of one item. Err is set (and Outcome zero) when the item failed.
type UpsertResult struct {
	ID          string
	Outcome     Outcome
	ImageSHA256 string
	Err         error
}

// pending is an item on its way through UpsertBatch.
type pending struct {
	pos  int
	item UpsertItem
	sha  string
	vec  []float32
}

func validateItem(it UpsertItem) error {
	if err := store.ValidateID(it.ID); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidArgument, err)
	}
	switch {
	case len(it.Image) > 0 && it.Vector != nil:
		return fmt.Errorf("%w: product %q has both an image and a vector", ErrInvalidArgument, it.ID)
	case len(it.Image) == 0 && it.Vector == nil:
		return fmt.Errorf("%w: product %q has neither an image nor a vector", ErrInvalidArgument, it.ID)
	}
	return nil
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

func sameMetadata(e *entry, it UpsertItem) bool {
	return e.category == it.Category && e.title == it.Title && e.imageURL == it.ImageURL &&
		maps.Equal(e.attributes, it.Attributes)
}

// Upsert adds or replaces one product.
func (c *Catalog) Upsert(ctx context.Context, it UpsertItem) (UpsertResult, error) {
	res := c.UpsertBatch(ctx, []UpsertItem{it})[0]
	return res, res.Err
}

// UpsertBatch adds or replaces many products, embedding them concurrently (the embedder
// batches them) and writing them to the store in one transaction. Each item gets its own
// result in input order; a bad item never stops the others.
func (c *Catalog) UpsertBatch(ctx context.Context, items []UpsertItem) []UpsertResult {
	results := make([]UpsertResult, len(items))
	for i, it := range items {
		results[i].ID = it.ID
	}
	if err := c.enter(); err != nil {
		for i := range results {
			results[i].Err = err
		}
		return results
	}
	defer c.life.RUnlock()

	todo := make([]*pending, 0, len(items))
	first := make(map[string]*pending, len(items))
	var repeats [][2]int // {position, position of the earlier identical item}
	for i, it := range items {
		if err := validateItem(it); err != nil {
			results[i].Err = err
			continue
		}
		p := &pending{pos: i, item: it}
		if len(it.Image) > 0 {
			sum := sha256.Sum256(it.Image)
			p.sha = hex.EncodeToString(sum[:])
			results[i].ImageSHA256 = p.sha
		} else {
			vec, err := normalise(it.Vector, c.dim)
			if err != nil {
				results[i].Err = fmt.Errorf("product %q: %w", it.ID, err)
				continue
			}
			p.vec = vec
		}
		if c.unchanged(p) {
			results[i].Outcome = Unchanged
			continue
		}
		// An exact repeat of an earlier item in this batch shares its fate: unchanged once
		// that one is written, so the outcome does not depend on how a stream was batched.
		if prev, ok := first[it.ID]; ok && samePending(prev, p) {
			repeats = append(repeats, [2]int{i, prev.pos})
			continue
		}
		first[it.ID] = p
		todo = append(todo, p)
	}

	// Embed every photo at once so the embedder can fill its batches.
	var wg sync.WaitGroup
	for _, p := range todo {
		if p.vec != nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			vec, err := c.embedder.Embed(ctx, p.item.Image)
			if err != nil {
				results[p.pos].Err = fmt.Errorf("product %q: %w", p.item.ID, err)
				return
			}
			p.vec = vec
		}()
	}
	wg.Wait()
	ready := todo[:0]
	for _, p := range todo {
		if p.vec != nil {
			ready = append(ready, p)
		}
	}
	if len(ready) > 0 {
		c.write(ctx, ready, results)
	}
	for _, r := range repeats {
		if err := results[r[1]].Err; err != nil {
			results[r[0]].Err = err
			continue
		}
		results[r[0]].Outcome = Unchanged
		results[r[0]].ImageSHA256 = results[r[1]].ImageSHA256
	}
	return results
}

// samePending reports whether two items of one batch would write the same product.
func samePending(a, b *pending) bool {
	x, y := a.item, b.item
	return a.sha == b.sha && slices.Equal(a.vec, b.vec) && x.Category == y.Category &&
		x.Title == y.Title && x.ImageURL == y.ImageURL && maps.Equal(x.Attributes, y.Attributes)
}

// unchanged reports whether p would rewrite a product with what it already holds.
func (c *Catalog) unchanged(p *pending) bool {
	c.metaMu.RLock()
	e, ok := c.byID[p.item.ID]
	c.metaMu.RUnlock()
	if !ok || !sameMetadata(e, p.item) {
		return false
	}
	if p.sha != "" {
		return e.imageSHA256 == p.sha
	}
	if e.imageSHA256 != "" {
		return false
	}
	stored, ok := c.graph.Vector(e.key)
	return ok && slices.Equal(stored, p.vec)
}

// write stores ready items (fsynced) and then indexes them. If the batch transaction fails,
// each item is retried alone so that one bad item cannot fail the others.
func (c *Catalog) write(ctx context.Context, ready []*pending, results []UpsertResult) {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()

	batch := make([]store.Item, len(ready))
	existed := make([]bool, len(ready))
	inBatch := make(map[string]bool, len(ready))
	c.metaMu.RLock()
	for i, p := range ready {
		_, existed[i] = c.byID[p.item.ID]
		existed[i] = existed[i] || inBatch[p.item.ID]
		inBatch[p.item.ID] = true
		batch[i] = store.Item{
			ID: p.item.ID, Category: p.item.Category, Title: p.item.Title, ImageURL: p.item.ImageURL,
			Attributes: cloneAttributes(p.item.Attributes), ImageSHA256: p.sha, Vector: p.vec,
		}
	}
	c.metaMu.RUnlock()

	stored, err := c.store.UpsertBatch(ctx, batch)
	if err != nil {
		if len(ready) > 1 {
			c.log.Warn("batch write failed; writing items one by one", "items", len(ready), "err", err)
		}
		stored = make([]store.Item, len(ready))
		for i := range batch {
			it, err := c.store.Upsert(ctx, batch[i])
			if errors.Is(err, store.ErrInvalid) {
				results[ready[i].pos].Err = fmt.Errorf("%w: product %q: %w", ErrInvalidArgument, batch[i].ID, err)
				continue
			}
			if err != nil {
				results[ready[i].pos].Err = fmt.Errorf("product %q: store: %w", batch[i].ID, err)
				continue
			}
			stored[i] = it
		}
	}
	for i, it := range stored {
		p := ready[i]
		if results[p.pos].Err != nil {
			continue
		}
		if err := c.index(it); err != nil {
			// Vectors are validated before they reach the store, so this is a bug; the store
			// stays the truth and the next open rebuilds or replays the graph from it.
			c.log.Error("indexing a stored product failed", "id", it.ID, "err", err)
			results[p.pos].Err = fmt.Errorf("product %q: index: %w", it.ID, err)
			continue
		}
		if existed[i] {
			results[p.pos].Outcome = Updated
		} else {
			results[p.pos].Outcome = Created
		}
	}
}

// index puts a stored item into the graph and the metadata table. Caller holds writeMu.
func (c *Catalog) index(it store.Item) error {
	if err := c.graph.Add(it.Key, it.Vector); err != nil {
		return err
	}
	e := entryFromItem(it)
	c.metaMu.Lock()
	old, replaced := c.byID[e.id]
	if replaced && old.key != e.key {
		delete(c.byKey, old.key)
	}
	c.byKey[e.key] = e
	c.byID[e.id] = e
	c.metaMu.Unlock()
	if replaced && old.key != e.key {
		// The store keeps an id's key on replace, so this is defensive. The graph call stays
		// outside metaMu: searches hold the graph's lock while their filter takes metaMu.
		c.graph.Delete(old.key)
	}
	return nil
}

// Delete removes a product and returns it as it was (without vector).
func (c *Catalog) Delete(ctx context.Context, id string) (Product, error) {
	if err := c.enter(); err != nil {
		return Product{}, err
	}
	defer c.life.RUnlock()
	if id == "" {
		return Product{}, fmt.Errorf("%w: product id is empty", ErrInvalidArgument)
	}
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	it, err := c.store.Delete(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return Product{}, fmt.Errorf("%w: %q: %w", ErrNotFound, id, err)
	}
	if err != nil {
		return Product{}, fmt.Errorf("catalog: delete %q: %w", id, err)
	}
	c.graph.Delete(it.Key)
	c.metaMu.Lock()
	delete(c.byKey, it.Key)
	delete(c.byID, it.ID)
	c.metaMu.Unlock()
	return entryFromItem(it).product(), nil
}

// Get returns a product; its vector only when withVector is set.
func (c *Catalog) Get(ctx context.Context, id string, withVector bool) (Product, error) {
	if err := c.enter(); err != nil {
		return Product{}, err
	}
	defer c.life.RUnlock()
	c.metaMu.RLock()
	e, ok := c.byID[id]
	c.metaMu.RUnlock()
	if !ok {
		return Product{}, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	p := e.product()
	if withVector {
		vec, ok := c.graph.Vector(e.key)
		if !ok {
			return Product{}, fmt.Errorf("%w: %q was deleted meanwhile", ErrNotFound, id)
		}
		p.Vector = vec
	}
	return p, ctx.Err()
}

// keyOf returns the key of a stored id.
func (c *Catalog) keyOf(id string) (index.Key, bool) {
	c.metaMu.RLock()
	defer c.metaMu.RUnlock()
	e, ok := c.byID[id]
	if !ok {
		return 0, false
	}
	return e.key, true
}
