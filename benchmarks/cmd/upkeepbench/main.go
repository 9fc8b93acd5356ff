// Command upkeepbench measures what the graph's upkeep costs the writes (issue 10, item 7):
// the latency of one-product writes to an embedded catalogue of real-distribution photo
// vectors while nothing else runs, while graph snapshots are saved one after another, and
// while a compaction (the rebuild that drops the tombstones a bulk replace leaves) runs. It
// writes benchmarks/results/upkeep.md.
//
// Each write replaces one product's photo with another vector: one fsynced store transaction,
// an insertion into the graph and a tombstone, as a catalogue team's bulk re-shoot does. One
// client writes in a closed loop, so the largest latency is also the largest gap between two
// acknowledgements. The program uses only what the catalogue exported before upkeep moved
// beside the write path, so the same file measures an older tree for comparison.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"lookalike/benchmarks/internal/benchkit"
	"lookalike/benchmarks/internal/embedset"
	"lookalike/catalog"
	"lookalike/embed"
	"lookalike/index"
)

type config struct {
	photos, writes int
	out, work      string
	cache          string
	name           string
}

func main() {
	var cfg config
	flag.IntVar(&cfg.photos, "photos", 100000, "catalogue size (one photo per product)")
	flag.IntVar(&cfg.writes, "writes", 3000, "measured writes per case (the compaction case runs until the compaction has finished)")
	flag.StringVar(&cfg.out, "out", "benchmarks/results", "where upkeep.md goes")
	flag.StringVar(&cfg.work, "work", "benchmarks/results/tmp/upkeep", "scratch data directory")
	flag.StringVar(&cfg.cache, "cache", "benchmarks/results/cache", "embedding cache directory")
	flag.StringVar(&cfg.name, "name", "upkeep.md", "result file name in -out")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(context.Background(), log, cfg); err != nil {
		log.Error("upkeepbench failed", "err", err)
		os.Exit(1)
	}
}

// phase is one case's measured writes.
type phase struct {
	name      string
	lat       []time.Duration
	took      time.Duration
	upkeep    string // what ran beside the writes
	beforeTom int    // graph tombstones when the case began
}

