package store

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// damageFixture is a store with one product of two photos, one of them with a kept photo,
// and a second product that stays intact.
type damageFixture struct {
	s           *Store
	path        string
	product     Product // as stored, vectors included
	vec         []float32
	jpeg        []byte
	key, keyJPG uint32
}

func newDamageFixture(t *testing.T, dim int) damageFixture {
	t.Helper()
	path := filepath.Join(t.TempDir(), "c.db")
	s := openFast(t, path, dim)
	rng := rand.New(rand.NewPCG(51, 52))
	in := withPhotos(rng, "sku", "c", dim, 2)
	jpeg := make([]byte, 333)
	for i := range jpeg {
		jpeg[i] = byte(rng.Uint32())
	}
	in.Photos[1].Kept = jpeg
	in.Attributes = map[string]string{"colour": "red", "size": "42"}
	p, err := s.Upsert(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Upsert(context.Background(), testProduct(rng, "intact", "c", dim)); err != nil {
		t.Fatal(err)
	}
	mustCheck(t, s)
	return damageFixture{s: s, path: path, product: p, vec: p.Photos[0].Vector, jpeg: jpeg,
		key: p.Photos[0].Key, keyJPG: p.Photos[1].Key}
}

// rewrite replaces one bbolt value with change(value), through bbolt, so only the store's
// own checksum can notice.
func (f damageFixture) rewrite(t *testing.T, bucket, key []byte, change func([]byte) []byte) {
	t.Helper()
	err := f.s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucket)
		return b.Put(key, change(bytes.Clone(b.Get(key))))
	})
	if err != nil {
		t.Fatal(err)
	}
}

func wantCorrupt(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("%s: %v, want ErrCorrupt", what, err)
	}
}

// flips are the ways one byte is damaged: one bit, every bit.
var flips = []byte{0x01, 0x80, 0xff}

func TestEveryDamagedVectorByteIsCaught(t *testing.T) {
	const dim = 6
	f := newDamageFixture(t, dim)
	k := keyBytes(f.key)
	var original []byte
	_ = f.s.db.View(func(tx *bolt.Tx) error { original = bytes.Clone(tx.Bucket(bucketVectors).Get(k)); return nil })
	if len(original) != 4*dim+4 {
		t.Fatalf("stored vector of %d bytes", len(original))
	}
	for i := range original {
		for _, flip := range flips {
			f.rewrite(t, bucketVectors, k, func(v []byte) []byte { v[i] ^= flip; return v })
			vec, err := f.s.Vector(f.key)
			wantCorrupt(t, "Vector", err)
			if vec != nil {
				t.Fatalf("byte %d: Vector returned %v with its error", i, vec)
			}
			p, err := f.s.GetWithVectors("sku")
			wantCorrupt(t, "GetWithVectors", err)
			for _, ph := range p.Photos {
				if ph.Key == f.key && ph.Vector != nil {
					t.Fatalf("byte %d: GetWithVectors handed out the damaged vector %v", i, ph.Vector)
				}
			}
			visited := 0
			err = f.s.ForEachVector(func(key uint32, vec []float32) error {
				if key == f.key && !sameVector(vec, f.vec) {
					t.Fatalf("byte %d: ForEachVector handed out a changed vector", i)
				}
				visited++
				return nil
			})
			wantCorrupt(t, "ForEachVector", err)
			wantCorrupt(t, "Check", f.s.Check())
			// What is not damaged still reads.
			if _, err := f.s.Get("sku"); err != nil {
				t.Fatalf("Get of the product whose vector is damaged: %v", err)
			}
			if _, err := f.s.Vector(f.keyJPG); err != nil {
				t.Fatal(err)
			}
			f.rewrite(t, bucketVectors, k, func([]byte) []byte { return original })
		}
	}
	// Cut short or grown by a byte.
	for _, change := range []func([]byte) []byte{
		func(v []byte) []byte { return v[:len(v)-1] },
		func(v []byte) []byte { return append(v, 0) },
		func(v []byte) []byte { return nil },
	} {
		f.rewrite(t, bucketVectors, k, change)
		_, err := f.s.Vector(f.key)
		wantCorrupt(t, "Vector of a resized record", err)
		wantCorrupt(t, "Check", f.s.Check())
		f.rewrite(t, bucketVectors, k, func([]byte) []byte { return original })
	}
	mustCheck(t, f.s)
	if vec, err := f.s.Vector(f.key); err != nil || !sameVector(vec, f.vec) {
		t.Fatalf("the repaired vector: %v", err)
	}
}

func TestEveryDamagedKeptPhotoByteIsCaught(t *testing.T) {
	f := newDamageFixture(t, 4)
	k := keyBytes(f.keyJPG)
	original := encodeKept(f.jpeg)
	// Every byte of a record this size costs a write each; the head, the tail, the checksum
	// and a stride through the middle cover every position class.
	var positions []int
	for i := range original {
		if i < 8 || i >= len(original)-12 || i%17 == 0 {
			positions = append(positions, i)
		}
	}
	for _, i := range positions {
		for _, flip := range flips {
			f.rewrite(t, bucketKept, k, func(v []byte) []byte { v[i] ^= flip; return v })
			jpeg, err := f.s.KeptPhoto(f.keyJPG)
			wantCorrupt(t, "KeptPhoto", err)
			if jpeg != nil {
				t.Fatalf("byte %d: KeptPhoto returned %d bytes with its error", i, len(jpeg))
			}
			wantCorrupt(t, "Check", f.s.Check())
			f.rewrite(t, bucketKept, k, func([]byte) []byte { return original })
		}
	}
	for _, change := range []func([]byte) []byte{
		func(v []byte) []byte { return v[:len(v)-1] },
		func(v []byte) []byte { return v[1:] },
		func(v []byte) []byte { return v[:3] },
		func(v []byte) []byte { return append(v, 0) },
	} {
		f.rewrite(t, bucketKept, k, change)
		_, err := f.s.KeptPhoto(f.keyJPG)
		wantCorrupt(t, "KeptPhoto of a resized record", err)
		wantCorrupt(t, "Check", f.s.Check())
		f.rewrite(t, bucketKept, k, func([]byte) []byte { return original })
	}
	mustCheck(t, f.s)
	if jpeg, err := f.s.KeptPhoto(f.keyJPG); err != nil || !bytes.Equal(jpeg, f.jpeg) {
		t.Fatalf("the repaired kept photo: %v", err)
	}
}

