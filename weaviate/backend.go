package weaviate

import (
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"lookalike/catalog"
	"lookalike/index"
	"lookalike/store"
)

// Consistency levels of Weaviate's replicated reads and writes.
const (
	One    = "ONE"
	Quorum = "QUORUM"
	All    = "ALL"
)

// Config says which cluster holds the catalogue and how.
type Config struct {
	// URLs are the cluster's nodes (http://host:port); requests go to any of them.
	URLs []string
	// ModelIdentity and Dim are the model the vectors come from; they name the collections
	// and are checked against what the cluster holds.
	ModelIdentity string
	Dim           int
	// Prefix starts the collection names; "" is "Lookalike".
	Prefix string
	// Replicas and Shards apply when the collections are created: copies of each shard
	// (at most the node count) and shards per collection. 0 means 1.
	Replicas, Shards int
	// WriteConsistency and ReadConsistency are One, Quorum or All; "" means Quorum for
	// writes and One for reads.
	WriteConsistency, ReadConsistency string
	// Index holds the HNSW parameters for a new photos collection.
	Index catalog.IndexParams
	// HTTPClient sends the requests; nil uses one with a 60 s timeout per request.
	HTTPClient *http.Client
	// Logger receives progress and warnings; nil discards them.
	Logger *slog.Logger
}

// Backend is a catalog.Backend over Weaviate collections: one object per photo in the
// photos collection (its vector, its product's properties for filters, its own metadata),
// one per kept photo in the kept collection, and named records (model identity, settings,
// duplicate decisions, the next photo key) in the meta collection, so that every node of the
// cluster, and every process pointed at it, sees them.
type Backend struct {
	c      *client
	cl     classes
	log    *slog.Logger
	model  string
	dim    int
	write  string
	read   string
	schema schemaOptions

	// mu guards products (the stored state of each product, photos without vectors, keys
	// assigned) and nextKey: Put and Delete read them to plan a write. Writes are serialised
	// by the catalogue, so mu is only held briefly.
	mu       sync.Mutex
	products map[string]store.Product
	nextKey  uint32
}

var (
	_ catalog.Backend = (*Backend)(nil)
)

// Open connects to the cluster, creates the catalogue's collections if they are missing and
// checks that they were made for the same model.
func Open(ctx context.Context, cfg Config) (*Backend, error) {
	if len(cfg.URLs) == 0 {
		return nil, fmt.Errorf("%w: weaviate: no node URL", catalog.ErrInvalidArgument)
	}
	if cfg.ModelIdentity == "" || cfg.Dim <= 0 {
		return nil, fmt.Errorf("%w: weaviate: model identity and dimension are required", catalog.ErrInvalidArgument)
	}
	c := &client{http: cfg.HTTPClient}
	if c.http == nil {
		c.http = &http.Client{Timeout: 60 * time.Second}
	}
	for _, raw := range cfg.URLs {
		u, err := url.Parse(strings.TrimSpace(raw))
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("%w: weaviate: node URL %q is not http(s)://host:port", catalog.ErrInvalidArgument, raw)
		}
		c.nodes = append(c.nodes, u)
	}
	levels := map[string]bool{One: true, Quorum: true, All: true}
	write, read := cmp.Or(cfg.WriteConsistency, Quorum), cmp.Or(cfg.ReadConsistency, One)
	if !levels[write] || !levels[read] {
		return nil, fmt.Errorf("%w: weaviate: consistency levels are ONE, QUORUM or ALL, not %q / %q",
			catalog.ErrInvalidArgument, write, read)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := cfg.Index
	b := &Backend{
		c: c, cl: classesFor(cmp.Or(cfg.Prefix, "Lookalike"), cfg.ModelIdentity), log: log,
		model: cfg.ModelIdentity, dim: cfg.Dim, write: write, read: read,
		schema: schemaOptions{
			replicas: max(cfg.Replicas, 1), shards: max(cfg.Shards, 1),
			m: cmp.Or(p.M, catalog.DefaultM), efConstruction: cmp.Or(p.EFConstruction, catalog.DefaultEFConstruction),
			efSearch: cmp.Or(p.EFSearch, catalog.DefaultEFSearch),
		},
		products: make(map[string]store.Product),
	}
	if err := b.ensureClasses(ctx, b.schema); err != nil {
		return nil, fmt.Errorf("weaviate: %w", err)
	}
	if err := b.checkModel(ctx); err != nil {
		return nil, err
	}
	if err := b.loadState(ctx); err != nil {
		return nil, fmt.Errorf("weaviate: %w", err)
	}
	log.Info("weaviate backend open", "nodes", len(c.nodes), "class", b.cl.photos, "products", len(b.products),
		"write_consistency", write, "read_consistency", read)
	return b, nil
}

