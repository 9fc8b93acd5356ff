package store

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
	"unsafe"
)

// Limits on what one item may hold. They keep a single record well inside a bbolt page budget
// and bound what a malicious request can make the server store.
const (
	MaxIDBytes             = 512
	MaxCategoryBytes       = 256
	MaxTitleBytes          = 4096
	MaxImageURLBytes       = 4096
	MaxAttributes          = 128
	MaxAttributeKeyBytes   = 256
	MaxAttributeValueBytes = 4096
)

// Item is one catalogue product: its metadata and its embedding.
type Item struct {
	// ID is the catalogue's own product id, the item's identity in the store.
	ID string
	// Key is the compact key the index uses; assigned by the store, ignored on input.
	Key uint32
	// Category is free text; "" is a category of its own for counting.
	Category string
	// Title is a human-readable name.
	Title string
	// ImageURL is where the image came from, if the caller knows.
	ImageURL string
	// Attributes are free key/value pairs.
	Attributes map[string]string
	// ImageSHA256 is the hex sha256 of the image bytes ("" when unknown), stored lower case.
	ImageSHA256 string
	// Created is when the id was first stored; on input, zero means now. Kept on replace.
	Created time.Time
	// Updated is when the item was last written; on input, zero means now.
	Updated time.Time
	// Vector is the item's embedding, exactly the store's dimension.
	Vector []float32
}

// validate checks an item for a store of dimension dim and returns it with the sha256
// normalised to lower case.
func validate(it Item, dim int) (Item, error) {
	if err := ValidateID(it.ID); err != nil {
		return it, err
	}
	if len(it.Vector) != dim {
		return it, fmt.Errorf("%w: dimension %d, store holds %d", ErrInvalidVector, len(it.Vector), dim)
	}
	for i, v := range it.Vector {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return it, fmt.Errorf("%w: element %d is %v", ErrInvalidVector, i, v)
		}
	}
	fields := []struct {
		name  string
		value string
		max   int
	}{
		{"category", it.Category, MaxCategoryBytes},
		{"title", it.Title, MaxTitleBytes},
		{"image URL", it.ImageURL, MaxImageURLBytes},
	}
	for _, f := range fields {
		if err := validateText(f.name, f.value, f.max); err != nil {
			return it, err
		}
	}
	if len(it.Attributes) > MaxAttributes {
		return it, fmt.Errorf("%w: %d attributes, at most %d", ErrInvalidMetadata, len(it.Attributes), MaxAttributes)
	}
	for k, v := range it.Attributes {
		if k == "" {
			return it, fmt.Errorf("%w: empty attribute name", ErrInvalidMetadata)
		}
		if err := validateText("attribute name", k, MaxAttributeKeyBytes); err != nil {
			return it, err
		}
		if err := validateText("attribute "+k, v, MaxAttributeValueBytes); err != nil {
			return it, err
		}
	}
	for _, t := range []struct {
		name string
		at   time.Time
	}{{"created", it.Created}, {"updated", it.Updated}} {
		// Times are stored as Unix nanoseconds, which cover 1678 to 2262.
		if !t.at.IsZero() && (t.at.Year() < 1700 || t.at.Year() > 2200) {
			return it, fmt.Errorf("%w: %s time %v out of range", ErrInvalidMetadata, t.name, t.at)
		}
	}
	if it.ImageSHA256 != "" {
		if len(it.ImageSHA256) != 64 {
			return it, fmt.Errorf("%w: image sha256 must be 64 hex digits, got %d characters", ErrInvalidMetadata, len(it.ImageSHA256))
		}
		if _, err := hex.DecodeString(it.ImageSHA256); err != nil {
			return it, fmt.Errorf("%w: image sha256 is not hex", ErrInvalidMetadata)
		}
		it.ImageSHA256 = strings.ToLower(it.ImageSHA256)
	}
	return it, nil
}

