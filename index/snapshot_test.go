package index

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func smallIndex(t testing.TB, n int, metric Metric) (*HNSW, [][]float32, [][]float32) {
	t.Helper()
	base, queries := clustered(7, n, 50, 32, 20, metric == InnerProduct)
	cfg := DefaultConfig()
	cfg.Metric = metric
	h := NewHNSW(32, cfg)
	for i, v := range base {
		if err := h.Add(Key(i*3), v); err != nil {
			t.Fatal(err)
		}
	}
	return h, base, queries
}

func TestSnapshotRoundTrip(t *testing.T) {
	for _, metric := range []Metric{InnerProduct, L2} {
		t.Run(metric.String(), func(t *testing.T) {
			h, _, queries := smallIndex(t, 3000, metric)
			for k := Key(0); k < 300; k += 3 {
				h.Delete(k) // leave tombstones in the file, below the compaction threshold
			}
			path := filepath.Join(t.TempDir(), "graph.hnsw")
			if err := h.Save(path, 42); err != nil {
				t.Fatal(err)
			}
			loaded, seq, err := LoadHNSW(path)
			if err != nil {
				t.Fatal(err)
			}
			if seq != 42 {
				t.Fatalf("seq = %d, want 42", seq)
			}
			ls, hs := loaded.Stats(), h.Stats()
			ls.Bytes, hs.Bytes = 0, 0 // slice capacities differ
			if loaded.Len() != h.Len() || ls != hs {
				t.Fatalf("loaded %+v, saved %+v", ls, hs)
			}
			for _, q := range queries {
				want := h.Search(q, 10, SearchOptions{})
				got := loaded.Search(q, 10, SearchOptions{})
				if !slices.Equal(got, want) {
					t.Fatalf("loaded index answers %v, original %v", got, want)
				}
			}
			// The loaded index keeps working: inserts and deletes after a load.
			if err := loaded.Add(1, queries[0]); err != nil {
				t.Fatal(err)
			}
			if res := loaded.Search(queries[0], 1, SearchOptions{}); len(res) != 1 || res[0].Key != 1 {
				t.Fatalf("search for a vector added after load returned %v", res)
			}
			entries, _ := os.ReadDir(filepath.Dir(path))
			if len(entries) != 1 {
				t.Fatalf("temporary files left beside the snapshot: %v", entries)
			}
		})
	}
}

func TestSnapshotEmpty(t *testing.T) {
	path := filepath.Join(t.TempDir(), "empty.hnsw")
	if err := NewHNSW(8, DefaultConfig()).Save(path, 0); err != nil {
		t.Fatal(err)
	}
	h, _, err := LoadHNSW(path)
	if err != nil {
		t.Fatal(err)
	}
	if h.Len() != 0 || h.Search(make([]float32, 8), 3, SearchOptions{}) != nil {
		t.Fatal("empty snapshot did not load as an empty index")
	}
}

func TestSnapshotDamageDetected(t *testing.T) {
	h, _, _ := smallIndex(t, 500, L2)
	dir := t.TempDir()
	good := filepath.Join(dir, "good.hnsw")
	if err := h.Save(good, 7); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	flip := func(off int) []byte {
		d := bytes.Clone(data)
		d[off] ^= 0x10
		return d
	}
	wrongVersion := bytes.Clone(data)
	wrongVersion[len(snapshotMagic)] = 99
	tests := []struct {
		name string
		data []byte
		want error
	}{
		{"empty file", nil, ErrNotASnapshot},
		{"other file", []byte("not a snapshot at all"), ErrNotASnapshot},
		{"wrong version", wrongVersion, ErrBadVersion},
		{"truncated in header", data[:20], ErrBadSnapshot},
		{"truncated in vectors", data[:len(data)/2], ErrBadSnapshot},
		{"checksum missing", data[:len(data)-4], ErrBadSnapshot},
		{"last byte missing", data[:len(data)-1], ErrBadSnapshot},
		{"bit flipped in header", flip(len(snapshotMagic) + 8), ErrBadSnapshot},
		{"bit flipped in vectors", flip(len(data) / 3), ErrBadSnapshot},
		{"bit flipped in links", flip(len(data) - 100), ErrBadSnapshot},
		{"bit flipped in checksum", flip(len(data) - 2), ErrBadSnapshot},
		{"trailing bytes", append(bytes.Clone(data), 0), ErrBadSnapshot},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, "damaged.hnsw")
			if err := os.WriteFile(path, tt.data, 0o600); err != nil {
				t.Fatal(err)
			}
			_, _, err := LoadHNSW(path)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
	t.Run("missing", func(t *testing.T) {
		_, _, err := LoadHNSW(filepath.Join(dir, "absent.hnsw"))
		if !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("err = %v, want fs.ErrNotExist", err)
		}
	})
}

