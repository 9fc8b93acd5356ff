package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	lookalikev1 "lookalike/proto/lookalike/v1"
)

// dedupJSON is `lookalike dedup --json`.
type dedupJSON struct {
	Threshold float64       `json:"threshold"`
	MinTier   string        `json:"min_tier,omitempty"`
	Clusters  []clusterJSON `json:"clusters"`
}

type clusterJSON struct {
	IDs []string `json:"ids"`
	// Tier is the weakest tier among the edges; Resolved says a reviewer decided every pair.
	Tier     string        `json:"tier"`
	Resolved bool          `json:"resolved"`
	Edges    []edgeJSON    `json:"edges"`
	Products []productJSON `json:"products"`
}

type edgeJSON struct {
	A     string  `json:"a"`
	B     string  `json:"b"`
	Score float32 `json:"score"`
	// PhotoA and PhotoB name the photos of A and B that matched.
	PhotoA string `json:"photo_a"`
	PhotoB string `json:"photo_b"`
	// Tier and the signals that placed the pair there; Hamming and CropHamming are -1 when
	// unknown (CropHamming also when the tier could not change with it), CropCorrelation 0
	// when not computed.
	Tier            string        `json:"tier"`
	Hamming         int32         `json:"hamming"`
	CropHamming     int32         `json:"crop_hamming"`
	CropCorrelation float32       `json:"crop_correlation"`
	SameBytes       bool          `json:"same_bytes"`
	Decision        *decisionJSON `json:"decision,omitempty"`
}

// decisionJSON is a recorded duplicate decision.
type decisionJSON struct {
	A       string `json:"a"`
	B       string `json:"b"`
	Verdict string `json:"verdict"`
	Keep    string `json:"keep,omitempty"`
	By      string `json:"by,omitempty"`
	At      string `json:"at,omitempty"`
	Note    string `json:"note,omitempty"`
}

func toDecisionJSON(d *lookalikev1.Decision) *decisionJSON {
	if d == nil {
		return nil
	}
	return &decisionJSON{A: d.GetA(), B: d.GetB(), Verdict: d.GetVerdict(), Keep: d.GetKeep(), By: d.GetBy(), At: timeText(d.GetAt()), Note: d.GetNote()}
}

// tierName is the name the CLI prints and reads for one of the API's tiers.
func tierName(t lookalikev1.Tier) string {
	switch t {
	case lookalikev1.Tier_TIER_LOOK_ALIKE:
		return "look-alike"
	case lookalikev1.Tier_TIER_COPY:
		return "copy"
	case lookalikev1.Tier_TIER_EXACT:
		return "exact"
	}
	return "none"
}

func parseTier(s string) (lookalikev1.Tier, error) {
	for _, t := range []lookalikev1.Tier{lookalikev1.Tier_TIER_LOOK_ALIKE, lookalikev1.Tier_TIER_COPY, lookalikev1.Tier_TIER_EXACT} {
		if tierName(t) == s {
			return t, nil
		}
	}
	return 0, usagef("--tier must be look-alike, copy or exact, got %q", s)
}

