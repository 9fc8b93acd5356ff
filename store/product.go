package store

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash/crc32"
	"maps"
	"math"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Limits on what one product may hold. They keep a single record well inside a bbolt page
// budget and bound what a malicious request can make the server store.
const (
	MaxIDBytes             = 512
	MaxPhotoIDBytes        = 128
	MaxPhotos              = 64
	MaxCategoryBytes       = 256
	MaxTitleBytes          = 4096
	MaxImageURLBytes       = 4096
	MaxAttributes          = 128
	MaxAttributeKeyBytes   = 256
	MaxAttributeValueBytes = 4096
	// MaxKeptBytes bounds one kept photo (a JPEG of the model's input size is far smaller).
	MaxKeptBytes = 4 << 20
)

// Product is one catalogue product: its metadata and its photos.
type Product struct {
	// ID is the catalogue's own product id, the product's identity in the store.
	ID string
	// Category is free text; "" is a category of its own for counting.
	Category string
	// Title is a human-readable name.
	Title string
	// Attributes are free key/value pairs.
	Attributes map[string]string
	// Created is when the id was first stored; on input, zero means now. Kept on replace.
	Created time.Time
	// Updated is when the product was last written; on input, zero means now.
	Updated time.Time
	// Photos are the product's photos, 1..MaxPhotos of them, in the caller's order.
	Photos []Photo
}

// Photo is one photo of a product. Each photo has its own vector and graph key.
type Photo struct {
	// ID names the photo inside its product (stable across writes); 1..MaxPhotoIDBytes of
	// UTF-8 without control characters or '/'.
	ID string
	// Key is the compact key the index uses; assigned by the store, ignored on input.
	Key uint32
	// ImageURL is where the photo came from, if the caller knows.
	ImageURL string
	// SHA256 is the hex sha256 of the photo's bytes ("" for a photo stored from a vector).
	SHA256 string
	// PHash is the photo's 64-bit perceptual hash and PHashMirror the hash of the photo
	// mirrored left to right; meaningful only when HasPHash is set.
	PHash       uint64
	PHashMirror uint64
	// HasPHash says whether PHash was computed (not for photos stored from a vector).
	HasPHash bool
	// KeptBytes is the size of the kept photo in the store (0: none kept).
	KeptBytes int
	// Created is when this photo id was first stored in its product; kept on replace.
	Created time.Time
	// Updated is when the photo's bytes or vector last changed.
	Updated time.Time

	// Vector is the photo's embedding, exactly the store's dimension. On input, nil keeps
	// the vector (and kept photo) already stored under this photo id; on output it is
	// only filled by the methods that say so.
	Vector []float32
	// Kept is the kept photo (JPEG) to store with a new Vector; nil stores none. Input only:
	// read a kept photo back with KeptPhoto.
	Kept []byte
}

// Photo returns the product's photo with that id.
func (p Product) Photo(id string) (Photo, bool) {
	for _, ph := range p.Photos {
		if ph.ID == id {
			return ph, true
		}
	}
	return Photo{}, false
}