func FuzzDecodeSnapshot(f *testing.F) {
	h, _, _ := smallIndex(f, 40, InnerProduct)
	path := filepath.Join(f.TempDir(), "seed.hnsw")
	if err := h.Save(path, 3); err != nil {
		f.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(data)
	f.Add(data[:len(data)/2])
	f.Add([]byte(snapshotMagic))
	// Small int8 indexes, trained after 20 vectors: with full vectors, without (a source's),
	// and untrained.
	base, _ := clustered(41, 40, 0, 16, 4, false)
	for _, tc := range []struct {
		n      int
		source bool
	}{{40, false}, {40, true}, {10, false}} {
		cfg := Config{Metric: L2, Quantize: QuantizeInt8, EFConstruction: 16}
		if tc.source {
			cfg.Vectors = func(k Key) []float32 { return base[k%40] }
		}
		q := NewHNSW(16, cfg)
		q.g.trainAt = 20
		for i, v := range base[:tc.n] {
			_ = q.Add(Key(i), v)
		}
		if err := q.Save(path, 3); err != nil {
			f.Fatal(err)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		got, _, err := decodeSnapshot(bytes.NewReader(data), int64(len(data)), LoadOptions{})
		if errors.Is(err, ErrNoVectors) {
			// A source snapshot: load it with a source that knows none of the keys, the
			// worst a caller can hand over.
			got, _, err = decodeSnapshot(bytes.NewReader(data), int64(len(data)), LoadOptions{Vectors: func(Key) []float32 { return nil }})
		}
		if err != nil {
			return
		}
		// Whatever decodes must be usable without panicking.
		q := make([]float32, got.Dim())
		got.Search(q, 5, SearchOptions{})
		got.Search(q, 5, SearchOptions{Filter: func(k Key) bool { return k%2 == 0 }})
		got.Vector(1)
		_ = got.Add(12345, q)
	})
}

func TestSnapshotTagRoundTrip(t *testing.T) {
	h, _, queries := smallIndex(t, 200, InnerProduct)
	dir := t.TempDir()
	tests := []struct {
		name string
		info SnapshotInfo
	}{
		{"no tag", SnapshotInfo{Seq: 5}},
		{"generation tag", SnapshotInfo{Seq: 9, Tag: "3f9c2a71d0e84b65"}},
		{"longest tag", SnapshotInfo{Seq: 1, Tag: strings.Repeat("x", MaxSnapshotTag)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, "tagged.hnsw")
			if err := h.SaveSnapshot(path, tt.info); err != nil {
				t.Fatal(err)
			}
			loaded, info, err := LoadSnapshot(path)
			if err != nil {
				t.Fatal(err)
			}
			if info != tt.info {
				t.Fatalf("loaded %+v, saved %+v", info, tt.info)
			}
			if got, want := loaded.Search(queries[0], 5, SearchOptions{}), h.Search(queries[0], 5, SearchOptions{}); !slices.Equal(got, want) {
				t.Fatalf("loaded index answers %v, original %v", got, want)
			}
		})
	}
	if err := h.SaveSnapshot(filepath.Join(dir, "long.hnsw"), SnapshotInfo{Tag: strings.Repeat("x", MaxSnapshotTag+1)}); err == nil {
		t.Fatal("a tag over MaxSnapshotTag was saved")
	}
}

