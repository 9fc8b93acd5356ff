package adapt

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"maps"
	"math"
	"slices"
	"unicode/utf8"
)

// Projection maps an embedding to L2(P(L2(v) - mean)). It is immutable, so one value may be
// applied from many goroutines.
type Projection struct {
	in, out int
	mean    []float32
	matrix  []float32 // out rows of in, row-major
	offset  []float32 // P mean, so Apply does one pass over the matrix
	meta    map[string]string
	encoded []byte
	sum     string
}

// File format limits. A file beyond them is refused before anything is allocated for it.
const (
	// MaxDim bounds the input and output dimensions.
	MaxDim = 1 << 14
	// MaxMeta bounds the number of metadata entries.
	MaxMeta = 64
	// MaxMetaBytes bounds one metadata key or value.
	MaxMetaBytes = 4096
)

// magic opens every projection file; the version after it changes with the layout.
const (
	magic   = "LKPROJ\r\n"
	version = 1
)

// ErrFormat reports a projection file that is not one, or is damaged.
var ErrFormat = errors.New("adapt: not a valid projection file")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func newProjection(in, out int, mean, matrix []float32, meta map[string]string) (*Projection, error) {
	if in < 1 || in > MaxDim || out < 1 || out > in {
		return nil, fmt.Errorf("adapt: dimensions %d -> %d outside 1..%d", in, out, MaxDim)
	}
	if len(mean) != in || len(matrix) != in*out {
		return nil, fmt.Errorf("adapt: mean of %d and matrix of %d values for %d -> %d", len(mean), len(matrix), in, out)
	}
	if len(meta) > MaxMeta {
		return nil, fmt.Errorf("adapt: %d metadata entries, at most %d", len(meta), MaxMeta)
	}
	for k, v := range meta {
		if err := checkMeta(k, v); err != nil {
			return nil, err
		}
	}
	for _, x := range mean {
		if !finite(x) {
			return nil, fmt.Errorf("adapt: non-finite mean")
		}
	}
	for _, x := range matrix {
		if !finite(x) {
			return nil, fmt.Errorf("adapt: non-finite matrix")
		}
	}
	p := &Projection{in: in, out: out, mean: mean, matrix: matrix, meta: maps.Clone(meta), offset: make([]float32, out)}
	if p.meta == nil {
		p.meta = map[string]string{}
	}
	for k := range out {
		row := matrix[k*in : (k+1)*in]
		var s float64
		for i, x := range row {
			s += float64(x) * float64(mean[i])
		}
		p.offset[k] = float32(s)
	}
	p.encoded = p.encode()
	h := sha256.Sum256(p.encoded)
	p.sum = "sha256:" + hex.EncodeToString(h[:])
	return p, nil
}

func checkMeta(k, v string) error {
	if k == "" || len(k) > MaxMetaBytes || len(v) > MaxMetaBytes || !utf8.ValidString(k) || !utf8.ValidString(v) {
		return fmt.Errorf("adapt: metadata %.40q: keys 1..%d bytes, values up to %d, UTF-8", k, MaxMetaBytes, MaxMetaBytes)
	}
	return nil
}

func finite(x float32) bool { return !math.IsNaN(float64(x)) && !math.IsInf(float64(x), 0) }

// In is the input dimension (the model's).
func (p *Projection) In() int { return p.in }

// Out is the projected dimension.
func (p *Projection) Out() int { return p.out }

// Mean returns a copy of the training mean the projection subtracts.
func (p *Projection) Mean() []float32 { return slices.Clone(p.mean) }

// Meta returns a copy of what the projection records about its making.
func (p *Projection) Meta() map[string]string { return maps.Clone(p.meta) }

// Checksum names the projection by the SHA-256 of its file bytes, "sha256:<hex>": two
// projections with one checksum transform every vector identically, so a model identity
// that includes it tells vectors of different projections apart.
func (p *Projection) Checksum() string { return p.sum }

// Apply returns L2(P(L2(v) - mean)). It fails on a vector of the wrong length, a non-finite
// or zero vector, and one the projection maps to zero.
func (p *Projection) Apply(v []float32) ([]float32, error) {
	dst := make([]float32, p.out)
	if err := p.ApplyTo(dst, v); err != nil {
		return nil, err
	}
	return dst, nil
}

// ApplyTo is Apply into dst, which must have Out elements.
func (p *Projection) ApplyTo(dst, v []float32) error {
	if len(v) != p.in {
		return fmt.Errorf("adapt: vector of %d dimensions for a projection from %d", len(v), p.in)
	}
	if len(dst) != p.out {
		return fmt.Errorf("adapt: destination of %d for a projection to %d", len(dst), p.out)
	}
	var n float64
	for _, x := range v {
		n += float64(x) * float64(x)
	}
	if !(n > 0) || math.IsInf(n, 0) {
		return fmt.Errorf("adapt: zero or non-finite vector")
	}
	inv := float32(1 / math.Sqrt(n))
	var out float64
	for k := range p.out {
		s := dot(p.matrix[k*p.in:(k+1)*p.in], v)*inv - p.offset[k]
		dst[k] = s
		out += float64(s) * float64(s)
	}
	if !(out > 0) {
		return fmt.Errorf("adapt: the projection maps the vector to zero")
	}
	scale := float32(1 / math.Sqrt(out))
	for k := range dst {
		dst[k] *= scale
	}
	return nil
}

// dot keeps four partial sums: the compiler does not reassociate float additions, and one
// chain of dependent adds is what would bound the loop otherwise.
func dot(a, b []float32) float32 {
	b = b[:len(a)]
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+4 <= len(a); i += 4 {
		s0 += a[i] * b[i]
		s1 += a[i+1] * b[i+1]
		s2 += a[i+2] * b[i+2]
		s3 += a[i+3] * b[i+3]
	}
	for ; i < len(a); i++ {
		s0 += a[i] * b[i]
	}
	return (s0 + s1) + (s2 + s3)
}

