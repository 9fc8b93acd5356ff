package catalog

import (
	"context"
	"fmt"
	"testing"

	"lookalike/store"
)

// TestEmbeddedSavesAfterChanges: with no timed saves, the backend still saves its graph once
// the changes the last snapshot misses reach SnapshotChanges, so a crash leaves at most about
// that many to replay. The saver reports each save's seq (a test hook), so the test waits
// for the save itself, not for time.
func TestEmbeddedSavesAfterChanges(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	const every = 10
	b, err := OpenEmbedded(ctx, EmbeddedConfig{DataDir: dir, ModelIdentity: "test@1", Dim: 8, SnapshotChanges: every})
	if err != nil {
		t.Fatal(err)
	}
	b.saved = make(chan uint64)
	vecs := randomVectors(25, 8, 5)
	for i, v := range vecs[:every-1] {
		if _, err := b.Put(ctx, []store.Product{{ID: fmt.Sprint("p", i), Photos: []store.Photo{{ID: "a", Vector: unit(v)}}}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, seq, _ := b.SnapshotState(); seq != 0 {
		t.Fatalf("snapshot at seq %d after %d changes, want none yet", seq, every-1)
	}
	// The tenth change crosses the bound: the saver writes a snapshot covering it.
	if _, err := b.Put(ctx, []store.Product{{ID: "p9", Photos: []store.Photo{{ID: "a", Vector: unit(vecs[9])}}}}); err != nil {
		t.Fatal(err)
	}
	if seq := <-b.saved; seq < every {
		t.Fatalf("background snapshot at seq %d, want at least %d", seq, every)
	}
	// A crash now (the store closed, no save at close) replays only what came after it.
	for i, v := range vecs[every : every+3] {
		if _, err := b.Put(ctx, []store.Product{{ID: fmt.Sprint("q", i), Photos: []store.Photo{{ID: "a", Vector: unit(v)}}}}); err != nil {
			t.Fatal(err)
		}
	}
	b.stopPeriodic()
	<-b.periodicDone
	if err := b.store.Close(); err != nil {
		t.Fatal(err)
	}
	b2, err := OpenEmbedded(ctx, EmbeddedConfig{DataDir: dir, ModelIdentity: "test@1", Dim: 8, SnapshotChanges: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer b2.Close()
	if _, seq, _ := b2.SnapshotState(); seq < every || b2.graph.Len() != every+3 {
		t.Fatalf("reopened: snapshot seq %d, %d photos in the graph; want the background snapshot caught up to %d",
			seq, b2.graph.Len(), every+3)
	}
}
