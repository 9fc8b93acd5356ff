package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"lookalike/catalog"
	"lookalike/internal/dataset"
	lookalikev1 "lookalike/proto/lookalike/v1"
	"lookalike/server"
	"lookalike/store"
)

// inProcessServer serves dataDir on a loopback port until the test ends and returns its
// address and a client connection.
func inProcessServer(t *testing.T, dataDir string) (string, *connection) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() {
		served <- server.Serve(ctx, server.Config{DataDir: dataDir, EmbedThreads: 2, SnapshotInterval: -1}, lis, nil, slog.New(slog.DiscardHandler))
	}()
	addr := lis.Addr().String()
	cf := clientFlags{server: addr, timeout: 30 * time.Second}
	conn, err := cf.dial()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		cancel()
		if err := <-served; err != nil {
			t.Errorf("server on %s: %v", dataDir, err)
		}
	})
	if code, _, stderr := runCLI(t, map[string]string{"LOOKALIKE_SERVER": addr}, "health", "--wait", "60s"); code != exitOK {
		t.Fatalf("server not SERVING: %s", stderr)
	}
	return addr, conn
}

// TestBackupFromServerConcurrentWithWriter runs `lookalike backup --server` against a live
// server while a writer keeps upserting, restores the file with `lookalike restore` into a
// new data directory, serves that, and finds every product acknowledged before the backup.
func TestBackupFromServerConcurrentWithWriter(t *testing.T) {
	ctx := context.Background()
	work := t.TempDir()
	addr, conn := inProcessServer(t, filepath.Join(work, "live"))
	photos, err := dataset.LoadPhotos(dataset.PhotosGrocery)
	if err != nil {
		t.Fatalf("the shared grocery photos are required: %v", err)
	}
	var acked []string
	for _, p := range photos[:5] {
		img, err := os.ReadFile(p.Path)
		if err != nil {
			t.Fatal(err)
		}
		id := filepath.Base(p.Path)
		if _, err := conn.client.Upsert(ctx, &lookalikev1.UpsertRequest{Id: id, Category: p.Label, Content: &lookalikev1.UpsertRequest_Image{Image: img}}); err != nil {
			t.Fatal(err)
		}
		acked = append(acked, id)
	}

	stats, err := conn.client.Stats(ctx, &lookalikev1.StatsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var written []string
	stop, writerDone := make(chan struct{}), make(chan error, 1)
	go func() {
		rng := rand.New(rand.NewPCG(3, 4))
		for i := 0; ; i++ {
			select {
			case <-stop:
				writerDone <- nil
				return
			default:
			}
			vec := make([]float32, stats.GetDim())
			for j := range vec {
				vec[j] = float32(rng.NormFloat64())
			}
			id := fmt.Sprintf("vec-%05d", i)
			if _, err := conn.client.Upsert(ctx, &lookalikev1.UpsertRequest{Id: id, Content: &lookalikev1.UpsertRequest_Vector{Vector: &lookalikev1.Vector{Values: vec}}}); err != nil {
				writerDone <- err
				return
			}
			mu.Lock()
			written = append(written, id)
			mu.Unlock()
		}
	}()
	writtenSoFar := func() int { mu.Lock(); defer mu.Unlock(); return len(written) }
	for writtenSoFar() < 30 {
		time.Sleep(5 * time.Millisecond)
	}
	mu.Lock()
	ackedBefore := append(acked, written...)
	mu.Unlock()

	backup := filepath.Join(work, "backups", "live.db")
	if err := os.Mkdir(filepath.Dir(backup), 0o755); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := runCLI(t, nil, "backup", "--json", "--server", addr, "--out", backup)
	if code != exitOK {
		t.Fatalf("backup: exit %d: %s", code, stderr)
	}
	atEnd := writtenSoFar()
	for writtenSoFar() < atEnd+5 {
		time.Sleep(5 * time.Millisecond)
	}
	close(stop)
	if err := <-writerDone; err != nil {
		t.Fatalf("writer: %v", err)
	}
	var b backupJSON
	mustJSON(t, stdout, &b)
	if b.Server != addr || b.Out != backup || b.Items < len(ackedBefore) || len(b.SHA256) != 64 || b.Bytes == 0 {
		t.Fatalf("backup summary %+v; %d products were acknowledged before it", b, len(ackedBefore))
	}
	if entries, _ := os.ReadDir(filepath.Dir(backup)); len(entries) != 1 {
		t.Fatalf("files beside the backup: %v (the temporary file must be renamed)", entries)
	}

	restored := filepath.Join(work, "restored")
	if code, _, stderr := runCLI(t, nil, "restore", "--data", restored, backup); code != exitOK {
		t.Fatalf("restore: exit %d: %s", code, stderr)
	}
	_, rconn := inProcessServer(t, restored)
	rstats, err := rconn.client.Stats(ctx, &lookalikev1.StatsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if rstats.GetCount() != uint64(b.Items) || rstats.GetStoreSeq() != b.Seq || rstats.GetIndex().GetSize() != uint64(b.Items) {
		t.Fatalf("restored server: %d products, seq %d, graph %d; backup said %d products, seq %d",
			rstats.GetCount(), rstats.GetStoreSeq(), rstats.GetIndex().GetSize(), b.Items, b.Seq)
	}
	for _, id := range ackedBefore {
		if _, err := rconn.client.Get(ctx, &lookalikev1.GetRequest{Id: id}); err != nil {
			t.Fatalf("%s, acknowledged before the backup, is missing after the restore: %v", id, err)
		}
	}
	res, err := rconn.client.SearchById(ctx, &lookalikev1.SearchByIdRequest{Id: acked[0], K: 3})
	if err != nil || len(res.GetResults()) == 0 {
		t.Fatalf("search on the restored server: %v %v", res, err)
	}
}

func TestBackupCommandErrors(t *testing.T) {
	dir := t.TempDir()
	existing := filepath.Join(dir, "existing.db")
	if err := os.WriteFile(existing, []byte("an older backup"), 0o600); err != nil {
		t.Fatal(err)
	}
	down := freeLoopbackAddr(t)
	tests := []struct {
		name       string
		env        map[string]string
		args       []string
		wantCode   int
		wantStderr string
	}{
		{"no --out", nil, []string{"backup", "--server", down}, exitUsage, "--out is required"},
		{"both modes", nil, []string{"backup", "--server", down, "--data", dir, "--out", existing}, exitUsage, "exclude each other"},
		{"server down", nil, []string{"backup", "--server", down, "--out", existing, "--timeout", "5s"}, exitFailure, "unavailable"},
		{"server down by default address from the environment", map[string]string{"LOOKALIKE_SERVER": down}, []string{"backup", "--out", existing}, exitFailure, "unavailable"},
		{"no store in the data directory", nil, []string{"backup", "--data", dir, "--out", existing}, exitFailure, "no store in"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := runCLI(t, tt.env, tt.args...)
			if code != tt.wantCode || !strings.Contains(stderr, tt.wantStderr) {
				t.Fatalf("exit %d, stderr %q; want %d and %q", code, stderr, tt.wantCode, tt.wantStderr)
			}
			if b, err := os.ReadFile(existing); err != nil || string(b) != "an older backup" {
				t.Fatalf("a failed backup touched the existing file: %q %v", b, err)
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 1 {
				t.Fatalf("files left behind: %v", entries)
			}
		})
	}
}

// storeWithItems writes a store of n products with vectors of dim at path.
func storeWithItems(t *testing.T, path string, n, dim int) {
	t.Helper()
	s, err := store.Open(path, store.Options{ModelIdentity: "test-model", Dim: dim})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(5, 6))
	items := make([]store.Product, n)
	for i := range items {
		vec := make([]float32, dim)
		for j := range vec {
			vec[j] = float32(rng.NormFloat64())
		}
		items[i] = store.Product{ID: fmt.Sprintf("p-%04d", i), Category: "c", Photos: []store.Photo{{ID: "main", Vector: vec}}}
	}
	if _, err := s.UpsertBatch(context.Background(), items); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// damagedCopy writes src to dir's store file with one page zeroed, the first page (after
// bbolt's two meta pages) whose loss the store still opens with but its full check finds.
// Pages are tried in order, so the choice depends only on the file.
func damagedCopy(t *testing.T, src []byte, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, catalog.StoreFileName)
	page := os.Getpagesize()
	for p := 2; (p+1)*page <= len(src); p++ {
		damaged := bytes.Clone(src)
		clear(damaged[p*page : (p+1)*page])
		if err := os.WriteFile(path, damaged, 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := store.Open(path, store.Options{ReadOnly: true})
		if err != nil {
			continue // too damaged to open: backup would refuse it before copying anything
		}
		checkErr := s.Check()
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if checkErr != nil {
			return
		}
	}
	t.Fatalf("no single zeroed page of the %d-byte store both opens and fails the check", len(src))
}

// TestBackupOfflineFromDamagedStoreKeepsTheGoodBackup: the copy of a damaged store is
// checked before it goes anywhere near --out, so the good backup already there survives
// and the command says why it failed.
func TestBackupOfflineFromDamagedStoreKeepsTheGoodBackup(t *testing.T) {
	work := t.TempDir()
	goodDir := filepath.Join(work, "good")
	if err := os.Mkdir(goodDir, 0o755); err != nil {
		t.Fatal(err)
	}
	storeWithItems(t, filepath.Join(goodDir, catalog.StoreFileName), 300, 64)
	backups := filepath.Join(work, "backups")
	if err := os.Mkdir(backups, 0o755); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(backups, "backup.db")
	if code, _, stderr := runCLI(t, nil, "backup", "--data", goodDir, "--out", out); code != exitOK {
		t.Fatalf("backup of the good store: exit %d: %s", code, stderr)
	}
	goodBackup, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile(filepath.Join(goodDir, catalog.StoreFileName))
	if err != nil {
		t.Fatal(err)
	}
	damagedDir := filepath.Join(work, "damaged")
	damagedCopy(t, src, damagedDir)

	code, _, stderr := runCLI(t, nil, "backup", "--data", damagedDir, "--out", out)
	if code != exitFailure {
		t.Fatalf("backup of a damaged store: exit %d, want %d (stderr %q)", code, exitFailure, stderr)
	}
	for _, want := range []string{"fails its check", out + " was not replaced"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr %q does not say %q", stderr, want)
		}
	}
	if now, err := os.ReadFile(out); err != nil || !bytes.Equal(now, goodBackup) {
		t.Fatalf("the good backup was replaced by the damaged copy (%v)", err)
	}
	if entries, _ := os.ReadDir(backups); len(entries) != 1 {
		t.Fatalf("files left beside the backup: %v", entries)
	}
}