type modelRecord struct {
	Identity string `json:"identity"`
	Dim      int    `json:"dim"`
}

// checkModel records the model in a new catalogue, or refuses one made for another model
// (the collection names differ per model, so this guards against a name collision only).
func (b *Backend) checkModel(ctx context.Context) error {
	raw, err := b.getMeta(ctx, "model")
	if err != nil {
		return fmt.Errorf("weaviate: read model record: %w", err)
	}
	if raw == nil {
		rec, _ := json.Marshal(modelRecord{b.model, b.dim})
		if err := b.putMeta(ctx, map[string][]byte{"model": rec}); err != nil {
			return fmt.Errorf("weaviate: record model: %w", err)
		}
		return nil
	}
	var rec modelRecord
	if err := json.Unmarshal(raw, &rec); err != nil {
		return fmt.Errorf("weaviate: model record: %w", err)
	}
	if rec.Identity != b.model || rec.Dim != b.dim {
		return fmt.Errorf("%w: collection %s holds vectors of %q (%d-d), not %q (%d-d)",
			store.ErrModelMismatch, b.cl.photos, rec.Identity, rec.Dim, b.model, b.dim)
	}
	return nil
}

// loadState reads every product (to know each one's photo keys) and the next key.
func (b *Backend) loadState(ctx context.Context) error {
	raw, err := b.getMeta(ctx, "next_key")
	if err != nil {
		return err
	}
	next := uint64(1)
	if raw != nil {
		if next, err = strconv.ParseUint(string(raw), 10, 32); err != nil {
			return fmt.Errorf("next_key record %q: %w", raw, err)
		}
	}
	products := make(map[string]store.Product)
	err = b.listProducts(ctx, func(p store.Product) error {
		products[p.ID] = p
		for _, ph := range p.Photos {
			next = max(next, uint64(ph.Key)+1)
		}
		return nil
	})
	if err != nil {
		return err
	}
	b.mu.Lock()
	b.products, b.nextKey = products, uint32(next)
	b.mu.Unlock()
	return nil
}

// Name implements catalog.Backend.
func (b *Backend) Name() string { return "weaviate" }

// Identity implements catalog.Backend.
func (b *Backend) Identity() (string, int) { return b.model, b.dim }

// FilteredSearchIsExhaustive tells the catalogue that Weaviate scans a restrictive filter's
// matches exactly (its flat-search cutoff) instead of losing them in the graph.
func (b *Backend) FilteredSearchIsExhaustive() bool { return true }

// Products implements catalog.Backend with a fresh read of the photos collection.
func (b *Backend) Products(ctx context.Context, fn func(store.Product) error) error {
	return b.listProducts(ctx, fn)
}

// photoProps is a photo object's properties as stored.
type photoProps struct {
	ProductID      string   `json:"product_id"`
	Category       string   `json:"category"`
	Attributes     []string `json:"attributes"`
	AttributesJSON string   `json:"attributes_json"`
	PhotoKey       int64    `json:"photo_key"`
	PhotoID        string   `json:"photo_id"`
	Position       int      `json:"position"`
	Title          string   `json:"title"`
	ImageURL       string   `json:"image_url"`
	SHA256         string   `json:"sha256"`
	PHash          string   `json:"phash"`
	PHashMirror    string   `json:"phash_mirror"`
	HasPHash       bool     `json:"has_phash"`
	KeptBytes      int      `json:"kept_bytes"`
	Created        string   `json:"created"`
	Updated        string   `json:"updated"`
	ProductCreated string   `json:"product_created"`
	ProductUpdated string   `json:"product_updated"`
}