// olderSnapshot rewrites a version 3 file of a QuantizeNone index in the layout of an older
// version: version 2 lacks the quantisation header, version 1 also the tag field.
func olderSnapshot(t *testing.T, v3 []byte, version uint32) []byte {
	t.Helper()
	extAt := len(snapshotMagic) + 4 + binary.Size(snapshotHeader{})
	tagAt := extAt + binary.Size(snapshotHeaderV3{})
	var tagLen uint32
	if version == snapshotVersionV1 {
		tagLen = 4 + binary.LittleEndian.Uint32(v3[tagAt:])
	}
	old := slices.Concat(v3[:extAt], v3[tagAt+int(tagLen):len(v3)-4]) // drop the checksum too
	binary.LittleEndian.PutUint32(old[len(snapshotMagic):], version)
	return binary.LittleEndian.AppendUint32(old, crc32.Checksum(old, castagnoli))
}

// TestSnapshotOlderVersionsStillLoad rewrites a version 3 file as version 2 (before
// quantisation) and version 1 (before tags) and checks that both load, version 1 with an
// empty tag.
func TestSnapshotOlderVersionsStillLoad(t *testing.T) {
	h, _, queries := smallIndex(t, 200, L2)
	dir := t.TempDir()
	v3 := filepath.Join(dir, "v3.hnsw")
	if err := h.SaveSnapshot(v3, SnapshotInfo{Seq: 17, Tag: "gen"}); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(v3)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		version uint32
		want    SnapshotInfo
	}{
		{snapshotVersionV2, SnapshotInfo{Seq: 17, Tag: "gen"}},
		{snapshotVersionV1, SnapshotInfo{Seq: 17}},
	} {
		path := filepath.Join(dir, fmt.Sprintf("v%d.hnsw", tc.version))
		if err := os.WriteFile(path, olderSnapshot(t, data, tc.version), 0o600); err != nil {
			t.Fatal(err)
		}
		loaded, info, err := LoadSnapshot(path)
		if err != nil {
			t.Fatalf("version %d: %v", tc.version, err)
		}
		if info != tc.want {
			t.Fatalf("version %d file loaded as %+v", tc.version, info)
		}
		if got, want := loaded.Search(queries[0], 5, SearchOptions{}), h.Search(queries[0], 5, SearchOptions{}); !slices.Equal(got, want) {
			t.Fatalf("version %d: loaded index answers %v, original %v", tc.version, got, want)
		}
	}
}

// TestSaveSnapshotLetsWritersGoBeforeFsync: once the graph is in the temporary file, writers
// proceed while the save makes it durable. The save is held at that point until an Add,
// started after it, has returned; were the save still holding the writers' lock, the Add
// could not return and the test would hang.
func TestSaveSnapshotLetsWritersGoBeforeFsync(t *testing.T) {
	base, extra := clustered(3, 50, 1, 8, 4, true)
	h := NewHNSW(8, Config{Seed: 1})
	for i, v := range base {
		if err := h.Add(Key(i+1), v); err != nil {
			t.Fatal(err)
		}
	}
	added := make(chan error)
	h.savedEncoded = func() {
		go func() { added <- h.Add(1000, extra[0]) }()
		if err := <-added; err != nil {
			t.Error(err)
		}
	}
	path := filepath.Join(t.TempDir(), "g.hnsw")
	if err := h.Save(path, 7); err != nil {
		t.Fatal(err)
	}
	loaded, seq, err := LoadHNSW(path)
	if err != nil || seq != 7 || loaded.Len() != 50 {
		t.Fatalf("loaded %v photos at seq %d (%v); want the 50 written before the save", loaded.Len(), seq, err)
	}
	if h.Len() != 51 {
		t.Fatalf("the index has %d vectors after the concurrent Add, want 51", h.Len())
	}
}