func run(ctx context.Context, log *slog.Logger, cfg config) error {
	machine := benchkit.DescribeMachine(ctx, ".")
	set, err := embedset.FashionMNIST(ctx, log, cfg.cache)
	if err != nil {
		return err
	}
	dim := len(set.Train[0])
	base := embedset.Synthetic(set.Train, cfg.photos, 0.05/math.Sqrt(float64(dim)), 1)
	// Replacements: the compaction case needs a quarter of the catalogue replaced (the
	// graph compacts at 20% tombstones), the other cases cfg.writes each.
	// They are mixes of the real test embeddings, none of which the catalogue holds (a write
	// of the vector a photo already has is a no-op).
	need := cfg.photos/4 + 4*cfg.writes
	repl := embedset.Synthetic(set.Test, len(set.Test)+need, 0.05/math.Sqrt(float64(dim)), 2)[len(set.Test):]
	emb, err := embed.Open(ctx, embed.Config{})
	if err != nil {
		return err
	}
	defer emb.Close()
	if err := os.RemoveAll(cfg.work); err != nil {
		return err
	}
	// No saves of its own: the snapshot case saves when it chooses.
	backend, err := catalog.OpenEmbedded(ctx, catalog.EmbeddedConfig{DataDir: cfg.work, ModelIdentity: emb.Identity(),
		Dim: emb.Dim(), SnapshotChanges: -1})
	if err != nil {
		return err
	}
	c, err := catalog.Open(ctx, catalog.Config{Backend: backend, Embedder: emb, Logger: log})
	if err != nil {
		return err
	}
	defer os.RemoveAll(cfg.work)
	defer c.Close()

	start := time.Now()
	for i := 0; i < len(base); i += 500 {
		var ws []catalog.Write
		for j := i; j < min(i+500, len(base)); j++ {
			ws = append(ws, catalog.Write{ID: strconv.Itoa(j), Photos: []catalog.PhotoWrite{{Vector: base[j]}}})
		}
		if err := upsertAll(ctx, c, ws); err != nil {
			return err
		}
		if (i/500)%40 == 0 {
			log.Info("ingesting", "done", i, "of", len(base))
		}
	}
	ingest := time.Since(start)
	log.Info("ingested", "photos", len(base), "took", ingest)

	graph := backend.Graph()
	next := 0 // next replacement vector; replacements go round the products in order
	write := func() (time.Duration, error) {
		id := strconv.Itoa(next % len(base))
		v := repl[next%len(repl)]
		next++
		t := time.Now()
		r, err := c.Upsert(ctx, catalog.Write{ID: id, Photos: []catalog.PhotoWrite{{Vector: v}}})
		d := time.Since(t)
		if err == nil && r.Outcome != catalog.Updated {
			err = fmt.Errorf("write of product %s: %s, want updated", id, r.Outcome)
		}
		return d, err
	}
	measure := func(name, upkeep string, until func(done int) bool) (phase, error) {
		p := phase{name: name, upkeep: upkeep, beforeTom: graph.Stats().Tombstones}
		t := time.Now()
		for done := 0; !until(done); done++ {
			d, err := write()
			if err != nil {
				return p, err
			}
			p.lat = append(p.lat, d)
		}
		p.took = time.Since(t)
		log.Info("case measured", "case", name, "writes", len(p.lat), "took", p.took)
		return p, nil
	}
	var phases []phase

	p, err := measure("no upkeep", "nothing", func(done int) bool { return done >= cfg.writes })
	if err != nil {
		return err
	}
	phases = append(phases, p)

	// Snapshot saves for the whole case: back to back (every write overlaps a save: the
	// worst case), then one after every saveEvery writes, as the server saves after
	// --snapshot-changes (4,000 by default; here eight times as often).
	const saveEvery = 500
	var writes atomic.Int64
	for _, spaced := range []bool{false, true} {
		name, how := "snapshot saves, back to back", "back to back"
		if spaced {
			name, how = fmt.Sprintf("a snapshot save every %d writes", saveEvery), fmt.Sprintf("one after every %d writes", saveEvery)
		}
		var saves, saveTook atomic.Int64
		stop := make(chan struct{})
		var wg sync.WaitGroup
		var saveErr error
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				t := time.Now()
				// A save is skipped when nothing changed; the writes below always change something.
				if err := backend.SaveSnapshot(ctx); err != nil {
					saveErr = err
					return
				}
				took := time.Since(t)
				saves.Add(1)
				saveTook.Add(int64(took))
				for spaced && writes.Load() < int64(saveEvery)*(saves.Load()) {
					select {
					case <-stop:
						return
					case <-time.After(time.Millisecond):
					}
				}
			}
		})
		writes.Store(0)
		p, err := measure(name, "", func(done int) bool {
			writes.Store(int64(done))
			return done >= cfg.writes
		})
		close(stop)
		wg.Wait()
		if err == nil {
			err = saveErr
		}
		if err != nil {
			return err
		}
		if n := saves.Load(); n > 0 {
			p.upkeep = fmt.Sprintf("%d graph snapshot saves %s, %.2f s each on average", n, how, time.Duration(saveTook.Load()/n).Seconds())
		}
		phases = append(phases, p)
	}

	// Bulk replace, unmeasured, to just below the compaction threshold: tombstones >
	// MaxTombstoneFraction of the nodes (which grow by one per replacement).
	frac := graph.Config().MaxTombstoneFraction
	lead := cfg.writes / 10
	for {
		st := graph.Stats()
		// Replacements left before the crossing: t + r > frac*(n + r).
		left := int((frac*float64(st.Nodes)-float64(st.Tombstones))/(1-frac)) - lead
		if left <= 0 {
			break
		}
		var ws []catalog.Write
		for range min(left, 500) {
			ws = append(ws, catalog.Write{ID: strconv.Itoa(next % len(base)), Photos: []catalog.PhotoWrite{{Vector: repl[next%len(repl)]}}})
			next++
		}
		if err := upsertAll(ctx, c, ws); err != nil {
			return err
		}
		if next >= len(repl) {
			return fmt.Errorf("ran out of replacement vectors before the compaction threshold")
		}
	}
	// Measured: cfg.writes writes from a few before the crossing; then the writes stop and the
	// compaction is waited for (until the tombstones have been dropped: it swapped its graph
	// in). Writes as fast as one client can make them may outpace its catch-up, so it ends
	// only once they stop.
	var crossing time.Time
	var atCrossing struct{ tombstones, nodes int }
	compacting, compactedAt := 0, time.Time{}
	dropped := func(st index.Stats) bool {
		return !crossing.IsZero() && float64(st.Tombstones) <= frac*float64(st.Nodes)/2
	}
	p, err = measure("compaction", "", func(done int) bool {
		st := graph.Stats()
		if crossing.IsZero() && float64(st.Tombstones) > frac*float64(st.Nodes) {
			crossing = time.Now()
			atCrossing.tombstones, atCrossing.nodes = st.Tombstones, st.Nodes
		}
		if compactedAt.IsZero() && dropped(st) {
			compactedAt = time.Now()
		}
		if !crossing.IsZero() && compactedAt.IsZero() {
			compacting++
		}
		return done >= cfg.writes
	})
	if err != nil {
		return err
	}
	if crossing.IsZero() {
		return fmt.Errorf("the compaction case never crossed the compaction threshold")
	}
	for compactedAt.IsZero() {
		time.Sleep(50 * time.Millisecond)
		if dropped(graph.Stats()) {
			compactedAt = time.Now()
		}
	}
	p.upkeep = fmt.Sprintf("a compaction of the graph (%d tombstones of %d nodes when it began), running during %d of the writes, "+
		"done %.1f s after the write that started it (%.1f s after the writes stopped)", atCrossing.tombstones, atCrossing.nodes,
		compacting, compactedAt.Sub(crossing).Seconds(), max(0, compactedAt.Sub(crossing.Add(p.took)).Seconds()))
	phases = append(phases, p)
	return writeResults(cfg, machine, set.Identity, len(base), ingest, phases)
}