func TestEveryDamagedProductByteIsCaught(t *testing.T) {
	f := newDamageFixture(t, 4)
	ctx := context.Background()
	id := []byte("sku")
	var original []byte
	_ = f.s.db.View(func(tx *bolt.Tx) error { original = bytes.Clone(tx.Bucket(bucketProducts).Get(id)); return nil })
	stored, err := f.s.Get("sku")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(original, encodeProduct(stored)) {
		t.Fatal("the stored record is not encodeProduct of what Get returns")
	}
	seq := f.s.Seq()
	for i := range original {
		for _, flip := range flips {
			f.rewrite(t, bucketProducts, id, func(v []byte) []byte { v[i] ^= flip; return v })
			p, err := f.s.Get("sku")
			wantCorrupt(t, "Get", err)
			if p.ID != "" || p.Photos != nil {
				t.Fatalf("byte %d: Get returned %+v with its error", i, p)
			}
			_, err = f.s.GetWithVectors("sku")
			wantCorrupt(t, "GetWithVectors", err)
			err = f.s.ForEach(func(p Product) error {
				if p.ID == "sku" {
					t.Fatalf("byte %d: ForEach handed out the damaged product %+v", i, p)
				}
				return nil
			})
			wantCorrupt(t, "ForEach", err)
			wantCorrupt(t, "Check", f.s.Check())
			// A write over it or a delete of it fails too, instead of building on garbage.
			_, err = f.s.Upsert(ctx, keepAll(f.product))
			wantCorrupt(t, "Upsert over it", err)
			_, err = f.s.Delete(ctx, "sku")
			wantCorrupt(t, "Delete", err)
			if f.s.Seq() != seq {
				t.Fatalf("byte %d: a write over a damaged record committed", i)
			}
			f.rewrite(t, bucketProducts, id, func([]byte) []byte { return original })
		}
	}
	for _, change := range []func([]byte) []byte{
		func(v []byte) []byte { return v[:len(v)-1] },
		func(v []byte) []byte { return v[:4] },
		func(v []byte) []byte { return append(v, 0) },
		func(v []byte) []byte { return []byte{} },
	} {
		f.rewrite(t, bucketProducts, id, change)
		_, err := f.s.Get("sku")
		wantCorrupt(t, "Get of a resized record", err)
		wantCorrupt(t, "Check", f.s.Check())
		f.rewrite(t, bucketProducts, id, func([]byte) []byte { return original })
	}
	mustCheck(t, f.s)
	got, err := f.s.Get("sku")
	if err != nil {
		t.Fatal(err)
	}
	sameProduct(t, got, stored)
}

// TestDamageInTheFileIsCaught damages the file itself, as a disk would, not through bbolt:
// every copy of a vector, a kept photo and a product record in the file gets one byte
// flipped, and the reopened store refuses each instead of serving a changed value.
func TestDamageInTheFileIsCaught(t *testing.T) {
	const dim = 16
	cases := []struct {
		name  string
		bytes func(f damageFixture) []byte
		read  func(s *Store, f damageFixture) error
	}{
		{"vector", func(f damageFixture) []byte { return encodeVector(f.vec) },
			func(s *Store, f damageFixture) error { _, err := s.Vector(f.key); return err }},
		{"kept photo", func(f damageFixture) []byte { return encodeKept(f.jpeg) },
			func(s *Store, f damageFixture) error { _, err := s.KeptPhoto(f.keyJPG); return err }},
		{"product record", func(f damageFixture) []byte {
			p, err := f.s.Get("sku")
			if err != nil {
				panic(err)
			}
			return encodeProduct(p)
		}, func(s *Store, f damageFixture) error { _, err := s.Get("sku"); return err }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newDamageFixture(t, dim)
			record := tc.bytes(f)
			if err := f.s.Close(); err != nil {
				t.Fatal(err)
			}
			file, err := os.ReadFile(f.path)
			if err != nil {
				t.Fatal(err)
			}
			copies := 0
			for at := 0; ; {
				i := bytes.Index(file[at:], record)
				if i < 0 {
					break
				}
				file[at+i+len(record)/2] ^= 0x10
				at += i + len(record)
				copies++
			}
			if copies == 0 {
				t.Fatalf("the %s's bytes are not in the file", tc.name)
			}
			if err := os.WriteFile(f.path, file, 0o600); err != nil {
				t.Fatal(err)
			}
			// As a backup, the damaged file is refused by Restore's verification.
			restored := filepath.Join(t.TempDir(), "restored.db")
			wantCorrupt(t, "Restore", Restore(f.path, restored, RestoreOptions{}))
			if _, err := os.Stat(restored); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("a refused Restore left %s: %v", restored, err)
			}
			s := openFast(t, f.path, dim)
			wantCorrupt(t, tc.name, tc.read(s, f))
			wantCorrupt(t, "Check", s.Check())
			if _, err := s.Get("intact"); err != nil {
				t.Fatalf("the intact product: %v", err)
			}
		})
	}
}
