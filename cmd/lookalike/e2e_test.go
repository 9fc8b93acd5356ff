package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"errors"
	"mime/multipart"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"lookalike/embed"
)

// The end-to-end test runs the real binary the way an operator does: a real server process
// on loopback with the real model and a real bbolt file in a temporary directory, driven by
// the client commands, then stopped with SIGTERM and started again.

// e2eProducts are three visually distinct grocery products; each gets its catalogue photo and
// two in-store photos.
type e2eProduct struct {
	label  string
	photos []string
}

func e2eProducts() []e2eProduct {
	return []e2eProduct{
		{"Garant-Ecological-Standard-Milk", []string{"iconic__Garant-Ecological-Standard-Milk_Iconic", "train__Garant-Ecological-Standard-Milk_008", "train__Garant-Ecological-Standard-Milk_016"}},
		{"Alpro-Blueberry-Soyghurt", []string{"iconic__Alpro-Blueberry-Soyghurt_Iconic", "train__Alpro-Blueberry-Soyghurt_017", "train__Alpro-Blueberry-Soyghurt_003"}},
		{"God-Morgon-Orange-Red-Grapefruit-Juice", []string{"iconic__God-Morgon-Orange-Red-Grapefruit-Juice_Iconic", "train__God-Morgon-Orange-Red-Grapefruit-Juice_013", "train__God-Morgon-Orange-Red-Grapefruit-Juice_005"}},
	}
}

// e2eEnv is a built binary, a data directory and the address a server listens on.
type e2eEnv struct {
	t      *testing.T
	bin    string
	work   string // working directory of every command (failures files land here)
	data   string
	addr   string
	env    []string
	photos string // the shared grocery images directory
}