func upsertAll(ctx context.Context, c *catalog.Catalog, ws []catalog.Write) error {
	for _, r := range c.UpsertBatch(ctx, ws) {
		if r.Err != nil {
			return fmt.Errorf("upsert %s: %w", r.ID, r.Err)
		}
	}
	return nil
}

func writeResults(cfg config, m benchkit.Machine, identity string, photos int, ingest time.Duration, phases []phase) error {
	var b strings.Builder
	fmt.Fprintf(&b, "## Write latency during upkeep\n\n%s", m.Markdown())
	fmt.Fprintf(&b, "- catalogue: %d one-photo products (embedded backend, float32 graph, M=16, efConstruction=200), "+
		"1280-d real-distribution vectors (Fashion-MNIST embedded with %s, then convex mixes, as the 1M set); ingested in %.0f s\n",
		photos, identity, ingest.Seconds())
	fmt.Fprintf(&b, "- each write: catalog.Upsert of one product with a new vector (fsynced store transaction, graph insertion, "+
		"a tombstone); one client, closed loop, so max is also the longest gap between acknowledgements\n")
	fmt.Fprintf(&b, "- `go run ./benchmarks/cmd/upkeepbench -photos %d -writes %d`\n\n", photos, cfg.writes)
	t := benchkit.Table{Header: []string{"case", "writes", "writes/s", "p50 ms", "p99 ms", "max ms", "p99 / no upkeep", "beside the writes"}}
	var baseP99 time.Duration
	for i, p := range phases {
		s := slices.Clone(p.lat)
		slices.Sort(s)
		p99 := benchkit.Percentile(s, 99)
		if i == 0 {
			baseP99 = p99
		}
		t.Add(p.name, len(s), fmt.Sprintf("%.0f", float64(len(s))/p.took.Seconds()), benchkit.Millis(benchkit.Percentile(s, 50)),
			benchkit.Millis(p99), benchkit.Millis(s[len(s)-1]), fmt.Sprintf("%.2fx", float64(p99)/float64(baseP99)), p.upkeep)
	}
	b.WriteString(t.Markdown())
	if err := os.MkdirAll(cfg.out, 0o755); err != nil {
		return err
	}
	path := filepath.Join(cfg.out, cfg.name)
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		return err
	}
	fmt.Print(b.String())
	return nil
}
