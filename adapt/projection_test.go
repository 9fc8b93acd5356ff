package adapt

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"math/rand/v2"
	"testing"
)

// small is a hand-made projection for format tests.
func small(t testing.TB, meta map[string]string) *Projection {
	t.Helper()
	p, err := newProjection(3, 2, []float32{0.1, 0.2, 0.3}, []float32{1, 0, 0, 0, 1, -1}, meta)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// resealed fixes the CRC after an edit, so a test reaches the check behind it.
func resealed(b []byte) []byte {
	body := b[:len(b)-4]
	return binary.LittleEndian.AppendUint32(append([]byte(nil), body...), crc32.Checksum(body, castagnoli))
}

func TestDecodeRefusesDamagedFiles(t *testing.T) {
	good, _ := small(t, map[string]string{"a": "1", "b": "2"}).MarshalBinary()
	edit := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	headerEnd := len(magic) + 16
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"bad magic", edit(func(b []byte) []byte { b[0] = 'X'; return resealed(b) })},
		{"truncated", good[:len(good)-1]},
		{"one byte flipped", edit(func(b []byte) []byte { b[len(b)-9] ^= 1; return b })},
		{"trailing byte", append(append([]byte(nil), good...), 0)},
		{"trailing byte, resealed", edit(func(b []byte) []byte { return resealed(append(b[:len(b)-4], 0, 0, 0, 0, 0)) })},
		{"version 2", edit(func(b []byte) []byte { b[len(magic)] = 2; return resealed(b) })},
		{"out above in", edit(func(b []byte) []byte { b[len(magic)+8] = 4; return resealed(b) })},
		{"zero in", edit(func(b []byte) []byte { b[len(magic)+4] = 0; return resealed(b) })},
		{"huge in", edit(func(b []byte) []byte {
			binary.LittleEndian.PutUint32(b[len(magic)+4:], math.MaxUint32)
			return resealed(b)
		})},
		{"more entries than present", edit(func(b []byte) []byte { b[len(magic)+12] = 9; return resealed(b) })},
		{"keys out of order", edit(func(b []byte) []byte {
			// Entries are 4+1+4+1 bytes each: swap the keys "a" and "b".
			b[headerEnd+4], b[headerEnd+14] = 'b', 'a'
			return resealed(b)
		})},
		{"NaN in the mean", edit(func(b []byte) []byte {
			binary.LittleEndian.PutUint32(b[headerEnd+20:], math.Float32bits(float32(math.NaN())))
			return resealed(b)
		})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Decode(tc.b); !errors.Is(err, ErrFormat) {
				t.Errorf("Decode: %v, want ErrFormat", err)
			}
			if _, err := Read(bytes.NewReader(tc.b)); err == nil {
				t.Error("Read accepted it")
			}
		})
	}
	if _, err := Decode(good); err != nil {
		t.Fatalf("the undamaged file: %v", err)
	}
}

func TestChecksumNamesTheContent(t *testing.T) {
	a := small(t, nil)
	for _, tc := range []struct {
		name string
		meta map[string]string
		same bool
	}{
		{"same content", nil, true},
		{"empty metadata is no metadata", map[string]string{}, true},
		{"metadata differs", map[string]string{"model": "x"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := small(t, tc.meta).Checksum() == a.Checksum(); got != tc.same {
				t.Errorf("same checksum %v, want %v", got, tc.same)
			}
		})
	}
	if len(a.Checksum()) != len("sha256:")+64 {
		t.Errorf("checksum %q", a.Checksum())
	}
}

// The cost of one Apply from the model's 1280 dimensions, per projected dimension; the
// figures go to benchmarks/results/adapt.md, not here.
func BenchmarkApply(b *testing.B) {
	const in = 1280
	rng := rand.New(rand.NewPCG(1, 1))
	for _, out := range []int{128, 256, 512, 1280} {
		b.Run(fmt.Sprintf("1280to%d", out), func(b *testing.B) {
			m := make([]float32, in*out)
			for i := range m {
				m[i] = float32(rng.NormFloat64())
			}
			p, err := newProjection(in, out, make([]float32, in), m, nil)
			if err != nil {
				b.Fatal(err)
			}
			v := make([]float32, in)
			for i := range v {
				v[i] = float32(rng.Float64())
			}
			dst := make([]float32, out)
			for b.Loop() {
				if err := p.ApplyTo(dst, v); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