func runDedup(ctx context.Context, a *app, args []string) error {
	if len(args) > 0 {
		switch args[0] {
		case "resolve":
			return runDedupResolve(ctx, a, args[1:])
		case "decisions":
			return runDedupDecisions(ctx, a, args[1:])
		case "forget":
			return runDedupForget(ctx, a, args[1:])
		}
	}
	fs := newFlagSet(a, "dedup", "[flags] | resolve | decisions | forget",
		"Find clusters of near-duplicate products, largest first. Every pair has a tier: exact (same bytes),\n"+
			"copy (perceptual hash and embedding agree: a re-encoded, resized or lightly edited photo) or\n"+
			"look-alike (only the embedding agrees: review it). Recorded decisions are honoured; see\n"+
			"'dedup resolve --help'. --html writes a self-contained page with each cluster's thumbnails side\n"+
			"by side, because duplicates are reviewed by looking.")
	var cf clientFlags
	var ff filterFlags
	cf.register(fs, a)
	ff.register(fs)
	threshold := fs.Float64("threshold", 0, "look-alike cut: similarity at or above which two products are candidates (0: the catalogue's policy, 0.9 until calibrated)")
	tier := fs.String("tier", "look-alike", "report only pairs of at least this tier: look-alike, copy or exact")
	maxNeighbors := fs.Int("max-neighbors", 0, "neighbours examined per product, 1..1000 (0: the server's default, 10)")
	ef := fs.Int("ef", 0, "HNSW search breadth; 0 is the server's default")
	limit := fs.Int("limit", 0, "show at most this many clusters (0: all)")
	htmlPath := fs.String("html", "", "also write an HTML review page with thumbnails to this file")
	asJSON := fs.Bool("json", false, "print JSON instead of a table")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usagef("takes no arguments")
	}
	if *threshold < -1 || *threshold > 1 {
		return usagef("--threshold must be a similarity in -1..1, got %g", *threshold)
	}
	if *maxNeighbors < 0 || *maxNeighbors > 1000 {
		return usagef("--max-neighbors must be in 0..1000, got %d", *maxNeighbors)
	}
	minTier, err := parseTier(*tier)
	if err != nil {
		return err
	}
	c, err := cf.dial()
	if err != nil {
		return err
	}
	defer c.Close()

	// The scan touches every product, so it gets a longer deadline than one lookup.
	scanCtx, cancel := ctx, context.CancelFunc(func() {})
	if cf.timeout > 0 {
		scanCtx, cancel = context.WithTimeout(ctx, 10*cf.timeout)
	}
	defer cancel()
	req := &lookalikev1.FindDuplicatesRequest{Filter: ff.proto(), MaxNeighbors: int32(*maxNeighbors), Ef: int32(*ef), MinTier: minTier}
	if *threshold != 0 {
		t := float32(*threshold)
		req.Threshold = &t
	}
	st, err := c.client.FindDuplicates(scanCtx, req)
	if err != nil {
		return describeRPCError(cf.server, err)
	}
	var clusters []*lookalikev1.DuplicateCluster
	for {
		cl, err := st.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return describeRPCError(cf.server, err)
		}
		clusters = append(clusters, cl)
		if *limit > 0 && len(clusters) == *limit {
			cancel()
			break
		}
	}

	products, err := fetchProducts(ctx, c, cf.server, clusters)
	if err != nil {
		return err
	}
	out := dedupJSON{Threshold: *threshold, MinTier: *tier, Clusters: make([]clusterJSON, 0, len(clusters))}
	for _, cl := range clusters {
		cj := clusterJSON{IDs: cl.GetIds(), Tier: tierName(cl.GetTier()), Resolved: cl.GetResolved(), Edges: make([]edgeJSON, 0, len(cl.GetEdges()))}
		for _, e := range cl.GetEdges() {
			cj.Edges = append(cj.Edges, edgeJSON{A: e.GetA(), B: e.GetB(), PhotoA: e.GetPhotoA(), PhotoB: e.GetPhotoB(), Score: e.GetScore(),
				Tier: tierName(e.GetTier()), Hamming: e.GetSignals().GetHamming(), CropHamming: e.GetSignals().GetCropHamming(),
				CropCorrelation: e.GetSignals().GetCropCorrelation(), SameBytes: e.GetSignals().GetSameBytes(),
				Decision: toDecisionJSON(e.GetDecision())})
		}
		for _, id := range cl.GetIds() {
			cj.Products = append(cj.Products, toProductJSON(products[id]))
		}
		out.Clusters = append(out.Clusters, cj)
	}

	if *htmlPath != "" {
		if err := writeDedupHTML(ctx, *htmlPath, out, newThumbnailLoader(cf.timeout), time.Now()); err != nil {
			return err
		}
		if !*asJSON {
			defer fmt.Fprintf(a.stdout, "\nreview page: %s\n", *htmlPath)
		}
	}
	if *asJSON {
		return writeJSON(a.stdout, out)
	}
	return printDedupTable(a.stdout, out)
}

