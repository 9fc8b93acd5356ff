package weaviate

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"
)

// The three collections of one catalogue. Their names end in a tag of the model identity, so
// vectors of two models never share a collection.
type classes struct {
	photos, kept, meta string
	tag                uint32 // the identity's tag, also the high bits of photo object ids
}

func classesFor(prefix, modelIdentity string) classes {
	sum := sha256.Sum256([]byte(modelIdentity))
	id := hex.EncodeToString(sum[:6])
	return classes{
		photos: prefix + "Photos_" + id, kept: prefix + "Kept_" + id, meta: prefix + "Meta_" + id,
		tag: uint32(sum[0])<<24 | uint32(sum[1])<<16 | uint32(sum[2])<<8 | uint32(sum[3]),
	}
}

// photoUUID is the object id of a photo key, in the photos and the kept collection alike.
func (cl classes) photoUUID(key uint32) string {
	return fmt.Sprintf("%08x-0000-4000-8000-%012x", cl.tag, key)
}

// metaUUID is the object id of a named meta record.
func metaUUID(name string) string {
	s := sha256.Sum256([]byte(name))
	s[6] = s[6]&0x0f | 0x50 // a name-based UUID
	s[8] = s[8]&0x3f | 0x80
	h := hex.EncodeToString(s[:16])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// property is one property of a collection definition.
type property struct {
	Name            string   `json:"name"`
	DataType        []string `json:"dataType"`
	Tokenization    string   `json:"tokenization,omitempty"`
	IndexFilterable *bool    `json:"indexFilterable,omitempty"`
	IndexSearchable *bool    `json:"indexSearchable,omitempty"`
}

var no = new(bool)

// filterable is a text property matched whole (ids, categories, attribute pairs).
func filterable(name, dataType string) property {
	return property{Name: name, DataType: []string{dataType}, Tokenization: "field", IndexSearchable: no}
}

// stored is a property kept for reading back, never filtered or searched on.
func stored(name, dataType string) property {
	p := property{Name: name, DataType: []string{dataType}, IndexFilterable: no, IndexSearchable: no}
	if dataType != "text" {
		p.IndexSearchable = nil
	}
	return p
}

// schemaOptions are the collection settings taken from the backend's Config.
type schemaOptions struct {
	replicas, shards            int
	m, efConstruction, efSearch int
}

func (o schemaOptions) class(name string, props []property, vectors bool) map[string]any {
	vic := map[string]any{"skip": true}
	if vectors {
		// dot: the catalogue's vectors are unit length, and distance = -inner product
		// gives back exact scores. maxConnections is layer 0's link count, 2M in HNSW terms.
		vic = map[string]any{
			"distance": "dot", "efConstruction": o.efConstruction, "maxConnections": 2 * o.m,
			"ef": -1, "dynamicEfMin": max(o.efSearch, 100),
		}
	}
	return map[string]any{
		"class":             name,
		"vectorizer":        "none",
		"properties":        props,
		"vectorIndexType":   "hnsw",
		"vectorIndexConfig": vic,
		// Async replication repairs a replica that missed writes while it was down, and
		// with time-based resolution the latest change wins, deletes included (the
		// default leaves a delete that one replica missed unresolved, the object alive).
		"replicationConfig": map[string]any{
			"factor": o.replicas, "asyncEnabled": o.replicas > 1, "deletionStrategy": "TimeBasedResolution",
		},
		"shardingConfig": map[string]any{"desiredCount": o.shards},
	}
}

func photoProperties() []property {
	return []property{
		filterable("product_id", "text"),
		filterable("category", "text"),
		filterable("attributes", "text[]"),
		{Name: "photo_key", DataType: []string{"int"}},
		stored("photo_id", "text"),
		stored("position", "int"),
		stored("title", "text"),
		stored("attributes_json", "text"),
		stored("image_url", "text"),
		stored("sha256", "text"),
		stored("phash", "text"),
		stored("phash_mirror", "text"),
		stored("has_phash", "boolean"),
		stored("kept_bytes", "int"),
		stored("created", "text"),
		stored("updated", "text"),
		stored("product_created", "text"),
		stored("product_updated", "text"),
	}
}

// ensureClasses creates the catalogue's collections that do not exist yet. Creating one that
// another process just created is not an error.
func (b *Backend) ensureClasses(ctx context.Context, o schemaOptions) error {
	defs := []map[string]any{
		o.class(b.cl.photos, photoProperties(), true),
		o.class(b.cl.kept, []property{{Name: "photo_key", DataType: []string{"int"}}, stored("jpeg", "blob")}, false),
		o.class(b.cl.meta, []property{filterable("name", "text"), stored("value", "blob")}, false),
	}
	for _, def := range defs {
		name := def["class"].(string)
		err := b.c.do(ctx, http.MethodGet, "/v1/schema/"+name, nil, nil, nil)
		if err == nil {
			continue
		}
		if !isStatus(err, http.StatusNotFound) {
			return fmt.Errorf("read collection %s: %w", name, err)
		}
		if err := b.c.do(ctx, http.MethodPost, "/v1/schema", nil, def, nil); err != nil &&
			!(isStatus(err, http.StatusUnprocessableEntity) && strings.Contains(err.Error(), "already exists")) {
			return fmt.Errorf("create collection %s: %w", name, err)
		}
		b.log.Info("weaviate collection created", "class", name, "replicas", o.replicas, "shards", o.shards)
	}
	return nil
}
