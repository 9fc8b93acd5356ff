package benchmarks

import (
	"cmp"
	"context"
	"fmt"
	"math/rand"
	"net"
	"os"
	"path/filepath"
	"runtime/pprof"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"lookalike/benchmarks/internal/benchkit"
	"lookalike/catalog"
	"lookalike/embed"
	"lookalike/index"
	pb "lookalike/proto/lookalike/v1"
	"lookalike/server"
	"lookalike/store"
)

// The serving benchmarks below run on a catalogue servebench left behind (servebench
// -keep-data: <work>/data-<variant>), so they pay a snapshot load instead of a 100,000-item
// ingest. Each runs its clients for a fixed time, once (-benchtime 1x), reports QPS and
// latency percentiles as metrics and, with LOOKALIKE_BENCH_PROFILE set, writes a CPU profile
// of that load phase alone (not of the catalogue's opening) to $LOOKALIKE_BENCH_PROFILE-<name>.prof.
//
//	LOOKALIKE_BENCH_SERVE_DATA=benchmarks/results/tmp/serve/data-float32 LOOKALIKE_BENCH_PROFILE=/tmp/f32 \
//	  go test ./benchmarks -run '^$' -bench 'SearchByIDUnderLoad|FilterCost|StoreVector' -benchtime 1x
//
// LOOKALIKE_BENCH_QUANTIZE (none or int8) must be the setting the catalogue was built with,
// or it is rebuilt at open (minutes); LOOKALIKE_BENCH_CLIENTS (16) and
// LOOKALIKE_BENCH_SECONDS (5) size the load.

func serveData(b *testing.B) (string, index.Quantization) {
	data := os.Getenv("LOOKALIKE_BENCH_SERVE_DATA")
	if data == "" {
		b.Skip("LOOKALIKE_BENCH_SERVE_DATA names no catalogue (servebench -keep-data leaves one)")
	}
	q, err := index.ParseQuantization(os.Getenv("LOOKALIKE_BENCH_QUANTIZE"))
	if err != nil {
		b.Fatal(err)
	}
	return data, q
}

// closedLoop is benchkit.ClosedLoop for a benchmark: it profiles the load phase when asked,
// fails on any failed call, and reports the throughput and latency percentiles as metrics.
func closedLoop(b *testing.B, name string, clients int, d time.Duration, call func(*rand.Rand) error) {
	b.Helper()
	if prefix := os.Getenv("LOOKALIKE_BENCH_PROFILE"); prefix != "" {
		f, err := os.Create(prefix + "-" + name + ".prof")
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			b.Fatal(err)
		}
		defer pprof.StopCPUProfile()
	}
	var mu sync.Mutex
	var firstErr error
	b.ResetTimer()
	res := benchkit.ClosedLoop(context.Background(), clients, d, 1, func(_ context.Context, rng *rand.Rand) error {
		err := call(rng)
		if err != nil {
			mu.Lock()
			firstErr = cmp.Or(firstErr, err)
			mu.Unlock()
		}
		return err
	})
	b.StopTimer()
	if res.Errors > 0 {
		b.Fatalf("%d calls failed, the first: %v", res.Errors, firstErr)
	}
	n := len(res.Latencies)
	b.ReportMetric(float64(res.Elapsed.Nanoseconds())/float64(max(n, 1)), "ns/op") // wall time per call, all clients together
	b.ReportMetric(res.QPS(), "qps")
	for _, p := range []float64{50, 99} {
		b.ReportMetric(float64(benchkit.Percentile(res.Latencies, p).Microseconds())/1000, fmt.Sprintf("p%.0f-ms", p))
	}
}

func openEmbedder(b *testing.B) *embed.Embedder {
	e, err := embed.Open(context.Background(), embed.Config{})
	if err != nil {
		b.Fatalf("embedder (make setup fetches ONNX Runtime; the model is under ../shared/models): %v", err)
	}
	b.Cleanup(func() { _ = e.Close() })
	return e
}

// BenchmarkSearchByIDUnderLoad is servebench's SearchById level: clients closed-loop callers
// of SearchById (k 10, a random catalogue id, the default ef). "grpc" serves in process over
// loopback TCP (server.Serve, a grpc client: the servebench path with client and server in
// one process); "catalog" calls catalog.SearchByID directly, without gRPC.
func BenchmarkSearchByIDUnderLoad(b *testing.B) {
	data, quant := serveData(b)
	clients := envInt("LOOKALIKE_BENCH_CLIENTS", 16)
	d := time.Duration(envInt("LOOKALIKE_BENCH_SECONDS", 5)) * time.Second
	emb := openEmbedder(b)
	params := catalog.IndexParams{Quantize: quant}

	b.Run("grpc", func(b *testing.B) {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			done <- server.Serve(ctx, server.Config{DataDir: data, Embedder: emb, Index: params, SnapshotInterval: -1}, lis, nil, nil)
		}()
		defer func() {
			cancel()
			if err := <-done; err != nil {
				b.Error(err)
			}
		}()
		conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			b.Fatal(err)
		}
		defer conn.Close()
		client := pb.NewLookalikeClient(conn)
		var count int
		for start := time.Now(); ; time.Sleep(100 * time.Millisecond) {
			st, err := client.Stats(context.Background(), &pb.StatsRequest{})
			if err == nil {
				count = int(st.GetCount())
				break
			}
			if time.Since(start) > 3*time.Minute {
				b.Fatalf("server not ready: %v", err)
			}
		}
		closedLoop(b, "grpc", clients, d, func(rng *rand.Rand) error {
			_, err := client.SearchById(context.Background(), &pb.SearchByIdRequest{Id: benchkit.CatalogueID(rng.Intn(count)), K: 10})
			return err
		})
	})

	b.Run("catalog", func(b *testing.B) {
		cat, err := catalog.Open(context.Background(), catalog.Config{DataDir: data, Embedder: emb, Index: params})
		if err != nil {
			b.Fatal(err)
		}
		defer cat.Close()
		count := cat.Len()
		closedLoop(b, "catalog", clients, d, func(rng *rand.Rand) error {
			_, err := cat.SearchByID(context.Background(), benchkit.CatalogueID(rng.Intn(count)), catalog.SearchOptions{K: 10})
			return err
		})
	})
}

