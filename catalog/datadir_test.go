package catalog

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"lookalike/embed"
	"lookalike/store"
)

// vectorEmbedder serves catalogues fed only ready vectors: it embeds nothing.
type vectorEmbedder struct{ dim int }

func (v vectorEmbedder) Embed(context.Context, []byte) ([]float32, error) {
	return nil, errors.New("vectorEmbedder embeds nothing")
}

func (v vectorEmbedder) Analyze(context.Context, []byte, embed.AnalyzeOptions) (embed.Analysis, error) {
	return embed.Analysis{}, errors.New("vectorEmbedder embeds nothing")
}
func (v vectorEmbedder) Dim() int         { return v.dim }
func (v vectorEmbedder) Identity() string { return fmt.Sprintf("vectors-only@%d", v.dim) }

// vectorCatalogue writes n products of two photos each from ready vectors and closes it.
func vectorCatalogue(t *testing.T, dir string, n int) {
	t.Helper()
	ctx := context.Background()
	c, err := Open(ctx, Config{DataDir: dir, Embedder: vectorEmbedder{dim: 64}})
	if err != nil {
		t.Fatal(err)
	}
	var writes []Write
	for i := range n {
		w := Write{ID: fmt.Sprintf("p%04d", i), Category: fmt.Sprint(i % 3), Title: strings.Repeat("t", i%50)}
		for j := range 2 {
			v := make([]float32, 64)
			v[(i+j)%64], v[(i*7+j)%64] = 1, float32(j+1)
			w.Photos = append(w.Photos, PhotoWrite{ID: fmt.Sprint("ph", j), Vector: v})
		}
		writes = append(writes, w)
	}
	for _, r := range c.UpsertBatch(ctx, writes) {
		if r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// A damaged page must make Open fail with ErrCorrupt and say how to recover, never crash
// the process (bbolt panics on some damaged pages; the store turns those into errors).
func TestOpenRefusesDamagedStoreCleanly(t *testing.T) {
	pristine := t.TempDir()
	vectorCatalogue(t, pristine, 300)
	db := filepath.Join(pristine, StoreFileName)
	info, err := os.Stat(db)
	if err != nil {
		t.Fatal(err)
	}
	const page = 4096
	pages := int(info.Size() / page)
	refused := 0
	for p := 2; p < min(pages, 60); p++ {
		dir := t.TempDir()
		copyFile(t, db, filepath.Join(dir, StoreFileName))
		f, err := os.OpenFile(filepath.Join(dir, StoreFileName), os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt(make([]byte, page), int64(p)*page); err != nil {
			t.Fatal(err)
		}
		f.Close()
		c, err := Open(context.Background(), Config{DataDir: dir, Embedder: vectorEmbedder{dim: 64}})
		if err == nil {
			// The page was free or its damage is caught later by a checksum; either way
			// nothing crashed. Reading everything back must not crash either.
			for i := range 300 {
				_, _ = c.Get(context.Background(), fmt.Sprintf("p%04d", i), true)
			}
			c.Close()
			continue
		}
		refused++
		if !errors.Is(err, store.ErrCorrupt) {
			t.Errorf("page %d zeroed: %v, want an error wrapping store.ErrCorrupt", p, err)
		}
		if !strings.Contains(err.Error(), "lookalike restore") {
			t.Errorf("page %d zeroed: %q does not say how to restore", p, err)
		}
	}
	t.Logf("%d of %d zeroed pages refused at open", refused, min(pages, 60)-2)
	if refused == 0 {
		t.Fatalf("no zeroed page was noticed in a %d-page store", pages)
	}
}

// A data directory that held a catalogue (its snapshot says so) must not come back empty
// when its store is gone or emptied.
func TestOpenRefusesLostStore(t *testing.T) {
	for _, tc := range []struct {
		name string
		lose func(path string) error
	}{
		{"removed", os.Remove},
		{"emptied", func(path string) error { return os.Truncate(path, 0) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			vectorCatalogue(t, dir, 20)
			if err := tc.lose(filepath.Join(dir, StoreFileName)); err != nil {
				t.Fatal(err)
			}
			_, err := Open(context.Background(), Config{DataDir: dir, Embedder: vectorEmbedder{dim: 64}})
			if !errors.Is(err, ErrStoreLost) {
				t.Fatalf("Open: %v, want ErrStoreLost", err)
			}
			if !strings.Contains(err.Error(), "40 photos") || !strings.Contains(err.Error(), "lookalike restore") {
				t.Errorf("message %q should count the snapshot's photos and say how to restore", err)
			}
			// Removing the snapshot is the documented way to start an empty catalogue.
			if err := os.Remove(filepath.Join(dir, SnapshotFileName)); err != nil {
				t.Fatal(err)
			}
			c, err := Open(context.Background(), Config{DataDir: dir, Embedder: vectorEmbedder{dim: 64}})
			if err != nil {
				t.Fatal(err)
			}
			if c.Len() != 0 {
				t.Errorf("fresh catalogue holds %d products", c.Len())
			}
			c.Close()
		})
	}
}

// Temporary files of interrupted snapshot saves and backups are removed at start-up.
func TestOpenRemovesLeftoverTemporaryFiles(t *testing.T) {
	dir := t.TempDir()
	vectorCatalogue(t, dir, 5)
	leftovers := []string{SnapshotFileName + ".tmp-123", SnapshotFileName + ".tmp-abc", "." + StoreFileName + ".tmp-9"}
	keep := "notes.txt"
	for _, name := range append(leftovers, keep) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	c, err := Open(context.Background(), Config{DataDir: dir, Embedder: vectorEmbedder{dim: 64}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, name := range leftovers {
		if _, err := os.Stat(filepath.Join(dir, name)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still there (%v)", name, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, keep)); err != nil {
		t.Errorf("%s, not ours, was touched: %v", keep, err)
	}
	if c.Len() != 5 {
		t.Errorf("%d products, want 5", c.Len())
	}
}

// A batch of products with dozens of photos each must not overflow the embedder's queue:
// the catalogue bounds the photos it analyses at once.
func TestUpsertBatchOfManyPhotosIsNotOverloaded(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("embeds the grocery catalogue")
	}
	writes := groceryProducts(t)
	photos := 0
	for _, w := range writes {
		photos += len(w.Photos)
	}
	c, err := Open(context.Background(), Config{DataDir: t.TempDir(), Embedder: testEmbedder(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, r := range c.UpsertBatch(context.Background(), writes) {
		if r.Err != nil {
			t.Errorf("%s: %v", r.ID, r.Err)
		}
	}
	if st, _ := c.Stats(context.Background()); st.Photos != photos {
		t.Errorf("%d photos stored, want all %d of the batch", st.Photos, photos)
	}
}

// Stats must not wait for a graph snapshot being saved (a save writes and fsyncs the whole
// graph). The test holds the save lock as a save in progress does.
func TestStatsDoesNotWaitForASnapshotSave(t *testing.T) {
	dir := t.TempDir()
	vectorCatalogue(t, dir, 5)
	c, err := Open(context.Background(), Config{DataDir: dir, Embedder: vectorEmbedder{dim: 64}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.emb().snapMu.Lock()
	done := make(chan error, 1)
	go func() {
		_, err := c.Stats(context.Background())
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Stats is still waiting for the snapshot save lock")
	}
	c.emb().snapMu.Unlock()
}
