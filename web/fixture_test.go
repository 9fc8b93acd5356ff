package web_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"image/jpeg"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"lookalike/embed"
	"lookalike/internal/dataset"
	pb "lookalike/proto/lookalike/v1"
	"lookalike/server"
	"lookalike/web"
)

// sharedEmbedder is opened once per test binary and handed to every server, so no test
// loads the model twice.
var sharedEmbedder = sync.OnceValues(func() (*embed.Embedder, error) {
	return embed.Open(context.Background(), embed.Config{})
})

// shared holds the servers several tests use, stopped by TestMain.
var shared struct {
	mu      sync.Mutex
	servers []*fixture
}

func TestMain(m *testing.M) {
	code := m.Run()
	shared.mu.Lock()
	for _, f := range shared.servers {
		f.stop()
		_ = os.RemoveAll(f.dir)
	}
	shared.mu.Unlock()
	if e, err := sharedEmbedder(); err == nil {
		_ = e.Close()
	}
	os.Exit(code)
}

// fixture is a real server (gRPC and the HTTP front end) on loopback.
type fixture struct {
	dir    string
	base   string // the HTTP front end, e.g. http://127.0.0.1:41234
	http   *http.Client
	conn   *grpc.ClientConn
	grpc   pb.LookalikeClient
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	err    error
}

// serverOptions are what a test varies about its server.
type serverOptions struct {
	cfg       server.Config // DataDir and Embedder are filled in
	web       web.Config
	clientTLS *tls.Config // the HTTP client's, for a TLS server
}