// fetchProducts looks up every cluster member once, a few at a time. A member deleted since the
// scan is shown by id alone rather than failing the report.
func fetchProducts(ctx context.Context, c *connection, server string, clusters []*lookalikev1.DuplicateCluster) (map[string]*lookalikev1.Product, error) {
	var ids []string
	seen := map[string]bool{}
	for _, cl := range clusters {
		for _, id := range cl.GetIds() {
			if !seen[id] {
				seen[id] = true
				ids = append(ids, id)
			}
		}
	}
	var (
		mu       sync.Mutex
		products = make(map[string]*lookalikev1.Product, len(ids))
		firstErr error
		wg       sync.WaitGroup
		next     = make(chan string)
	)
	for range min(8, len(ids)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := range next {
				callCtx, cancel := c.call(ctx)
				resp, err := c.client.Get(callCtx, &lookalikev1.GetRequest{Id: id})
				cancel()
				mu.Lock()
				switch {
				case err == nil:
					products[id] = resp.GetProduct()
				case isNotFound(err):
					products[id] = &lookalikev1.Product{Id: id}
				case firstErr == nil:
					firstErr = describeRPCError(server, err)
				}
				mu.Unlock()
			}
		}()
	}
	for _, id := range ids {
		next <- id
	}
	close(next)
	wg.Wait()
	return products, firstErr
}

func printDedupTable(w io.Writer, out dedupJSON) error {
	if len(out.Clusters) == 0 {
		_, err := fmt.Fprintln(w, "no near-duplicates")
		return err
	}
	noun := "clusters"
	if len(out.Clusters) == 1 {
		noun = "cluster"
	}
	fmt.Fprintf(w, "%d %s of near-duplicates (tier %s or stronger)\n", len(out.Clusters), noun, out.MinTier)
	for i, cl := range out.Clusters {
		lo, hi := scoreRange(cl.Edges)
		state := ""
		if cl.Resolved {
			state = ", resolved"
		}
		fmt.Fprintf(w, "\ncluster %d: %d products, weakest tier %s, scores %.4f..%.4f%s\n", i+1, len(cl.IDs), cl.Tier, lo, hi, state)
		tw := newTable(w)
		for _, p := range cl.Products {
			fmt.Fprintf(tw, "  %s\t%s\t%s\n", clean(p.ID, 0), clean(p.Category, 20), clean(p.Title, 50))
		}
		tw.Flush()
		for _, e := range cl.Edges {
			hamming, crop := "-", "-"
			if e.Hamming >= 0 {
				hamming = fmt.Sprint(e.Hamming)
			}
			if e.CropHamming >= 0 {
				crop = fmt.Sprint(e.CropHamming)
				if e.CropCorrelation != 0 {
					crop += fmt.Sprintf(" (correlation %.4f)", e.CropCorrelation)
				}
			}
			decided := ""
			if e.Decision != nil {
				decided = "  decided " + e.Decision.Verdict
				if e.Decision.Keep != "" {
					decided += ", keep " + e.Decision.Keep
				}
			}
			fmt.Fprintf(w, "    %-10s cosine %.4f  hamming %-3s crop %-3s %s ~ %s%s\n", e.Tier, e.Score, hamming, crop, e.A, e.B, decided)
		}
	}
	return nil
}

func scoreRange(edges []edgeJSON) (lo, hi float32) {
	for i, e := range edges {
		if i == 0 || e.Score < lo {
			lo = e.Score
		}
		if i == 0 || e.Score > hi {
			hi = e.Score
		}
	}
	return lo, hi
}

func writeDedupHTML(ctx context.Context, path string, out dedupJSON, loader *imageLoader, now time.Time) error {
	err := writeFileAtomically(path, func(w io.Writer) error {
		return renderDedupHTML(ctx, w, out, loader, now)
	})
	if err != nil {
		return fmt.Errorf("write HTML report: %w", err)
	}
	return nil
}

func isNotFound(err error) bool {
	return status.Code(err) == codes.NotFound
}