func TestEndToEnd(t *testing.T) {
	e := newE2E(t)
	manifest := e.writeManifest()

	srv := e.startServer()

	// Ingest: 10 good photos, one broken file and one missing file.
	res := e.run(exitFailure, "ingest", "--json", "--concurrency", "3", manifest)
	var sum ingestSummary
	mustJSON(t, res.stdout, &sum)
	if sum.Total != 12 || sum.Created != 10 || sum.Failed != 2 || sum.Skipped != 0 {
		t.Fatalf("first ingest: %+v", sum)
	}
	failures := readFailuresFile(t, filepath.Join(e.work, "lookalike-failures.csv"))
	if got := failures["broken"]; got[0] != "upsert" || got[1] != "InvalidArgument" {
		t.Errorf("broken image failure = %v, want stage upsert, code InvalidArgument", got)
	}
	if got := failures["missing"]; got[0] != "read" || !strings.Contains(got[2], "no such file") {
		t.Errorf("missing file failure = %v, want stage read with the OS reason", got)
	}
	if !strings.Contains(res.stderr, "2 of 12 items failed; reasons in lookalike-failures.csv") {
		t.Errorf("ingest stderr lacks the one-line reason: %q", res.stderr)
	}

	// A street photo finds the product's own photo first.
	query := filepath.Join(e.photos, "val__Garant-Ecological-Standard-Milk_005.jpg")
	var search searchJSON
	mustJSON(t, e.run(exitOK, "search", "--json", "--k", "5", query).stdout, &search)
	if len(search.Results) != 5 || search.Results[0].Product.Title != "Garant-Ecological-Standard-Milk" {
		t.Fatalf("search: %+v", search.Results)
	}
	for i := 1; i < len(search.Results); i++ {
		if search.Results[i].Score > search.Results[i-1].Score || search.Results[i].Rank != i+1 {
			t.Fatalf("results not ranked best first: %+v", search.Results)
		}
	}
	// A boost for the juice shelf lifts a juice product above the milk; a query expansion
	// over the first photo keeps that photo first, and closer.
	var boosted, expanded searchJSON
	mustJSON(t, e.run(exitOK, "search", "--json", "--k", "5", "--boost", "shelf=juice:0.5", query).stdout, &boosted)
	if len(boosted.Results) != 5 || boosted.Results[0].Product.Category != "Juice" || search.Results[0].Product.Category == "Juice" {
		t.Errorf("a boost for the juice shelf: %+v", boosted.Results)
	}
	mustJSON(t, e.run(exitOK, "search", "--json", "--k", "5", "--expand", "1", query).stdout, &expanded)
	if len(expanded.Results) != 5 || expanded.Results[0].Product.ID != search.Results[0].Product.ID ||
		expanded.Results[0].Score <= search.Results[0].Score {
		t.Errorf("expanded by its first photo, the query does not find that photo first and closer: %+v", expanded.Results)
	}
	var juice searchJSON
	mustJSON(t, e.run(exitOK, "search", "--json", "--category", "Juice", query).stdout, &juice)
	if len(juice.Results) != 3 {
		t.Errorf("category filter: %d results, want the 3 juice photos", len(juice.Results))
	}
	for _, r := range juice.Results {
		if r.Product.Category != "Juice" {
			t.Errorf("category filter let %s (%s) through", r.Product.ID, r.Product.Category)
		}
	}
	// The same search over the HTTP front end of the same binary, the photo uploaded as a form.
	if got := httpSearch(t, srv.http, query); len(got) == 0 || got[0] != search.Results[0].Product.ID {
		t.Errorf("HTTP search found %v, the CLI %s first", got, search.Results[0].Product.ID)
	}
	table := e.run(exitOK, "search", "--k", "2", query).stdout
	if !strings.HasPrefix(table, "RANK") || !strings.Contains(table, search.Results[0].Product.ID) {
		t.Errorf("search table:\n%s", table)
	}

	// More like this never returns the item itself.
	var similar similarJSON
	mustJSON(t, e.run(exitOK, "similar", "--json", "--k", "3", "train__Alpro-Blueberry-Soyghurt_017").stdout, &similar)
	if len(similar.Results) != 3 {
		t.Fatalf("similar: %+v", similar)
	}
	for _, r := range similar.Results {
		if r.Product.ID == "train__Alpro-Blueberry-Soyghurt_017" {
			t.Error("similar returned the item itself")
		}
	}
	e.run(exitFailure, "similar", "no-such-id")

	// The re-compressed catalogue photo is a near-duplicate of its original.
	var dedup dedupJSON
	htmlPath := filepath.Join(e.work, "dups.html")
	mustJSON(t, e.run(exitOK, "dedup", "--json", "--threshold", "0.95", "--html", htmlPath).stdout, &dedup)
	if !hasCluster(dedup, "iconic__Garant-Ecological-Standard-Milk_Iconic", "dup__Garant-Ecological-Standard-Milk") {
		t.Fatalf("dedup did not pair the re-compressed photo with its original: %+v", dedup.Clusters)
	}
	page, err := os.ReadFile(htmlPath)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(page), "data:image/jpeg;base64,"); n < 2 {
		t.Errorf("HTML report holds %d thumbnails, want at least the 2 of the cluster", n)
	}
	// A re-compressed copy of a catalogue photo that is not itself in the catalogue.
	reupload := filepath.Join(e.work, "reupload.jpg")
	e.run(exitOK, "recompress", "--quality", "85", filepath.Join(e.photos, "iconic__Alpro-Blueberry-Soyghurt_Iconic.jpg"), reupload)
	var check checkJSON
	mustJSON(t, e.run(exitOK, "check", "--json", "--threshold", "0.95", reupload).stdout, &check)
	if !check.IsDuplicate || check.BestMatch == nil || check.BestMatch.Product.ID != "iconic__Alpro-Blueberry-Soyghurt_Iconic" {
		t.Errorf("check of a re-upload: %+v", check)
	}
	mustJSON(t, e.run(exitOK, "check", "--json", "--threshold", "0.95", query).stdout, &check)
	if check.IsDuplicate || check.BestMatch == nil || check.BestMatch.Score >= 0.95 {
		t.Errorf("check called a street photo a duplicate: %+v", check)
	}

	// Stats and get agree with the manifest.
	var stats statsJSON
	mustJSON(t, e.run(exitOK, "stats", "--json").stdout, &stats)
	if stats.Count != 10 || stats.CountByCategory["Juice"] != 3 || stats.Dim != 1280 || stats.Index.Size != 10 {
		t.Fatalf("stats: %+v", stats)
	}
	var got productJSON
	mustJSON(t, e.run(exitOK, "get", "--json", "iconic__Alpro-Blueberry-Soyghurt_Iconic").stdout, &got)
	if got.ImageSHA256 != fileSHA256(t, filepath.Join(e.photos, "iconic__Alpro-Blueberry-Soyghurt_Iconic.jpg")) ||
		got.Title != "Alpro-Blueberry-Soyghurt" || got.Attributes["shelf"] != "dairy" {
		t.Errorf("get: %+v", got)
	}

	// Re-running the same ingest embeds nothing: the store's sequence number does not move.
	res = e.run(exitFailure, "ingest", "--json", manifest)
	mustJSON(t, res.stdout, &sum)
	if sum.Created != 0 || sum.Updated != 0 || sum.Skipped != 10 || sum.Failed != 2 {
		t.Fatalf("second ingest: %+v", sum)
	}
	var stats2 statsJSON
	mustJSON(t, e.run(exitOK, "stats", "--json").stdout, &stats2)
	if stats2.StoreSeq != stats.StoreSeq {
		t.Errorf("re-ingest wrote to the store: seq %d -> %d", stats.StoreSeq, stats2.StoreSeq)
	}
	// Even sent again (no client-side skip), the server answers unchanged.
	mustJSON(t, e.run(exitFailure, "ingest", "--json", "--no-skip", manifest).stdout, &sum)
	if sum.Unchanged != 10 || sum.Created+sum.Updated != 0 {
		t.Errorf("ingest --no-skip: %+v", sum)
	}

	// Delete: one real id, one unknown.
	res = e.run(exitFailure, "delete", "train__Alpro-Blueberry-Soyghurt_003", "no-such-id")
	if !strings.Contains(res.stdout, "deleted train__Alpro-Blueberry-Soyghurt_003") || !strings.Contains(res.stdout, "NotFound") {
		t.Errorf("delete output: %q", res.stdout)
	}
	e.run(exitFailure, "get", "train__Alpro-Blueberry-Soyghurt_003")

	// A hot backup from the running server (LOOKALIKE_SERVER), verified before it lands.
	var hot backupJSON
	mustJSON(t, e.run(exitOK, "backup", "--json", "--out", filepath.Join(e.work, "hot.db")).stdout, &hot)
	if hot.Items != 9 || hot.Server != e.addr || len(hot.SHA256) != 64 {
		t.Errorf("hot backup: %+v, want 9 items from %s with a SHA-256", hot, e.addr)
	}

	// Stop with SIGTERM and start again: the same answers from the saved data.
	before := e.run(exitOK, "search", "--json", query).stdout
	srv.stop()
	e.run(exitFailure, "stats", "--timeout", "2s")

	backup := filepath.Join(e.work, "backup.db")
	var b backupJSON
	mustJSON(t, e.run(exitOK, "backup", "--json", "--data", e.data, "--out", backup).stdout, &b)
	if b.Items != 9 {
		t.Errorf("backup holds %d items, want 9", b.Items)
	}

	srv = e.startServer()
	after := e.run(exitOK, "search", "--json", query).stdout
	if before != after {
		t.Errorf("search differs after restart:\nbefore %s\nafter  %s", before, after)
	}
	var stats3 statsJSON
	mustJSON(t, e.run(exitOK, "stats", "--json").stdout, &stats3)
	if stats3.Count != 9 || stats3.SnapshotSeq == 0 {
		t.Errorf("after restart: %+v (want 9 products and the snapshot saved at shutdown)", stats3)
	}
	srv.stop()
}

