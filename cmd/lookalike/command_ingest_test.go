package main

import (
	"context"
	"encoding/csv"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"lookalike/server"
)

// TestIngestConcurrent runs the ingest pipeline in-process (so -race sees both sides) against a
// real gRPC server on loopback, with several loaders, several streams and a small window so
// that results, window releases and progress updates interleave.
func TestIngestConcurrent(t *testing.T) {
	dir := t.TempDir()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() {
		served <- server.Serve(ctx, server.Config{DataDir: filepath.Join(dir, "data"), EmbedThreads: 2, SnapshotInterval: -1}, lis, nil, slog.New(slog.DiscardHandler))
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("server: %v", err)
		}
	})
	env := map[string]string{"LOOKALIKE_SERVER": lis.Addr().String()}
	if code, _, stderr := runCLI(t, env, "health", "--wait", "60s"); code != exitOK {
		t.Fatalf("server not SERVING: %s", stderr)
	}

	datasets, err := findSharedDir("datasets")
	if err != nil {
		t.Fatalf("shared datasets are required: %v", err)
	}
	manifest := filepath.Join(dir, "m.csv")
	if _, err := writeDatasetManifest(filepath.Join(datasets, "grocery"), manifest, datasetLayouts()["grocery"], []string{"iconic"}, 0, false); err != nil {
		t.Fatal(err)
	}
	// Two rows the server must refuse, mixed in with the good ones.
	f, err := os.OpenFile(manifest, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	w := csv.NewWriter(f)
	w.Write([]string{"bad1", "m.csv", "x", "not an image", "", "", ""})
	w.Write([]string{"bad2", "m.csv", "x", "not an image", "", "", ""})
	w.Flush()
	if err := errors.Join(w.Error(), f.Close()); err != nil {
		t.Fatal(err)
	}

	failures := filepath.Join(dir, "failures.csv")
	args := []string{"ingest", "--json", "--concurrency", "4", "--streams", "3", "--window", "2", "--failures", failures, manifest}
	var runs []ingestSummary
	for range 2 {
		code, stdout, stderr := runCLI(t, env, args...)
		if code != exitFailure {
			t.Fatalf("exit %d, want 1 for the two bad rows; stderr %q", code, stderr)
		}
		var s ingestSummary
		mustJSON(t, stdout, &s)
		runs = append(runs, s)
	}
	if s := runs[0]; s.Created != 31 || s.Failed != 2 || s.NotAttempted != 0 {
		t.Errorf("first run: %+v", s)
	}
	if s := runs[1]; s.Skipped != 31 || s.Created != 0 || s.Failed != 2 {
		t.Errorf("second run: %+v", s)
	}
	for _, f := range runs[0].Failures {
		if f.Stage != "upsert" || f.Code != "InvalidArgument" {
			t.Errorf("failure %+v: want stage upsert, code InvalidArgument", f)
		}
	}
	if _, err := os.Stat(failures); err != nil {
		t.Errorf("failures file: %v", err)
	}
}

// TestIngestServerDown fails at once with one line naming the unreachable server.
func TestIngestServerDown(t *testing.T) {
	dir := t.TempDir()
	manifest := filepath.Join(dir, "m.csv")
	photo := sharedGroceryImage(t, "iconic__Arla-Standard-Milk_Iconic.jpg")
	if err := os.WriteFile(manifest, []byte("id,image\na,"+photo+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	code, _, stderr := runCLI(t, map[string]string{"LOOKALIKE_SERVER": freeLoopbackAddr(t)}, "ingest", "--quiet", "--failures", filepath.Join(dir, "f.csv"), manifest)
	if code != exitFailure || !strings.Contains(stderr, "unavailable (is 'lookalike serve' running there?)") || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	if elapsed := time.Since(start); elapsed > 10*time.Second {
		t.Errorf("took %v to give up on a server that is not there", elapsed)
	}
}