// TestWriteBehindWritesEverything: the write-behind writer hands chunks to writeback as it
// goes and must leave the file exactly as written, across chunk boundaries and odd sizes.
func TestWriteBehindWritesEverything(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "wb-*")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rng := rand.New(rand.NewPCG(1, 2))
	var want []byte
	w := &writeBehind{f: f}
	for len(want) < 3*writeBehindChunk+12345 {
		p := make([]byte, 1+rng.IntN(3<<20))
		for i := range p {
			p[i] = byte(rng.Uint32())
		}
		if n, err := w.Write(p); err != nil || n != len(p) {
			t.Fatalf("Write: %d, %v", n, err)
		}
		want = append(want, p...)
	}
	if w.handed == 0 || w.waited == 0 {
		t.Fatalf("wrote %d bytes without handing any to writeback (handed %d, waited %d)", len(want), w.handed, w.waited)
	}
	got, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("file holds %d bytes, differing from the %d written", len(got), len(want))
	}
}

// TestSnapshotVectorsOutside saves float32 and int8 graphs with tombstones without their live
// vectors and loads them back from a source: the file lacks their bytes, the
// loaded graph answers as the original, a load without a source is refused, and a live key
// the source has lost loads (its deletion is the caller's to replay) without breaking search.
func TestSnapshotVectorsOutside(t *testing.T) {
	for _, qz := range []Quantization{QuantizeNone, QuantizeInt8} {
		t.Run(qz.String(), func(t *testing.T) {
			const dim, n = 32, 600
			vecs, queries := clustered(17, n, 20, dim, 10, true)
			h := NewHNSW(dim, Config{Seed: 2, Quantize: qz})
			h.g.trainAt = 200
			table := newVectorTable()
			for i, v := range vecs {
				if err := h.Add(Key(i+1), v); err != nil {
					t.Fatal(err)
				}
				table.put(Key(i+1), v)
			}
			for k := Key(1); k <= 60; k++ { // 10%: tombstones, below the compaction threshold
				h.Delete(k)
				table.put(k, nil)
			}
			dir := t.TempDir()
			full, outside := filepath.Join(dir, "full.hnsw"), filepath.Join(dir, "outside.hnsw")
			if err := h.SaveSnapshot(full, SnapshotInfo{Seq: 3}); err != nil {
				t.Fatal(err)
			}
			if err := h.SaveSnapshot(outside, SnapshotInfo{Seq: 3, VectorsOutside: true}); err != nil {
				t.Fatal(err)
			}
			fullSt, err := os.Stat(full)
			if err != nil {
				t.Fatal(err)
			}
			outSt, err := os.Stat(outside)
			if err != nil {
				t.Fatal(err)
			}
			// At least the 540 live vectors are gone from the file.
			if limit := fullSt.Size() - 540*dim*4; outSt.Size() > limit {
				t.Fatalf("snapshot without live vectors is %d bytes, the full one %d: want at most %d", outSt.Size(), fullSt.Size(), limit)
			}
			if _, _, err := LoadSnapshot(outside); !errors.Is(err, ErrNoVectors) {
				t.Fatalf("load without a source: %v, want ErrNoVectors", err)
			}
			loaded, info, err := LoadSnapshotWith(outside, LoadOptions{Vectors: table.get})
			if err != nil || !info.VectorsOutside || info.Seq != 3 {
				t.Fatalf("load: %+v, %v", info, err)
			}
			for _, q := range queries {
				if got, want := loaded.Search(q, 10, SearchOptions{}), h.Search(q, 10, SearchOptions{}); !slices.Equal(got, want) {
					t.Fatalf("loaded graph answers %v, the original %v", got, want)
				}
			}
			// The source lost key 100 (deleted after the save): it loads, and once the
			// caller replays its deletion searches never return it.
			table.put(100, nil)
			lost, _, err := LoadSnapshotWith(outside, LoadOptions{Vectors: table.get})
			if err != nil {
				t.Fatal(err)
			}
			if !lost.Delete(100) {
				t.Fatal("key 100 was not live in the loaded graph")
			}
			for _, q := range queries {
				for _, nb := range lost.Search(q, 10, SearchOptions{}) {
					if nb.Key <= 60 || nb.Key == 100 {
						t.Fatalf("deleted key %d returned", nb.Key)
					}
				}
			}
		})
	}
}