func newE2E(t *testing.T) *e2eEnv {
	t.Helper()
	model, err := embed.FindModel()
	if err != nil {
		t.Fatalf("the embedding model is required: %v", err)
	}
	runtimeLib, err := embed.FindRuntime()
	if err != nil {
		t.Fatalf("the ONNX Runtime library is required: %v", err)
	}
	datasets, err := findSharedDir("datasets")
	if err != nil {
		t.Fatalf("shared datasets are required: %v", err)
	}
	dir := t.TempDir()
	e := &e2eEnv{
		t:      t,
		bin:    filepath.Join(dir, "lookalike"),
		work:   filepath.Join(dir, "work"),
		data:   filepath.Join(dir, "data"),
		photos: filepath.Join(datasets, "grocery", "images"),
	}
	if err := os.Mkdir(e.work, 0o755); err != nil {
		t.Fatal(err)
	}
	build := exec.Command("go", "build", "-o", e.bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	e.addr = freeLoopbackAddr(t)
	e.env = append(os.Environ(),
		"LOOKALIKE_MODEL="+model,
		"LOOKALIKE_ORT_LIB="+runtimeLib,
		"LOOKALIKE_SERVER="+e.addr,
		"LOOKALIKE_THREADS=2",
	)
	return e
}

// writeManifest writes the test catalogue: absolute paths to the shared photos, a
// re-compressed copy of one catalogue photo (relative path), a file that is not an image and
// one that does not exist.
func (e *e2eEnv) writeManifest() string {
	t := e.t
	e.run(exitOK, "recompress", "--quality", "85", filepath.Join(e.photos, e2eProducts()[0].photos[0]+".jpg"), filepath.Join(e.work, "dup.jpg"))
	if err := os.WriteFile(filepath.Join(e.work, "broken.jpg"), []byte("\xff\xd8\xff\xe0 this is not really a JPEG"), 0o644); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(e.work, "catalogue.csv")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w := csv.NewWriter(f)
	w.Write([]string{"id", "image", "category", "title", "shelf"})
	categories := []string{"Milk", "Soyghurt", "Juice"}
	shelves := []string{"dairy", "dairy", "juice"}
	for i, p := range e2eProducts() {
		for _, photo := range p.photos {
			w.Write([]string{photo, filepath.Join(e.photos, photo+".jpg"), categories[i], p.label, shelves[i]})
		}
		if i == 0 {
			w.Write([]string{"dup__" + p.label, "dup.jpg", categories[i], p.label + " (re-upload)", "dairy"})
			w.Write([]string{"broken", "broken.jpg", "Milk", "Broken upload", ""})
		}
	}
	w.Write([]string{"missing", "no/such/photo.jpg", "Juice", "Missing photo", ""})
	w.Flush()
	if err := errors.Join(w.Error(), f.Close()); err != nil {
		t.Fatal(err)
	}
	return path
}

// lockedBuffer collects a child's output while the test reads it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

type e2eServer struct {
	t    *testing.T
	cmd  *exec.Cmd
	logs *lockedBuffer
	done chan error
	http string // the HTTP front end (--http), e.g. http://127.0.0.1:41234
}

func (e *e2eEnv) startServer() *e2eServer {
	e.t.Helper()
	return e.startServerWith("--data", e.data)
}

// startServerWith starts the server with these backend flags.
func (e *e2eEnv) startServerWith(backend ...string) *e2eServer {
	t := e.t
	t.Helper()
	s := &e2eServer{t: t, logs: &lockedBuffer{}, done: make(chan error, 1)}
	httpFile := filepath.Join(e.work, "http-addr")
	args := append([]string{"serve", "--listen", e.addr, "--snapshot-interval", "-1s",
		"--http", "127.0.0.1:0", "--http-addr-file", httpFile}, backend...)
	s.cmd = exec.Command(e.bin, args...)
	s.cmd.Dir = e.work
	s.cmd.Env = e.env
	s.cmd.Stdout = s.logs
	s.cmd.Stderr = s.logs
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.done <- s.cmd.Wait() }()
	t.Cleanup(func() {
		if s.cmd.ProcessState == nil {
			_ = s.cmd.Process.Kill()
			<-s.done
		}
	})
	res := e.runAllowing("health", "--wait", "60s")
	if res.code != exitOK {
		t.Fatalf("server did not become SERVING: %s\nserver log:\n%s", res.stderr, s.logs.String())
	}
	addr, err := os.ReadFile(httpFile) // written before the server listens
	if err != nil {
		t.Fatal(err)
	}
	s.http = "http://" + strings.TrimSpace(string(addr))
	return s
}