// start runs a server in dir and waits until its HTTP front end reports SERVING.
func start(t testing.TB, dir string, o serverOptions) *fixture {
	t.Helper()
	emb, err := sharedEmbedder()
	if err != nil {
		t.Fatalf("open the model: %v", err)
	}
	cfg := o.cfg
	cfg.DataDir, cfg.Embedder = dir, emb
	if cfg.SnapshotInterval == 0 {
		cfg.SnapshotInterval = -1
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hlis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	scheme := "http"
	transport := &http.Transport{}
	if o.clientTLS != nil {
		scheme = "https"
		transport.TLSClientConfig = o.clientTLS
	}
	ctx, cancel := context.WithCancel(context.Background())
	f := &fixture{dir: dir, base: scheme + "://" + hlis.Addr().String(), http: &http.Client{Transport: transport},
		cancel: cancel, done: make(chan error, 1)}
	logger := slog.New(slog.DiscardHandler)
	if testing.Verbose() {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	front := server.WithHTTP(hlis, func(gw server.Gateway) (http.Handler, error) { return web.New(gw, o.web) })
	go func() { f.done <- server.Serve(ctx, cfg, lis, nil, logger, front) }()
	if cfg.TLSCertFile == "" {
		f.conn, err = grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
		if err != nil {
			t.Fatal(err)
		}
		f.grpc = pb.NewLookalikeClient(f.conn)
	}
	// Poll the health route until the catalogue is open.
	for {
		resp, err := f.http.Get(f.base + "/healthz")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.Contains(string(body), "SERVING") && !strings.Contains(string(body), "NOT_SERVING") {
				break
			}
		}
		select {
		case err := <-f.done:
			t.Fatalf("the server stopped before serving: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	return f
}

// startTemp runs a server for one test, stopped when the test ends.
func startTemp(t *testing.T, o serverOptions) *fixture {
	f := start(t, t.TempDir(), o)
	t.Cleanup(func() {
		if err := f.stop(); err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return f
}

func (f *fixture) stop() error {
	f.once.Do(func() {
		f.cancel()
		f.err = <-f.done
		if f.conn != nil {
			_ = f.conn.Close()
		}
		f.http.CloseIdleConnections()
	})
	return f.err
}

// catalogue is what the shared servers hold: a few grocery products, each with its catalogue
// photo and some in-store photos, and two duplicates of catalogue photos.
type catalogue struct {
	products []string                   // ids, in order
	street   map[string]dataset.Photo   // a held-out in-store photo of each product
	iconic   map[string][]byte          // each product's catalogue photo
	photos   map[string][]dataset.Photo // each product's photos as ingested
}

// The products of the shared catalogue: different kinds, so that only the planted
// duplicates cluster at the default threshold.
var fixtureProducts = []string{
	"Alpro-Blueberry-Soyghurt", "Oatly-Oat-Milk", "Bravo-Apple-Juice", "Arla-Sour-Cream",
	"Yoggi-Vanilla-Yoghurt", "God-Morgon-Orange-Juice",
}

const (
	// exactDup has the same photo bytes as Oatly-Oat-Milk's catalogue photo; copyDup a
	// re-encoded copy of Bravo-Apple-Juice's.
	exactDup = "Oatly-Oat-Milk-reupload"
	copyDup  = "Bravo-Apple-Juice-copy"
)

// loadCatalogue reads the fixture's photos from the shared grocery collection.
func loadCatalogue(t testing.TB) *catalogue {
	t.Helper()
	all, err := dataset.LoadPhotos(dataset.PhotosGrocery)
	if err != nil {
		t.Fatal(err)
	}
	c := &catalogue{street: map[string]dataset.Photo{}, iconic: map[string][]byte{}, photos: map[string][]dataset.Photo{}}
	want := map[string]bool{}
	for _, id := range fixtureProducts {
		want[id] = true
	}
	for _, p := range all {
		if !want[p.Label] {
			continue
		}
		switch split := p.Fields["split"]; {
		case split == "iconic":
			b, err := os.ReadFile(p.Path)
			if err != nil {
				t.Fatal(err)
			}
			c.iconic[p.Label] = b
			c.photos[p.Label] = append([]dataset.Photo{p}, c.photos[p.Label]...)
		case split == "train" && len(c.photos[p.Label]) < 3:
			c.photos[p.Label] = append(c.photos[p.Label], p)
		case split == "val":
			if _, ok := c.street[p.Label]; !ok {
				c.street[p.Label] = p
			}
		}
	}
	for _, id := range fixtureProducts {
		if c.iconic[id] == nil || c.street[id].Path == "" {
			t.Fatalf("the grocery collection lacks photos of %s", id)
		}
	}
	c.products = append(c.products, fixtureProducts...)
	return c
}

// requests are the upserts of the catalogue.
func (c *catalogue) requests(t testing.TB) []*pb.UpsertRequest {
	t.Helper()
	var reqs []*pb.UpsertRequest
	for _, id := range c.products {
		r := &pb.UpsertRequest{Id: id, Title: strings.ReplaceAll(id, "-", " "), Category: c.photos[id][0].Fields["coarse_label"],
			Attributes: map[string]string{"brand": strings.SplitN(id, "-", 2)[0]}}
		for _, p := range c.photos[id] {
			b, err := os.ReadFile(p.Path)
			if err != nil {
				t.Fatal(err)
			}
			r.Photos = append(r.Photos, &pb.PhotoInput{Id: strings.TrimSuffix(filepath.Base(p.Path), ".jpg"), Content: &pb.PhotoInput_Image{Image: b}})
		}
		reqs = append(reqs, r)
	}
	reqs = append(reqs,
		&pb.UpsertRequest{Id: exactDup, Title: "Oat milk (seller upload)", Category: "Oat-Milk", PhotoId: "main",
			Content: &pb.UpsertRequest_Image{Image: c.iconic["Oatly-Oat-Milk"]}},
		&pb.UpsertRequest{Id: copyDup, Title: "Apple juice (re-encoded)", Category: "Juice", PhotoId: "main",
			Content: &pb.UpsertRequest_Image{Image: reencode(t, c.iconic["Bravo-Apple-Juice"], 70)}},
	)
	return reqs
}

// reencode decodes a JPEG and encodes it again at quality q: a copy, not the same bytes.
func reencode(t testing.TB, b []byte, q int) []byte {
	t.Helper()
	img, err := jpeg.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, img, &jpeg.Options{Quality: q}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// ingest writes the catalogue through the server's gRPC port (the HTTP routes are what the
// tests examine).
func (f *fixture) ingest(t testing.TB, c *catalogue) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, r := range c.requests(t) {
		res, err := f.grpc.Upsert(ctx, r)
		if err != nil {
			t.Fatalf("upsert %s: %v", r.GetId(), err)
		}
		if res.GetOutcome() != pb.Outcome_OUTCOME_CREATED {
			t.Fatalf("upsert %s: %v", r.GetId(), res.GetOutcome())
		}
	}
}

// sharedServer starts (once per name) a server holding the catalogue, kept for the whole
// test binary. Tests that change it use ids of their own.
func sharedServer(t *testing.T, name string) (*fixture, *catalogue) {
	t.Helper()
	shared.mu.Lock()
	defer shared.mu.Unlock()
	s, ok := sharedByName[name]
	if !ok {
		s = &sharedEntry{}
		sharedByName[name] = s
		dir, err := os.MkdirTemp("", "lookalike-web-test-")
		if err != nil {
			t.Fatal(err)
		}
		s.cat = loadCatalogue(t)
		s.f = start(t, dir, serverOptions{})
		shared.servers = append(shared.servers, s.f)
		s.f.ingest(t, s.cat)
	}
	return s.f, s.cat
}

type sharedEntry struct {
	f   *fixture
	cat *catalogue
}

// sharedByName is guarded by shared.mu.
var sharedByName = map[string]*sharedEntry{}

// do sends a request and returns the response with its body read.
func (f *fixture) do(t testing.TB, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	resp, err := f.http.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read the body: %v", req.Method, req.URL, err)
	}
	return resp, body
}

// request builds a request to the front end.
func (f *fixture) request(t testing.TB, method, path string, body io.Reader, header ...string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, f.base+path, body)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	return req
}

// apiError is the gateway's error body.
type apiError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

func decodeError(t testing.TB, body []byte) apiError {
	t.Helper()
	var e apiError
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("error body %q is not the gateway's JSON: %v", body, err)
	}
	return e
}

// errorOf reads an error body: the gateway's {"code", "message"}, or a stream's, which
// fails before its first message as {"error": {"code", "message"}}.
func errorOf(t testing.TB, body []byte) apiError {
	t.Helper()
	var wrapped struct {
		Error *apiError `json:"error"`
	}
	if json.Unmarshal(body, &wrapped) == nil && wrapped.Error != nil {
		return *wrapped.Error
	}
	return decodeError(t, body)
}

// ndjson splits a streamed response into its lines' results, failing on an error line.
func ndjson(body []byte) ([]json.RawMessage, error) {
	var out []json.RawMessage
	for line := range bytes.SplitSeq(bytes.TrimSpace(body), []byte("\n")) {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var msg struct {
			Result json.RawMessage `json:"result"`
			Error  *apiError       `json:"error"`
		}
		if err := json.Unmarshal(line, &msg); err != nil {
			return out, fmt.Errorf("stream line %q: %v", line, err)
		}
		if msg.Error != nil {
			return out, errors.New(msg.Error.Message)
		}
		out = append(out, msg.Result)
	}
	return out, nil
}
