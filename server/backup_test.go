package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"lookalike/catalog"
	"lookalike/internal/dataset"
	pb "lookalike/proto/lookalike/v1"
	"lookalike/store"
)

// receiveBackup writes a Backup stream to path and checks it the way a client must: data in
// order with no gaps, each chunk within the limit, and a last message whose size and
// SHA-256 match what arrived.
func receiveBackup(ctx context.Context, c pb.LookalikeClient, path string, maxChunk int) (*pb.BackupComplete, error) {
	stream, err := c.Backup(ctx, &pb.BackupRequest{})
	if err != nil {
		return nil, err
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h := sha256.New()
	var offset uint64
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil, errors.New("backup stream ended without its last message")
		}
		if err != nil {
			return nil, err
		}
		if msg.GetOffset() != offset {
			return nil, fmt.Errorf("chunk at offset %d, expected %d", msg.GetOffset(), offset)
		}
		if done := msg.GetComplete(); done != nil {
			if len(msg.GetData()) != 0 {
				return nil, errors.New("the last message carries data")
			}
			if done.GetSize() != offset || done.GetSha256() != hex.EncodeToString(h.Sum(nil)) {
				return nil, fmt.Errorf("received %d bytes, sha256 %x; the server says %d, %s", offset, h.Sum(nil), done.GetSize(), done.GetSha256())
			}
			if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
				return nil, fmt.Errorf("after the last message: %v", err)
			}
			return done, f.Sync()
		}
		if n := len(msg.GetData()); n == 0 || n > maxChunk {
			return nil, fmt.Errorf("chunk of %d bytes (limit %d)", n, maxChunk)
		}
		if _, err := f.Write(msg.GetData()); err != nil {
			return nil, err
		}
		h.Write(msg.GetData())
		offset += uint64(len(msg.GetData()))
	}
}

func vectorRequest(id string, vec []float32) *pb.UpsertRequest {
	return &pb.UpsertRequest{Id: id, Category: "v", Content: &pb.UpsertRequest_Vector{Vector: &pb.Vector{Values: vec}}}
}

func randomVector(rng *rand.Rand, dim int) []float32 {
	v := make([]float32, dim)
	for i := range v {
		v[i] = float32(rng.NormFloat64())
	}
	return v
}

// TestServerBackupConcurrentWithWriter backs up a serving catalogue (photos and vectors)
// while a writer keeps upserting, restores the copy into a new data directory, serves it,
// and finds every product acknowledged before the backup began.
func TestServerBackupConcurrentWithWriter(t *testing.T) {
	ctx := context.Background()
	const chunk = 64 << 10
	s := startServer(t, Config{DataDir: t.TempDir(), MaxMessageBytes: chunk + 4<<10})
	defer s.shutdown()
	if got := backupChunkBytes(chunk + 4<<10); got != chunk {
		t.Fatalf("chunk size %d for a %d-byte message limit", got, chunk+4<<10)
	}
	all, err := dataset.LoadPhotos(dataset.PhotosGrocery)
	if err != nil {
		t.Fatalf("the shared grocery photos are required: %v", err)
	}
	photos := all[:6]
	results, err := ingest(ctx, s.client, requestsFor(photos))
	if err != nil {
		t.Fatal(err)
	}
	var acked []string
	for _, r := range results {
		if r.GetOutcome() != pb.Outcome_OUTCOME_CREATED {
			t.Fatalf("%s: %v %s", r.GetId(), r.GetOutcome(), r.GetErrorMessage())
		}
		acked = append(acked, r.GetId())
	}

	// The writer upserts vectors until told to stop; ackedBefore is what it had
	// acknowledged when the backup was asked for.
	dim := testEmbedder(t).Dim()
	var mu sync.Mutex
	var written []string
	stop := make(chan struct{})
	writerDone := make(chan error, 1)
	go func() {
		rng := rand.New(rand.NewPCG(1, 2))
		for i := 0; ; i++ {
			select {
			case <-stop:
				writerDone <- nil
				return
			default:
			}
			id := fmt.Sprintf("w-%05d", i)
			if _, err := s.client.Upsert(ctx, vectorRequest(id, randomVector(rng, dim))); err != nil {
				writerDone <- err
				return
			}
			mu.Lock()
			written = append(written, id)
			mu.Unlock()
		}
	}()
	// Let the store grow past a few chunks before the backup.
	waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(written) >= 40 })
	mu.Lock()
	ackedBefore := append(acked, written...)
	mu.Unlock()

	backup := filepath.Join(t.TempDir(), "backup.db")
	done, err := receiveBackup(ctx, s.client, backup, chunk)
	if err != nil {
		t.Fatal(err)
	}
	// Keep writing a little after the backup, so writes overlap it on both sides.
	mu.Lock()
	atEnd := len(written)
	mu.Unlock()
	waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(written) >= atEnd+5 })
	close(stop)
	if err := <-writerDone; err != nil {
		t.Fatalf("writer: %v", err)
	}
	if done.GetSize() <= chunk {
		t.Fatalf("backup of %d bytes fits in one chunk; the test means to stream several", done.GetSize())
	}
	if done.GetCount() < uint64(len(ackedBefore)) {
		t.Fatalf("backup holds %d products, %d were acknowledged before it began", done.GetCount(), len(ackedBefore))
	}

	dir := t.TempDir()
	if err := store.Restore(backup, filepath.Join(dir, catalog.StoreFileName), store.RestoreOptions{}); err != nil {
		t.Fatal(err)
	}
	r := startServer(t, Config{DataDir: dir})
	defer r.shutdown()
	st, err := r.client.Stats(ctx, &pb.StatsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st.GetCount() != done.GetCount() || st.GetStoreSeq() != done.GetStoreSeq() || st.GetIndex().GetSize() != done.GetCount() {
		t.Fatalf("restored server: %d products, seq %d, graph %d; the backup said %d products, seq %d",
			st.GetCount(), st.GetStoreSeq(), st.GetIndex().GetSize(), done.GetCount(), done.GetStoreSeq())
	}
	for _, id := range ackedBefore {
		if _, err := r.client.Get(ctx, &pb.GetRequest{Id: id}); err != nil {
			t.Fatalf("%s, acknowledged before the backup, is not in it: %v", id, err)
		}
	}
	res, err := r.client.SearchById(ctx, &pb.SearchByIdRequest{Id: photoID(photos[0]), K: 3})
	if err != nil || len(res.GetResults()) == 0 {
		t.Fatalf("search on the restored server: %v %v", res, err)
	}
}

