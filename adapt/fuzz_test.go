package adapt

import (
	"bytes"
	"testing"
)

// FuzzDecode feeds the decoder arbitrary bytes: it must never panic or allocate past what
// arrives, and whatever it accepts is exactly the one encoding of what it returns, so a
// checksum can never name two different files.
func FuzzDecode(f *testing.F) {
	for _, meta := range []map[string]string{nil, {"model": "m@sha256:00", "dims": "2"}} {
		good, _ := small(f, meta).MarshalBinary()
		f.Add(good)
		f.Add(good[:len(good)/2])
		f.Add(resealed(append(append([]byte(nil), good[:len(good)-4]...), 1, 2, 3, 4, 0, 0, 0, 0)))
	}
	f.Add([]byte(magic))
	f.Fuzz(func(t *testing.T, b []byte) {
		decodes(t, b)
		// Random bytes almost never carry a matching CRC; resealing them lets the fuzzer
		// reach the parser behind it.
		if len(b) >= 4 {
			decodes(t, resealed(b))
		}
	})
}

// decodes checks one input against the properties above.
func decodes(t *testing.T, b []byte) {
	t.Helper()
	p, err := Decode(b)
	q, rerr := Read(bytes.NewReader(b))
	if (err == nil) != (rerr == nil) {
		t.Fatalf("Decode: %v, Read: %v", err, rerr)
	}
	if err != nil {
		return
	}
	again, _ := p.MarshalBinary()
	if !bytes.Equal(again, b) {
		t.Fatal("accepted bytes that are not the projection's own encoding")
	}
	if q.Checksum() != p.Checksum() {
		t.Fatal("Read and Decode disagree")
	}
	v := make([]float32, p.In())
	v[0] = 1
	if y, err := p.Apply(v); err == nil && len(y) != p.Out() {
		t.Fatalf("Apply gave %d values for %d", len(y), p.Out())
	}
}