// BenchmarkFilterCost searches the server's float32 graph (its snapshot) directly with each
// catalogue vector as the query and the query's own key excluded, as SearchById does, at the
// default ef: with no filter (k+1, self dropped afterwards), with a filter comparing keys,
// and with a filter shaped like the catalogue's (a read lock on a mutex every search shares,
// a map lookup of the key's product, a map lookup of the excluded ids), isolating what that
// filter costs per search under concurrent load. A quantised snapshot is skipped.
func BenchmarkFilterCost(b *testing.B) {
	data, _ := serveData(b)
	clients := envInt("LOOKALIKE_BENCH_CLIENTS", 16)
	d := time.Duration(envInt("LOOKALIKE_BENCH_SECONDS", 5)) * time.Second
	// The server saves its snapshot without the live vectors, which its store holds.
	st, err := store.Open(filepath.Join(data, catalog.StoreFileName), store.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	source := func(k index.Key) []float32 {
		v, err := st.Vector(k)
		if err != nil {
			return nil
		}
		return v
	}
	g, _, err := index.LoadSnapshotWith(filepath.Join(data, catalog.SnapshotFileName), index.LoadOptions{Vectors: source})
	if err != nil {
		b.Fatal(err)
	}
	if g.Stats().Quantized {
		b.Skip("the float32 graph's filter cost (this snapshot is quantised)")
	}
	n := g.Len()
	type product struct{ id string }
	byKey := make(map[index.Key]*product, n)
	for k := 1; k <= n; k++ {
		byKey[index.Key(k)] = &product{id: benchkit.CatalogueID(k - 1)}
	}
	var metaMu sync.RWMutex
	query := func(rng *rand.Rand) (index.Key, []float32) {
		k := index.Key(1 + rng.Intn(n))
		v, ok := g.Vector(k)
		if !ok {
			b.Fatalf("key %d has no vector", k)
		}
		return k, v
	}
	b.Run("none", func(b *testing.B) {
		closedLoop(b, "filter-none", clients, d, func(rng *rand.Rand) error {
			_, v := query(rng)
			g.Search(v, 11, index.SearchOptions{})
			return nil
		})
	})
	b.Run("key", func(b *testing.B) {
		closedLoop(b, "filter-key", clients, d, func(rng *rand.Rand) error {
			self, v := query(rng)
			g.Search(v, 10, index.SearchOptions{Filter: func(k index.Key) bool { return k != self }})
			return nil
		})
	})
	b.Run("rwmutex-map", func(b *testing.B) {
		closedLoop(b, "filter-rwmutex-map", clients, d, func(rng *rand.Rand) error {
			self, v := query(rng)
			excluded := map[string]struct{}{benchkit.CatalogueID(int(self) - 1): {}}
			g.Search(v, 10, index.SearchOptions{Filter: func(k index.Key) bool {
				metaMu.RLock()
				p, ok := byKey[k]
				metaMu.RUnlock()
				if !ok {
					return false
				}
				_, ex := excluded[p.id]
				return !ex
			}})
			return nil
		})
	})
}

// BenchmarkStoreVector reads full vectors from the catalogue's bbolt file as an int8 graph's
// re-rank does (store.Vector: one read transaction and a decoded copy per key), 96 random keys
// per call (ef 64 plus the ef/2 spill), by the concurrent clients.
func BenchmarkStoreVector(b *testing.B) {
	data, _ := serveData(b)
	clients := envInt("LOOKALIKE_BENCH_CLIENTS", 16)
	d := time.Duration(envInt("LOOKALIKE_BENCH_SECONDS", 5)) * time.Second
	s, err := store.Open(filepath.Join(data, catalog.StoreFileName), store.Options{ReadOnly: true})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	st, err := s.Stats()
	if err != nil {
		b.Fatal(err)
	}
	n := st.Photos
	closedLoop(b, "store-vector", clients, d, func(rng *rand.Rand) error {
		for range 96 {
			if _, err := s.Vector(uint32(1 + rng.Intn(n))); err != nil {
				return err
			}
		}
		return nil
	})
}