// TestServerRebuildsGraphOfAnotherHistory restores server B's backup into server A's data
// directory, over A's graph snapshot: both histories have the same sequence number and the
// same keys, so only the store generation tells them apart. The restarted server must
// rebuild the graph and find B's vectors, not A's.
func TestServerRebuildsGraphOfAnotherHistory(t *testing.T) {
	ctx := context.Background()
	dim := testEmbedder(t).Dim()
	const n = 25
	fill := func(s *testServer, seed uint64) [][]float32 {
		t.Helper()
		rng := rand.New(rand.NewPCG(seed, seed))
		var vecs [][]float32
		for i := range n {
			v := randomVector(rng, dim)
			vecs = append(vecs, v)
			if _, err := s.client.Upsert(ctx, vectorRequest(fmt.Sprint("p", i), v)); err != nil {
				t.Fatal(err)
			}
		}
		return vecs
	}
	dirA := t.TempDir()
	a := startServer(t, Config{DataDir: dirA})
	fill(a, 1)
	if err := a.shutdown(); err != nil { // saves A's graph snapshot at seq n
		t.Fatal(err)
	}
	b := startServer(t, Config{DataDir: t.TempDir()})
	vecsB := fill(b, 2)
	backup := filepath.Join(t.TempDir(), "b.db")
	done, err := receiveBackup(ctx, b.client, backup, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.shutdown(); err != nil {
		t.Fatal(err)
	}
	if done.GetStoreSeq() != n {
		t.Fatalf("B's backup is at seq %d, want %d like A's snapshot", done.GetStoreSeq(), n)
	}
	// Restore the store only, leaving A's snapshot in place (as a hand-made restore would).
	if err := store.Restore(backup, filepath.Join(dirA, catalog.StoreFileName), store.RestoreOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dirA, catalog.SnapshotFileName)); err != nil {
		t.Fatalf("A's snapshot should still be there: %v", err)
	}
	a = startServer(t, Config{DataDir: dirA})
	defer a.shutdown()
	for i, v := range vecsB {
		res, err := a.client.SearchByVector(ctx, &pb.SearchByVectorRequest{Vector: v, K: 1})
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprint("p", i); len(res.GetResults()) != 1 || res.GetResults()[0].GetProduct().GetId() != want || res.GetResults()[0].GetScore() < 0.999 {
			t.Fatalf("search for %s's vector after the restore: %v", want, res.GetResults())
		}
	}
}

// TestServerBackupAuth: Backup demands the token like every other call.
func TestServerBackupAuth(t *testing.T) {
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("backup-token"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := startServer(t, Config{DataDir: t.TempDir(), AuthTokenFile: tokenFile})
	defer s.shutdown()
	ctx := context.Background()
	if _, err := receiveBackup(ctx, s.client, filepath.Join(t.TempDir(), "x.db"), 1<<20); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("Backup without the token: %v, want UNAUTHENTICATED", err)
	}
	authed := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer backup-token")
	done, err := receiveBackup(authed, s.client, filepath.Join(t.TempDir(), "y.db"), 1<<20)
	if err != nil || done.GetCount() != 0 {
		t.Fatalf("Backup with the token: %v %v", done, err)
	}
}