// Validate checks a product as a store of dimension dim would before writing it, and
// returns it with every sha256 normalised to lower case. Other backends that keep products
// call it so that every backend accepts and refuses the same products.
func Validate(p Product, dim int) (Product, error) {
	if err := ValidateID(p.ID); err != nil {
		return p, err
	}
	fields := []struct {
		name  string
		value string
		max   int
	}{
		{"category", p.Category, MaxCategoryBytes},
		{"title", p.Title, MaxTitleBytes},
	}
	for _, f := range fields {
		if err := validateText(f.name, f.value, f.max); err != nil {
			return p, err
		}
	}
	if len(p.Attributes) > MaxAttributes {
		return p, fmt.Errorf("%w: %d attributes, at most %d", ErrInvalidMetadata, len(p.Attributes), MaxAttributes)
	}
	for k, v := range p.Attributes {
		if k == "" {
			return p, fmt.Errorf("%w: empty attribute name", ErrInvalidMetadata)
		}
		if err := validateText("attribute name", k, MaxAttributeKeyBytes); err != nil {
			return p, err
		}
		if err := validateText("attribute "+k, v, MaxAttributeValueBytes); err != nil {
			return p, err
		}
	}
	if err := validateTimes(p.Created, p.Updated); err != nil {
		return p, err
	}
	switch {
	case len(p.Photos) == 0:
		return p, fmt.Errorf("%w: product %q has no photo", ErrInvalidMetadata, p.ID)
	case len(p.Photos) > MaxPhotos:
		return p, fmt.Errorf("%w: product %q has %d photos, at most %d", ErrInvalidMetadata, p.ID, len(p.Photos), MaxPhotos)
	}
	photos := make([]Photo, len(p.Photos))
	seen := make(map[string]bool, len(p.Photos))
	for i, ph := range p.Photos {
		if err := ValidatePhotoID(ph.ID); err != nil {
			return p, err
		}
		if seen[ph.ID] {
			return p, fmt.Errorf("%w: photo id %q appears twice", ErrInvalidPhotoID, ph.ID)
		}
		seen[ph.ID] = true
		if ph.Vector != nil {
			if len(ph.Vector) != dim {
				return p, fmt.Errorf("%w: photo %q has dimension %d, store holds %d", ErrInvalidVector, ph.ID, len(ph.Vector), dim)
			}
			for j, v := range ph.Vector {
				if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
					return p, fmt.Errorf("%w: photo %q element %d is %v", ErrInvalidVector, ph.ID, j, v)
				}
			}
		}
		if ph.Kept != nil && ph.Vector == nil {
			return p, fmt.Errorf("%w: photo %q has a kept photo but no vector", ErrInvalidMetadata, ph.ID)
		}
		if len(ph.Kept) > MaxKeptBytes {
			return p, fmt.Errorf("%w: photo %q kept photo is %d bytes, at most %d", ErrInvalidMetadata, ph.ID, len(ph.Kept), MaxKeptBytes)
		}
		if err := validateText("image URL", ph.ImageURL, MaxImageURLBytes); err != nil {
			return p, err
		}
		if err := validateTimes(ph.Created, ph.Updated); err != nil {
			return p, err
		}
		if ph.SHA256 != "" {
			if len(ph.SHA256) != 64 {
				return p, fmt.Errorf("%w: photo %q sha256 must be 64 hex digits, got %d characters", ErrInvalidMetadata, ph.ID, len(ph.SHA256))
			}
			if _, err := hex.DecodeString(ph.SHA256); err != nil {
				return p, fmt.Errorf("%w: photo %q sha256 is not hex", ErrInvalidMetadata, ph.ID)
			}
			ph.SHA256 = strings.ToLower(ph.SHA256)
		}
		photos[i] = ph
	}
	p.Photos = photos
	return p, nil
}

func validateTimes(ts ...time.Time) error {
	for _, t := range ts {
		// Times are stored as Unix nanoseconds, which cover 1678 to 2262.
		if !t.IsZero() && (t.Year() < 1700 || t.Year() > 2200) {
			return fmt.Errorf("%w: time %v out of range", ErrInvalidMetadata, t)
		}
	}
	return nil
}

// ValidateID reports whether id is acceptable as a product id (ErrInvalidID if not). Callers
// that do expensive work before writing (embedding a photo) check with it first.
func ValidateID(id string) error {
	if err := validateName(id, MaxIDBytes); err != "" {
		return fmt.Errorf("%w: %s", ErrInvalidID, err)
	}
	return nil
}

// ValidatePhotoID reports whether id is acceptable as a photo id (ErrInvalidPhotoID if not).
// A '/' is refused so that a photo id can be one segment of a URL path.
func ValidatePhotoID(id string) error {
	if err := validateName(id, MaxPhotoIDBytes); err != "" {
		return fmt.Errorf("%w: %s", ErrInvalidPhotoID, err)
	}
	if strings.Contains(id, "/") {
		return fmt.Errorf("%w: %q contains '/'", ErrInvalidPhotoID, id)
	}
	return nil
}

func validateName(id string, max int) string {
	switch {
	case id == "":
		return "empty"
	case len(id) > max:
		return fmt.Sprintf("%d bytes, at most %d", len(id), max)
	case !utf8.ValidString(id):
		return "not valid UTF-8"
	case strings.IndexFunc(id, unicode.IsControl) >= 0:
		return "contains a control character"
	}
	return ""
}

func validateText(name, value string, max int) error {
	if len(value) > max {
		return fmt.Errorf("%w: %s is %d bytes, at most %d", ErrInvalidMetadata, name, len(value), max)
	}
	if !utf8.ValidString(value) {
		return fmt.Errorf("%w: %s is not valid UTF-8", ErrInvalidMetadata, name)
	}
	return nil
}

// productFormatV2 is the first byte of every product record of schema 2.
const productFormatV2 = 2