// stop sends SIGTERM and expects a clean exit.
func (s *e2eServer) stop() {
	s.t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		s.t.Fatal(err)
	}
	select {
	case err := <-s.done:
		if err != nil {
			s.t.Fatalf("server exited with %v after SIGTERM\n%s", err, s.logs.String())
		}
	case <-time.After(60 * time.Second):
		_ = s.cmd.Process.Kill()
		s.t.Fatalf("server still running 60s after SIGTERM\n%s", s.logs.String())
	}
}

type cliResult struct {
	code           int
	stdout, stderr string
}

// run runs one client command and fails the test unless it exits with want.
func (e *e2eEnv) run(want int, args ...string) cliResult {
	e.t.Helper()
	res := e.runAllowing(args...)
	if res.code != want {
		e.t.Fatalf("lookalike %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), res.code, want, res.stdout, res.stderr)
	}
	if want != exitOK && !strings.HasPrefix(lastLine(res.stderr), "lookalike "+args[0]+": ") {
		e.t.Errorf("lookalike %s: failure without its one-line reason on stderr: %q", args[0], res.stderr)
	}
	return res
}

func (e *e2eEnv) runAllowing(args ...string) cliResult {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, e.bin, args...)
	cmd.Dir = e.work
	cmd.Env = e.env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	var exitErr *exec.ExitError
	switch {
	case errors.As(err, &exitErr):
		code = exitErr.ExitCode()
	case err != nil:
		e.t.Fatalf("lookalike %s: %v", strings.Join(args, " "), err)
	}
	return cliResult{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

func mustJSON(t *testing.T, text string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(text), v); err != nil {
		t.Fatalf("output is not the documented JSON: %v\n%s", err, text)
	}
}

func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// readFailuresFile returns id -> [stage, code, reason].
func readFailuresFile(t *testing.T, path string) map[string][3]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("failures file: %v", err)
	}
	defer f.Close()
	recs, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][3]string{}
	for _, r := range recs[1:] {
		out[r[1]] = [3]string{r[3], r[4], r[5]}
	}
	if len(out) != len(recs)-1 {
		t.Fatalf("failures file repeats ids: %v", recs)
	}
	return out
}

func hasCluster(d dedupJSON, a, b string) bool {
	for _, c := range d.Clusters {
		joined := "," + strings.Join(c.IDs, ",") + ","
		if strings.Contains(joined, ","+a+",") && strings.Contains(joined, ","+b+",") {
			return true
		}
	}
	return false
}

func fileSHA256(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// httpSearch posts a photo to base's /v1/search/image as multipart/form-data and returns the
// result ids.
func httpSearch(t *testing.T, base, photo string) []string {
	t.Helper()
	img, err := os.ReadFile(photo)
	if err != nil {
		t.Fatal(err)
	}
	var body bytes.Buffer
	w := multipart.NewWriter(&body)
	part, _ := w.CreateFormFile("image", filepath.Base(photo))
	part.Write(img)
	w.WriteField("k", "5")
	w.Close()
	resp, err := http.Post(base+"/v1/search/image", w.FormDataContentType(), &body)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Results []struct {
			Product struct {
				ID string `json:"id"`
			} `json:"product"`
		} `json:"results"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != 200 {
		t.Fatalf("HTTP search: %d %v", resp.StatusCode, err)
	}
	var ids []string
	for _, r := range out.Results {
		ids = append(ids, r.Product.ID)
	}
	return ids
}