// ValidateID reports whether id is acceptable as a product id (ErrInvalidID if not). Callers
// that do expensive work before writing (embedding a photo) check with it first.
func ValidateID(id string) error {
	switch {
	case id == "":
		return fmt.Errorf("%w: empty", ErrInvalidID)
	case len(id) > MaxIDBytes:
		return fmt.Errorf("%w: %d bytes, at most %d", ErrInvalidID, len(id), MaxIDBytes)
	case !utf8.ValidString(id):
		return fmt.Errorf("%w: not valid UTF-8", ErrInvalidID)
	case strings.IndexFunc(id, unicode.IsControl) >= 0:
		return fmt.Errorf("%w: contains a control character", ErrInvalidID)
	}
	return nil
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

// itemFormatV1 is the first byte of every encoded item. A later format gets a new number and
// decodeItem keeps reading the old ones.
const itemFormatV1 = 1

// encodeItem writes an item's metadata (not its ID, which is the bucket key, nor its vector,
// which lives in the vectors bucket):
//
//	byte    format (1)
//	uint32  key, big endian
//	varint  created, unix nanoseconds
//	varint  updated, unix nanoseconds
//	string  category, title, image URL, image sha256  (uvarint length + bytes)
//	uvarint attribute count, then name, value strings sorted by name
//
// A binary layout, not JSON, because ForEach decodes every item when an index is rebuilt.
func encodeItem(it Item) []byte {
	size := 1 + 4 + 2*binary.MaxVarintLen64 + 5*binary.MaxVarintLen32 +
		len(it.Category) + len(it.Title) + len(it.ImageURL) + len(it.ImageSHA256)
	for k, v := range it.Attributes {
		size += 2*binary.MaxVarintLen32 + len(k) + len(v)
	}
	b := make([]byte, 0, size)
	b = append(b, itemFormatV1)
	b = binary.BigEndian.AppendUint32(b, it.Key)
	b = binary.AppendVarint(b, it.Created.UnixNano())
	b = binary.AppendVarint(b, it.Updated.UnixNano())
	for _, s := range []string{it.Category, it.Title, it.ImageURL, it.ImageSHA256} {
		b = appendString(b, s)
	}
	b = binary.AppendUvarint(b, uint64(len(it.Attributes)))
	for _, k := range slices.Sorted(maps.Keys(it.Attributes)) {
		b = appendString(b, k)
		b = appendString(b, it.Attributes[k])
	}
	return b
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// decodeItem is the inverse of encodeItem. It copies everything it keeps, so data may be
// memory owned by a bbolt transaction. It never panics on hostile input.
func decodeItem(id string, data []byte) (Item, error) {
	d := decoder{data: data}
	format := d.byte()
	if d.err == nil && format != itemFormatV1 {
		return Item{}, fmt.Errorf("%w: item %q has unknown format %d", ErrCorrupt, id, format)
	}
	it := Item{ID: id}
	it.Key = d.uint32()
	it.Created = time.Unix(0, d.varint()).UTC()
	it.Updated = time.Unix(0, d.varint()).UTC()
	it.Category = d.string(MaxCategoryBytes)
	it.Title = d.string(MaxTitleBytes)
	it.ImageURL = d.string(MaxImageURLBytes)
	it.ImageSHA256 = d.string(64)
	n := d.uvarint()
	if d.err == nil && n > MaxAttributes {
		d.fail("attribute count")
	}
	if d.err == nil && n > 0 {
		it.Attributes = make(map[string]string, n)
		prev := ""
		for i := uint64(0); i < n && d.err == nil; i++ {
			k := d.string(MaxAttributeKeyBytes)
			v := d.string(MaxAttributeValueBytes)
			// Names are written sorted and unique; anything else was not written by encodeItem.
			if d.err == nil && i > 0 && k <= prev {
				d.fail("attribute order")
			}
			it.Attributes[k] = v
			prev = k
		}
	}
	if d.err == nil && len(d.data) != 0 {
		d.fail("trailing bytes")
	}
	if d.err != nil {
		return Item{}, fmt.Errorf("%w: item %q: %w", ErrCorrupt, id, d.err)
	}
	return it, nil
}

// decoder reads fields in order and remembers the first failure, so decodeItem stays linear.
type decoder struct {
	data []byte
	err  error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("bad %s", what)
	}
}

func (d *decoder) byte() byte {
	if d.err != nil || len(d.data) < 1 {
		d.fail("length")
		return 0
	}
	b := d.data[0]
	d.data = d.data[1:]
	return b
}

func (d *decoder) uint32() uint32 {
	if d.err != nil || len(d.data) < 4 {
		d.fail("key")
		return 0
	}
	v := binary.BigEndian.Uint32(d.data)
	d.data = d.data[4:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.data)
	if n <= 0 {
		d.fail("varint")
		return 0
	}
	d.data = d.data[n:]
	return v
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.data)
	if n <= 0 {
		d.fail("uvarint")
		return 0
	}
	d.data = d.data[n:]
	return v
}

func (d *decoder) string(max int) string {
	n := d.uvarint()
	if d.err != nil {
		return ""
	}
	if n > uint64(max) || n > uint64(len(d.data)) {
		d.fail("string length")
		return ""
	}
	s := string(d.data[:n])
	d.data = d.data[n:]
	return s
}

// encodeVector writes v as little-endian float32s.
func encodeVector(v []float32) []byte {
	b := make([]byte, 4*len(v))
	if hostIsLittleEndian() && len(v) > 0 {
		copy(b, unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(v))), 4*len(v)))
		return b
	}
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return b
}

// hostIsLittleEndian reports whether float32s sit in memory in the store's byte order.
func hostIsLittleEndian() bool {
	return binary.NativeEndian.Uint16([]byte{1, 0}) == 1
}

// decodeVector copies a little-endian float32 vector out of b (which may be bbolt memory).
func decodeVector(b []byte, dim int) ([]float32, error) {
	if len(b) != 4*dim {
		return nil, fmt.Errorf("%w: vector of %d bytes, want %d", ErrCorrupt, len(b), 4*dim)
	}
	v := make([]float32, dim)
	if hostIsLittleEndian() {
		// The stored layout is the in-memory layout: one copy instead of dim conversions.
		copy(unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(v))), 4*dim), b)
		return v, nil
	}
	for i := range v {
		v[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return v, nil
}

// cloneItem returns it with its map and vector copied, so callers cannot alias store state.
func cloneItem(it Item) Item {
	it.Attributes = maps.Clone(it.Attributes)
	it.Vector = slices.Clone(it.Vector)
	return it
}