// attrSep joins an attribute's name and value into one filterable string.
const attrSep = "\u001f"

func attributePairs(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k, v := range m {
		out = append(out, k+attrSep+v)
	}
	slices.Sort(out)
	return out
}

func propsOf(p store.Product, i int) photoProps {
	ph := p.Photos[i]
	attrs, _ := json.Marshal(p.Attributes)
	return photoProps{
		ProductID: p.ID, Category: p.Category, Attributes: attributePairs(p.Attributes), AttributesJSON: string(attrs),
		PhotoKey: int64(ph.Key), PhotoID: ph.ID, Position: i, Title: p.Title, ImageURL: ph.ImageURL, SHA256: ph.SHA256,
		PHash: strconv.FormatUint(ph.PHash, 16), PHashMirror: strconv.FormatUint(ph.PHashMirror, 16), HasPHash: ph.HasPHash,
		KeptBytes: ph.KeptBytes, Created: stamp(ph.Created), Updated: stamp(ph.Updated),
		ProductCreated: stamp(p.Created), ProductUpdated: stamp(p.Updated),
	}
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

func parseStamp(s string) time.Time {
	t, _ := time.Parse(time.RFC3339Nano, s)
	return t.UTC()
}

// listProducts pages through the photos collection by object id and groups the photos into
// products, photos in their stored order, products by id.
func (b *Backend) listProducts(ctx context.Context, fn func(store.Product) error) error {
	type object struct {
		ID         string     `json:"id"`
		Properties photoProps `json:"properties"`
	}
	byID := make(map[string]*store.Product)
	positions := make(map[string][]int)
	after := ""
	for {
		q := url.Values{"class": {b.cl.photos}, "limit": {"1000"}}
		if after != "" {
			q.Set("after", after)
		}
		var page struct {
			Objects []object `json:"objects"`
		}
		if err := b.c.do(ctx, http.MethodGet, "/v1/objects", q, nil, &page); err != nil {
			return fmt.Errorf("list photos: %w", err)
		}
		for _, o := range page.Objects {
			pp := o.Properties
			p, ok := byID[pp.ProductID]
			if !ok {
				p = &store.Product{ID: pp.ProductID, Category: pp.Category, Title: pp.Title,
					Created: parseStamp(pp.ProductCreated), Updated: parseStamp(pp.ProductUpdated)}
				if pp.AttributesJSON != "" && pp.AttributesJSON != "null" {
					if err := json.Unmarshal([]byte(pp.AttributesJSON), &p.Attributes); err != nil {
						return fmt.Errorf("product %q attributes: %w", pp.ProductID, err)
					}
				}
				byID[pp.ProductID] = p
			}
			phash, _ := strconv.ParseUint(pp.PHash, 16, 64)
			mirror, _ := strconv.ParseUint(pp.PHashMirror, 16, 64)
			p.Photos = append(p.Photos, store.Photo{
				ID: pp.PhotoID, Key: uint32(pp.PhotoKey), ImageURL: pp.ImageURL, SHA256: pp.SHA256,
				PHash: phash, PHashMirror: mirror, HasPHash: pp.HasPHash, KeptBytes: pp.KeptBytes,
				Created: parseStamp(pp.Created), Updated: parseStamp(pp.Updated),
			})
			positions[pp.ProductID] = append(positions[pp.ProductID], pp.Position)
		}
		if len(page.Objects) == 0 {
			break
		}
		after = page.Objects[len(page.Objects)-1].ID
	}
	ids := make([]string, 0, len(byID))
	for id := range byID {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		p := byID[id]
		pos := positions[id]
		order := make([]int, len(p.Photos))
		for i := range order {
			order[i] = i
		}
		slices.SortFunc(order, func(x, y int) int { return cmp.Compare(pos[x], pos[y]) })
		photos := make([]store.Photo, len(order))
		for i, j := range order {
			photos[i] = p.Photos[j]
		}
		p.Photos = photos
		if err := fn(*p); err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	return nil
}

// batchObject is one object of a batch write.
type batchObject struct {
	Class      string    `json:"class"`
	ID         string    `json:"id"`
	Properties any       `json:"properties"`
	Vector     []float32 `json:"vector,omitempty"`
}

// putObjects writes objects (replacing any with the same ids) at the write consistency
// level; it fails unless every object was written.
func (b *Backend) putObjects(ctx context.Context, objs []batchObject) error {
	for start := 0; start < len(objs); start += 500 {
		chunk := objs[start:min(start+500, len(objs))]
		var reply []struct {
			ID     string `json:"id"`
			Result struct {
				Errors *struct {
					Error []struct {
						Message string `json:"message"`
					} `json:"error"`
				} `json:"errors"`
			} `json:"result"`
		}
		q := url.Values{"consistency_level": {b.write}}
		if err := b.c.do(ctx, http.MethodPost, "/v1/batch/objects", q, map[string]any{"objects": chunk}, &reply); err != nil {
			return fmt.Errorf("write objects: %w", err)
		}
		for _, r := range reply {
			if e := r.Result.Errors; e != nil && len(e.Error) > 0 {
				return fmt.Errorf("write object %s: %s", r.ID, e.Error[0].Message)
			}
		}
		if len(reply) != len(chunk) {
			return fmt.Errorf("write objects: %d of %d acknowledged", len(reply), len(chunk))
		}
	}
	return nil
}

// deleteObjects deletes objects by id from a class at the write consistency level; an
// object already gone is not an error.
func (b *Backend) deleteObjects(ctx context.Context, class string, ids []string) error {
	q := url.Values{"consistency_level": {b.write}}
	for _, id := range ids {
		err := b.c.do(ctx, http.MethodDelete, "/v1/objects/"+class+"/"+id, q, nil, nil)
		if err != nil && !isStatus(err, http.StatusNotFound) {
			return fmt.Errorf("delete object %s: %w", id, err)
		}
	}
	return nil
}

// Put implements catalog.Backend. Weaviate has no transactions across objects: each
// product's new photo objects are written (all acknowledged at the write consistency level)
// before the photos it lost are deleted, so a failure halfway leaves the product with extra
// photos, never without its new ones; writing it again repairs it.
func (b *Backend) Put(ctx context.Context, products []store.Product) ([]store.Product, error) {
	valid := make([]store.Product, len(products))
	for i, p := range products {
		v, err := store.Validate(p, b.dim)
		if err != nil {
			if len(products) == 1 {
				return nil, err
			}
			return nil, fmt.Errorf("product %d (%q): %w", i, p.ID, err)
		}
		valid[i] = v
	}
	b.mu.Lock()
	state := make(map[string]store.Product)
	for _, p := range valid {
		if old, ok := b.products[p.ID]; ok {
			state[p.ID] = old
		}
	}
	next := b.nextKey
	b.mu.Unlock()

	// Photos that keep their stored vector are rewritten with it (a batch write replaces
	// the whole object), so read those vectors first.
	var keepKeys []index.Key
	for _, p := range valid {
		old := state[p.ID]
		for _, ph := range p.Photos {
			if ph.Vector == nil {
				if prev, ok := old.Photo(ph.ID); ok {
					keepKeys = append(keepKeys, prev.Key)
				}
			}
		}
	}
	kept, err := b.Vectors(ctx, keepKeys)
	if err != nil {
		return nil, err
	}
	keptVec := make(map[index.Key][]float32, len(keepKeys))
	for i, k := range keepKeys {
		keptVec[k] = kept[i]
	}

	now := time.Now().UTC()
	out := make([]store.Product, len(valid))
	var objs, keptObjs []batchObject
	var dropKept, dropPhotos []string
	for i, p := range valid {
		old, existed := state[p.ID]
		if existed {
			p.Created = old.Created
		} else if p.Created.IsZero() {
			p.Created = now
		}
		if p.Updated.IsZero() {
			p.Updated = now
		}
		p.Created, p.Updated = p.Created.UTC(), p.Updated.UTC()
		still := make(map[string]bool, len(p.Photos))
		vectors := make([][]float32, len(p.Photos))
		for j := range p.Photos {
			ph := &p.Photos[j]
			prev, had := old.Photo(ph.ID)
			still[ph.ID] = true
			if ph.Vector == nil {
				if !had || keptVec[prev.Key] == nil {
					return nil, fmt.Errorf("%w: photo %q of product %q has no vector and none is stored", store.ErrInvalidVector, ph.ID, p.ID)
				}
				ph.Key, ph.Created, ph.Updated, ph.KeptBytes = prev.Key, prev.Created, prev.Updated, prev.KeptBytes
				vectors[j] = keptVec[prev.Key]
				continue
			}
			if had {
				ph.Key, ph.Created = prev.Key, prev.Created
			} else {
				if next == ^uint32(0) {
					return nil, store.ErrKeysExhausted
				}
				ph.Key = next
				next++
				if ph.Created.IsZero() {
					ph.Created = now
				}
			}
			if ph.Updated.IsZero() {
				ph.Updated = now
			}
			ph.Created, ph.Updated = ph.Created.UTC(), ph.Updated.UTC()
			vectors[j] = ph.Vector
			ph.KeptBytes = len(ph.Kept)
			if len(ph.Kept) > 0 {
				keptObjs = append(keptObjs, batchObject{Class: b.cl.kept, ID: b.cl.photoUUID(ph.Key), Properties: map[string]any{
					"photo_key": ph.Key, "jpeg": base64.StdEncoding.EncodeToString(ph.Kept),
				}})
			} else if had && prev.KeptBytes > 0 {
				dropKept = append(dropKept, b.cl.photoUUID(ph.Key))
			}
		}
		for j := range p.Photos {
			objs = append(objs, batchObject{Class: b.cl.photos, ID: b.cl.photoUUID(p.Photos[j].Key), Properties: propsOf(p, j), Vector: vectors[j]})
		}
		for _, ph := range old.Photos {
			if !still[ph.ID] {
				dropPhotos = append(dropPhotos, b.cl.photoUUID(ph.Key))
				if ph.KeptBytes > 0 {
					dropKept = append(dropKept, b.cl.photoUUID(ph.Key))
				}
			}
		}
		stored := p
		stored.Photos = make([]store.Photo, len(p.Photos))
		for j, ph := range p.Photos {
			ph.Vector, ph.Kept = nil, nil
			stored.Photos[j] = ph
		}
		stored.Attributes = cloneMap(p.Attributes)
		out[i] = stored
		state[p.ID] = stored
	}
	// The key counter goes first: a key is never handed out twice, even after a crash.
	if next != b.nextKey {
		if err := b.putMeta(ctx, map[string][]byte{"next_key": []byte(strconv.FormatUint(uint64(next), 10))}); err != nil {
			return nil, err
		}
	}
	if err := b.putObjects(ctx, append(keptObjs, objs...)); err != nil {
		return nil, err
	}
	if err := b.deleteObjects(ctx, b.cl.photos, dropPhotos); err != nil {
		return nil, err
	}
	if err := b.deleteObjects(ctx, b.cl.kept, dropKept); err != nil {
		return nil, err
	}
	b.mu.Lock()
	b.nextKey = next
	for _, p := range out {
		b.products[p.ID] = p
	}
	b.mu.Unlock()
	return cloneProducts(out), nil
}

func cloneMap(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func cloneProducts(ps []store.Product) []store.Product {
	out := make([]store.Product, len(ps))
	for i, p := range ps {
		p.Photos = slices.Clone(p.Photos)
		p.Attributes = cloneMap(p.Attributes)
		out[i] = p
	}
	return out
}

// Delete implements catalog.Backend.
func (b *Backend) Delete(ctx context.Context, id string) (store.Product, error) {
	if err := ctx.Err(); err != nil {
		return store.Product{}, err
	}
	b.mu.Lock()
	p, ok := b.products[id]
	b.mu.Unlock()
	if !ok {
		return store.Product{}, fmt.Errorf("%w: product %q", store.ErrNotFound, id)
	}
	var photos, kept []string
	for _, ph := range p.Photos {
		photos = append(photos, b.cl.photoUUID(ph.Key))
		if ph.KeptBytes > 0 {
			kept = append(kept, b.cl.photoUUID(ph.Key))
		}
	}
	if err := b.deleteObjects(ctx, b.cl.photos, photos); err != nil {
		return store.Product{}, err
	}
	if err := b.deleteObjects(ctx, b.cl.kept, kept); err != nil {
		return store.Product{}, err
	}
	b.mu.Lock()
	delete(b.products, id)
	b.mu.Unlock()
	return cloneProducts([]store.Product{p})[0], nil
}

// where builds the Weaviate filter of a catalogue filter (nil when it admits everything).
func where(f catalog.Filter) map[string]any {
	var ops []map[string]any
	if len(f.Categories) > 0 {
		var either []map[string]any
		for _, c := range f.Categories {
			either = append(either, map[string]any{"path": []string{"category"}, "operator": "Equal", "valueText": c})
		}
		if len(either) == 1 {
			ops = append(ops, either[0])
		} else {
			ops = append(ops, map[string]any{"operator": "Or", "operands": either})
		}
	}
	if len(f.Attributes) > 0 {
		ops = append(ops, map[string]any{"path": []string{"attributes"}, "operator": "ContainsAll", "valueText": attributePairs(f.Attributes)})
	}
	for _, id := range f.ExcludeIDs {
		ops = append(ops, map[string]any{"path": []string{"product_id"}, "operator": "NotEqual", "valueText": id})
	}
	switch len(ops) {
	case 0:
		return nil
	case 1:
		return ops[0]
	}
	return map[string]any{"operator": "And", "operands": ops}
}

// gqlValue writes v as a GraphQL input value: JSON, with object keys unquoted and the
// operator names (enums) bare.
func gqlValue(v any) string {
	var sb strings.Builder
	writeGQL(&sb, v)
	return sb.String()
}

func writeGQL(sb *strings.Builder, v any) {
	switch x := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		sb.WriteByte('{')
		for i, k := range keys {
			if i > 0 {
				sb.WriteByte(',')
			}
			sb.WriteString(k)
			sb.WriteByte(':')
			if k == "operator" {
				sb.WriteString(x[k].(string))
				continue
			}
			writeGQL(sb, x[k])
		}
		sb.WriteByte('}')
	case []map[string]any:
		sb.WriteByte('[')
		for i, e := range x {
			if i > 0 {
				sb.WriteByte(',')
			}
			writeGQL(sb, e)
		}
		sb.WriteByte(']')
	default:
		raw, _ := json.Marshal(x)
		sb.Write(raw)
	}
}

// readLevel is the GraphQL consistency argument; Weaviate offers it only on replicated
// collections.
func (b *Backend) readLevel() string {
	if b.schema.replicas < 2 {
		return ""
	}
	return ",consistencyLevel:" + b.read
}

// Search implements catalog.Backend with a nearVector query; the filter becomes a where
// filter on the photos' product properties. Weaviate sets its search breadth per collection,
// so opt.EF is not passed (the collection's dynamic ef grows with n).
func (b *Backend) Search(ctx context.Context, q []float32, n int, opt catalog.PhotoQuery) ([]index.Neighbor, error) {
	vec, _ := json.Marshal(q)
	args := fmt.Sprintf("nearVector:{vector:%s},limit:%d%s", vec, n, b.readLevel())
	if w := where(opt.Filter); w != nil {
		args += ",where:" + gqlValue(w)
	}
	query := fmt.Sprintf("{Get{%s(%s){photo_key _additional{distance}}}}", b.cl.photos, args)
	var data struct {
		Get map[string][]struct {
			PhotoKey   int64 `json:"photo_key"`
			Additional struct {
				Distance float32 `json:"distance"`
			} `json:"_additional"`
		} `json:"Get"`
	}
	if err := b.c.graphQL(ctx, query, &data); err != nil {
		return nil, fmt.Errorf("weaviate: search: %w", err)
	}
	hits := data.Get[b.cl.photos]
	out := make([]index.Neighbor, len(hits))
	for i, h := range hits {
		// The dot distance is the negated inner product.
		out[i] = index.Neighbor{Key: index.Key(h.PhotoKey), Score: -h.Additional.Distance}
	}
	return out, nil
}

// Vectors implements catalog.Backend: a few keys by object id (a "more like this" of one
// product), more in GraphQL queries of a thousand keys each.
func (b *Backend) Vectors(ctx context.Context, keys []index.Key) ([][]float32, error) {
	out := make([][]float32, len(keys))
	if len(keys) <= 4 {
		for i, k := range keys {
			var obj struct {
				Vector []float32 `json:"vector"`
			}
			q := url.Values{"include": {"vector"}}
			if b.schema.replicas > 1 {
				q.Set("consistency_level", b.read)
			}
			err := b.c.do(ctx, http.MethodGet, "/v1/objects/"+b.cl.photos+"/"+b.cl.photoUUID(k), q, nil, &obj)
			if isStatus(err, http.StatusNotFound) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("weaviate: read vector: %w", err)
			}
			out[i] = obj.Vector
		}
		return out, nil
	}
	at := make(map[index.Key][]int, len(keys))
	for i, k := range keys {
		at[k] = append(at[k], i)
	}
	distinct := make([]int64, 0, len(at))
	for k := range at {
		distinct = append(distinct, int64(k))
	}
	slices.Sort(distinct)
	for start := 0; start < len(distinct); start += 1000 {
		chunk := distinct[start:min(start+1000, len(distinct))]
		w := map[string]any{"path": []string{"photo_key"}, "operator": "ContainsAny", "valueInt": chunk}
		query := fmt.Sprintf("{Get{%s(where:%s,limit:%d%s){photo_key _additional{vector}}}}",
			b.cl.photos, gqlValue(w), len(chunk), b.readLevel())
		var data struct {
			Get map[string][]struct {
				PhotoKey   int64 `json:"photo_key"`
				Additional struct {
					Vector []float32 `json:"vector"`
				} `json:"_additional"`
			} `json:"Get"`
		}
		if err := b.c.graphQL(ctx, query, &data); err != nil {
			return nil, fmt.Errorf("weaviate: read vectors: %w", err)
		}
		for _, h := range data.Get[b.cl.photos] {
			for _, i := range at[index.Key(h.PhotoKey)] {
				out[i] = h.Additional.Vector
			}
		}
	}
	return out, nil
}

// getObject reads one object's properties; nil, nil when it does not exist.
func (b *Backend) getObject(ctx context.Context, class, id string, props any) (bool, error) {
	var obj struct {
		Properties json.RawMessage `json:"properties"`
	}
	err := b.c.do(ctx, http.MethodGet, "/v1/objects/"+class+"/"+id, url.Values{"consistency_level": {b.read}}, nil, &obj)
	if isStatus(err, http.StatusNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return true, json.Unmarshal(obj.Properties, props)
}

// KeptPhoto implements catalog.Backend.
func (b *Backend) KeptPhoto(ctx context.Context, key index.Key) ([]byte, error) {
	var props struct {
		JPEG string `json:"jpeg"`
	}
	ok, err := b.getObject(ctx, b.cl.kept, b.cl.photoUUID(key), &props)
	if err != nil {
		return nil, fmt.Errorf("weaviate: kept photo: %w", err)
	}
	if !ok || props.JPEG == "" {
		return nil, fmt.Errorf("%w: kept photo of key %d", store.ErrNotFound, key)
	}
	return base64.StdEncoding.DecodeString(props.JPEG)
}

// getMeta reads a named record (nil if there is none).
func (b *Backend) getMeta(ctx context.Context, name string) ([]byte, error) {
	var props struct {
		Value string `json:"value"`
	}
	ok, err := b.getObject(ctx, b.cl.meta, metaUUID(name), &props)
	if err != nil || !ok {
		return nil, err
	}
	return base64.StdEncoding.DecodeString(props.Value)
}

// putMeta writes named records at the write consistency level.
func (b *Backend) putMeta(ctx context.Context, records map[string][]byte) error {
	objs := make([]batchObject, 0, len(records))
	for name, value := range records {
		objs = append(objs, batchObject{Class: b.cl.meta, ID: metaUUID(name), Properties: map[string]any{
			"name": name, "value": base64.StdEncoding.EncodeToString(value),
		}})
	}
	return b.putObjects(ctx, objs)
}

// Setting implements catalog.Backend.
func (b *Backend) Setting(ctx context.Context, name string) ([]byte, error) {
	v, err := b.getMeta(ctx, "setting:"+name)
	if err != nil {
		return nil, fmt.Errorf("weaviate: read setting %q: %w", name, err)
	}
	return v, nil
}

// SetSetting implements catalog.Backend.
func (b *Backend) SetSetting(ctx context.Context, name string, value []byte) error {
	if err := b.putMeta(ctx, map[string][]byte{"setting:" + name: value}); err != nil {
		return fmt.Errorf("weaviate: store setting %q: %w", name, err)
	}
	return nil
}

const decisionPrefix = "decision:"

func decisionName(a, bID string) string { return decisionPrefix + a + attrSep + bID }

// Decisions implements catalog.Backend: every decision record, ordered by pair.
func (b *Backend) Decisions(ctx context.Context) ([]store.Decision, error) {
	w := map[string]any{"path": []string{"name"}, "operator": "Like", "valueText": decisionPrefix + "*"}
	var out []store.Decision
	for offset := 0; ; offset += 1000 {
		query := fmt.Sprintf("{Get{%s(where:%s,limit:1000,offset:%d%s){name value}}}",
			b.cl.meta, gqlValue(w), offset, b.readLevel())
		var data struct {
			Get map[string][]struct {
				Name  string `json:"name"`
				Value string `json:"value"`
			} `json:"Get"`
		}
		if err := b.c.graphQL(ctx, query, &data); err != nil {
			return nil, fmt.Errorf("weaviate: read decisions: %w", err)
		}
		recs := data.Get[b.cl.meta]
		for _, r := range recs {
			raw, err := base64.StdEncoding.DecodeString(r.Value)
			if err != nil {
				return nil, fmt.Errorf("weaviate: decision %q: %w", r.Name, err)
			}
			var d store.Decision
			if err := json.Unmarshal(raw, &d); err != nil {
				return nil, fmt.Errorf("weaviate: decision %q: %w", r.Name, err)
			}
			out = append(out, d)
		}
		if len(recs) < 1000 {
			break
		}
	}
	slices.SortFunc(out, func(x, y store.Decision) int { return cmp.Or(cmp.Compare(x.A, y.A), cmp.Compare(x.B, y.B)) })
	return out, nil
}

// PutDecisions implements catalog.Backend.
func (b *Backend) PutDecisions(ctx context.Context, ds []store.Decision) ([]store.Decision, error) {
	out, err := store.PrepareDecisions(ds, time.Now())
	if err != nil {
		return nil, err
	}
	recs := make(map[string][]byte, len(out))
	for _, n := range out {
		raw, _ := json.Marshal(n)
		recs[decisionName(n.A, n.B)] = raw
	}
	if err := b.putMeta(ctx, recs); err != nil {
		return nil, fmt.Errorf("weaviate: store decisions: %w", err)
	}
	return out, nil
}

// DeleteDecision implements catalog.Backend.
func (b *Backend) DeleteDecision(ctx context.Context, a, bID string) error {
	if bID < a {
		a, bID = bID, a
	}
	id := metaUUID(decisionName(a, bID))
	var props struct{}
	ok, err := b.getObject(ctx, b.cl.meta, id, &props)
	if err != nil {
		return fmt.Errorf("weaviate: read decision: %w", err)
	}
	if !ok {
		return fmt.Errorf("%w: no decision on %q and %q", store.ErrNotFound, a, bID)
	}
	err = b.c.do(ctx, http.MethodDelete, "/v1/objects/"+b.cl.meta+"/"+id, url.Values{"consistency_level": {b.write}}, nil, nil)
	if isStatus(err, http.StatusNotFound) {
		return fmt.Errorf("%w: no decision on %q and %q", store.ErrNotFound, a, bID)
	}
	if err != nil {
		return fmt.Errorf("weaviate: delete decision: %w", err)
	}
	return nil
}

// Close implements catalog.Backend; the cluster keeps everything.
func (b *Backend) Close() error {
	b.c.http.CloseIdleConnections()
	return nil
}