// The file, little-endian:
//
//	magic "LKPROJ\r\n", version uint32, in uint32, out uint32, entries uint32,
//	entries x (key length uint32, key, value length uint32, value), keys strictly ascending,
//	mean: in float32, matrix: out x in float32 (row-major),
//	CRC-32C (Castagnoli) uint32 of every byte before it.
//
// One projection has exactly one encoding (sorted keys, no padding, nothing after the CRC),
// which is what lets Checksum stand for the projection itself.
func (p *Projection) encode() []byte {
	var b bytes.Buffer
	b.WriteString(magic)
	le := binary.LittleEndian
	b.Write(le.AppendUint32(nil, version))
	b.Write(le.AppendUint32(nil, uint32(p.in)))
	b.Write(le.AppendUint32(nil, uint32(p.out)))
	b.Write(le.AppendUint32(nil, uint32(len(p.meta))))
	for _, k := range slices.Sorted(maps.Keys(p.meta)) {
		b.Write(le.AppendUint32(nil, uint32(len(k))))
		b.WriteString(k)
		b.Write(le.AppendUint32(nil, uint32(len(p.meta[k]))))
		b.WriteString(p.meta[k])
	}
	buf := b.Bytes()
	for _, x := range p.mean {
		buf = le.AppendUint32(buf, math.Float32bits(x))
	}
	for _, x := range p.matrix {
		buf = le.AppendUint32(buf, math.Float32bits(x))
	}
	return le.AppendUint32(buf, crc32.Checksum(buf, castagnoli))
}

// MarshalBinary returns the file bytes.
func (p *Projection) MarshalBinary() ([]byte, error) { return slices.Clone(p.encoded), nil }

// Write writes the file bytes to w.
func (p *Projection) Write(w io.Writer) error {
	if _, err := w.Write(p.encoded); err != nil {
		return fmt.Errorf("adapt: write projection: %w", err)
	}
	return nil
}

// Read reads one projection file from r, to its end.
func Read(r io.Reader) (*Projection, error) {
	// The header says how long the file is; reading through a limit of that length means a
	// damaged header cannot make Read allocate more than the bytes that really arrive.
	head := make([]byte, len(magic)+16)
	if _, err := io.ReadFull(r, head); err != nil {
		return nil, fmt.Errorf("%w: header: %w", ErrFormat, err)
	}
	if string(head[:len(magic)]) != magic {
		return nil, fmt.Errorf("%w: bad magic", ErrFormat)
	}
	rest, err := io.ReadAll(io.LimitReader(r, maxFileBytes))
	if err != nil {
		return nil, fmt.Errorf("adapt: read projection: %w", err)
	}
	return Decode(append(head, rest...))
}

// maxFileBytes is the largest file the limits allow (metadata included), plus one so that
// trailing bytes past it are still seen and refused.
const maxFileBytes = 24 + MaxMeta*(8+2*MaxMetaBytes) + 4*(MaxDim+MaxDim*MaxDim) + 4 + 1

// Decode parses the file bytes, refusing anything but the one encoding Write produces.
func Decode(b []byte) (*Projection, error) {
	le := binary.LittleEndian
	if len(b) < len(magic)+16+4 || string(b[:len(magic)]) != magic {
		return nil, fmt.Errorf("%w: bad magic or too short", ErrFormat)
	}
	body, tail := b[:len(b)-4], b[len(b)-4:]
	if crc32.Checksum(body, castagnoli) != le.Uint32(tail) {
		return nil, fmt.Errorf("%w: checksum mismatch", ErrFormat)
	}
	pos := len(magic)
	u32 := func() (uint32, bool) {
		if len(body)-pos < 4 {
			return 0, false
		}
		v := le.Uint32(body[pos:])
		pos += 4
		return v, true
	}
	ver, _ := u32()
	if ver != version {
		return nil, fmt.Errorf("%w: version %d, this build reads %d", ErrFormat, ver, version)
	}
	in, _ := u32()
	out, _ := u32()
	entries, _ := u32()
	if in < 1 || in > MaxDim || out < 1 || out > in {
		return nil, fmt.Errorf("%w: dimensions %d -> %d", ErrFormat, in, out)
	}
	if entries > MaxMeta {
		return nil, fmt.Errorf("%w: %d metadata entries", ErrFormat, entries)
	}
	str := func() (string, bool) {
		n, ok := u32()
		if !ok || n > MaxMetaBytes || uint32(len(body)-pos) < n {
			return "", false
		}
		s := string(body[pos : pos+int(n)])
		pos += int(n)
		return s, true
	}
	meta := map[string]string{}
	prev := ""
	for i := range entries {
		k, ok1 := str()
		v, ok2 := str()
		if !ok1 || !ok2 {
			return nil, fmt.Errorf("%w: metadata entry %d truncated", ErrFormat, i)
		}
		if i > 0 && k <= prev {
			return nil, fmt.Errorf("%w: metadata keys out of order", ErrFormat)
		}
		if err := checkMeta(k, v); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrFormat, err)
		}
		meta[k], prev = v, k
	}
	floats := int(in) + int(in)*int(out)
	if len(body)-pos != 4*floats {
		return nil, fmt.Errorf("%w: %d bytes of vectors, want %d", ErrFormat, len(body)-pos, 4*floats)
	}
	vals := make([]float32, floats)
	for i := range vals {
		vals[i] = math.Float32frombits(le.Uint32(body[pos+4*i:]))
	}
	p, err := newProjection(int(in), int(out), vals[:in], vals[in:], meta)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrFormat, err)
	}
	return p, nil
}