// castagnoli is the CRC-32C table every record's checksum uses.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// encodeProduct writes a product's record (not its ID, which is the bucket key, nor the
// photos' vectors and kept photos, which live in buckets of their own):
//
//	byte    format (2)
//	varint  created, updated (unix nanoseconds)
//	string  category, title  (uvarint length + bytes)
//	uvarint attribute count, then name, value strings sorted by name
//	uvarint photo count, then per photo:
//	        string id; uint32 key (big endian); string image URL, sha256;
//	        byte flags (1: has pHash); uint64 pHash, uint64 mirror pHash (big endian);
//	        uvarint kept bytes;
//	        varint created, updated
//	uint32  CRC-32C of everything before it (big endian)
//
// A binary layout, not JSON, because start-up decodes every record.
func encodeProduct(p Product) []byte {
	size := 1 + 2*binary.MaxVarintLen64 + 3*binary.MaxVarintLen32 + len(p.Category) + len(p.Title) + 4
	for k, v := range p.Attributes {
		size += 2*binary.MaxVarintLen32 + len(k) + len(v)
	}
	for _, ph := range p.Photos {
		size += 3*binary.MaxVarintLen32 + len(ph.ID) + len(ph.ImageURL) + len(ph.SHA256) + 4 + 1 + 16 + 3*binary.MaxVarintLen64
	}
	b := make([]byte, 0, size)
	b = append(b, productFormatV2)
	b = binary.AppendVarint(b, p.Created.UnixNano())
	b = binary.AppendVarint(b, p.Updated.UnixNano())
	b = appendString(b, p.Category)
	b = appendString(b, p.Title)
	b = binary.AppendUvarint(b, uint64(len(p.Attributes)))
	for _, k := range slices.Sorted(maps.Keys(p.Attributes)) {
		b = appendString(b, k)
		b = appendString(b, p.Attributes[k])
	}
	b = binary.AppendUvarint(b, uint64(len(p.Photos)))
	for _, ph := range p.Photos {
		b = appendString(b, ph.ID)
		b = binary.BigEndian.AppendUint32(b, ph.Key)
		b = appendString(b, ph.ImageURL)
		b = appendString(b, ph.SHA256)
		var flags byte
		if ph.HasPHash {
			flags |= 1
		}
		b = append(b, flags)
		b = binary.BigEndian.AppendUint64(b, ph.PHash)
		b = binary.BigEndian.AppendUint64(b, ph.PHashMirror)
		b = binary.AppendUvarint(b, uint64(ph.KeptBytes))
		b = binary.AppendVarint(b, ph.Created.UnixNano())
		b = binary.AppendVarint(b, ph.Updated.UnixNano())
	}
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// decodeProduct is the inverse of encodeProduct. It copies everything it keeps, so data may
// be memory owned by a bbolt transaction. It never panics on hostile input, and a record
// whose checksum does not match is ErrCorrupt.
func decodeProduct(id string, data []byte) (Product, error) {
	if len(data) < 5 {
		return Product{}, fmt.Errorf("%w: product %q: record of %d bytes", ErrCorrupt, id, len(data))
	}
	body, sum := data[:len(data)-4], binary.BigEndian.Uint32(data[len(data)-4:])
	if crc32.Checksum(body, castagnoli) != sum {
		return Product{}, fmt.Errorf("%w: product %q: checksum mismatch", ErrCorrupt, id)
	}
	d := decoder{data: body}
	if format := d.byte(); d.err == nil && format != productFormatV2 {
		return Product{}, fmt.Errorf("%w: product %q has unknown format %d", ErrCorrupt, id, format)
	}
	p := Product{ID: id}
	p.Created = time.Unix(0, d.varint()).UTC()
	p.Updated = time.Unix(0, d.varint()).UTC()
	p.Category = d.string(MaxCategoryBytes)
	p.Title = d.string(MaxTitleBytes)
	p.Attributes = d.attributes()
	n := d.uvarint()
	if d.err == nil && (n == 0 || n > MaxPhotos) {
		d.fail("photo count")
	}
	for i := uint64(0); i < n && d.err == nil; i++ {
		var ph Photo
		ph.ID = d.string(MaxPhotoIDBytes)
		ph.Key = d.uint32()
		ph.ImageURL = d.string(MaxImageURLBytes)
		ph.SHA256 = d.string(64)
		flags := d.byte()
		ph.HasPHash = flags&1 != 0
		ph.PHash = d.uint64()
		ph.PHashMirror = d.uint64()
		ph.KeptBytes = int(d.uvarint())
		ph.Created = time.Unix(0, d.varint()).UTC()
		ph.Updated = time.Unix(0, d.varint()).UTC()
		p.Photos = append(p.Photos, ph)
	}
	if d.err == nil && len(d.data) != 0 {
		d.fail("trailing bytes")
	}
	if d.err != nil {
		return Product{}, fmt.Errorf("%w: product %q: %w", ErrCorrupt, id, d.err)
	}
	return p, nil
}

// cloneProduct returns p with its maps and slices copied, so callers cannot alias store state.
func cloneProduct(p Product) Product {
	p.Attributes = maps.Clone(p.Attributes)
	p.Photos = slices.Clone(p.Photos)
	for i := range p.Photos {
		p.Photos[i].Vector = slices.Clone(p.Photos[i].Vector)
		p.Photos[i].Kept = nil
	}
	return p
}
