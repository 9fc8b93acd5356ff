package server

import (
	"bytes"
	"context"
	"encoding/binary"
	"hash/crc32"
	"image"
	"image/jpeg"
	"image/png"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/image/draw"
	"google.golang.org/grpc/codes"

	"lookalike/index"
	"lookalike/internal/dataset"
	pb "lookalike/proto/lookalike/v1"
)

func TestServerGroceryRecallMatchesBruteForce(t *testing.T) {
	g := groceryServer(t)
	ctx := context.Background()
	c := g.srv.client
	const k = 10

	// Brute force over the very vectors the server stored, with query vectors from the same
	// model, through the project's exact index.
	exact := index.NewExact(testEmbedder(t).Dim(), index.InnerProduct)
	labelOf := make([]string, len(g.catalogue))
	for i, p := range g.catalogue {
		resp, err := c.Get(ctx, &pb.GetRequest{Id: photoID(p), IncludeVector: true})
		if err != nil {
			t.Fatal(err)
		}
		if err := exact.Add(index.Key(i), resp.GetProduct().GetVector()); err != nil {
			t.Fatal(err)
		}
		labelOf[i] = p.Label
	}

	var servedHits, exactHits int
	for _, p := range g.val {
		img, err := os.ReadFile(p.Path)
		if err != nil {
			t.Fatal(err)
		}
		// ef well above the catalogue size makes the graph search exhaustive, so any gap
		// between the two rates would be a serving bug, not HNSW approximation.
		resp, err := c.SearchByImage(ctx, &pb.SearchByImageRequest{Image: img, K: k, Ef: 1000})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.GetResults()) != k {
			t.Fatalf("%s: %d results, want %d", photoID(p), len(resp.GetResults()), k)
		}
		for _, r := range resp.GetResults() {
			if r.GetProduct().GetAttributes()["label"] == p.Label {
				servedHits++
				break
			}
		}
		q, err := testEmbedder(t).Embed(ctx, img)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range exact.Search(q, k, index.SearchOptions{}) {
			if labelOf[n.Key] == p.Label {
				exactHits++
				break
			}
		}
	}
	served := float64(servedHits) / float64(len(g.val))
	brute := float64(exactHits) / float64(len(g.val))
	t.Logf("val photos with a same-label product in the top %d: served %.3f (%d/%d), brute force %.3f",
		k, served, servedHits, len(g.val), brute)
	if servedHits != exactHits {
		t.Fatalf("served hit rate %.3f differs from brute force %.3f", served, brute)
	}
	if servedHits == 0 {
		t.Fatal("no val photo found its product: the catalogue is not being searched")
	}
}

func TestServerSearchByIdAndFilters(t *testing.T) {
	g := groceryServer(t)
	ctx := context.Background()
	c := g.srv.client
	for i := 0; i < len(g.catalogue); i += 60 {
		p := g.catalogue[i]
		id := photoID(p)
		t.Run(id, func(t *testing.T) {
			resp, err := c.SearchById(ctx, &pb.SearchByIdRequest{Id: id, K: 20})
			if err != nil {
				t.Fatal(err)
			}
			if len(resp.GetResults()) != 20 {
				t.Fatalf("%d results, want 20", len(resp.GetResults()))
			}
			var got []string
			for _, r := range resp.GetResults() {
				got = append(got, r.GetProduct().GetId())
			}
			if slices.Contains(got, id) {
				t.Fatalf("SearchById(%s) returned the product itself", id)
			}
			for j := 1; j < len(resp.GetResults()); j++ {
				if resp.Results[j].GetScore() > resp.Results[j-1].GetScore() {
					t.Fatalf("results not sorted by score at %d", j)
				}
			}

			// Pick a category other than the product's own: the filter must still hold.
			other := "Milk"
			if p.Fields["coarse_label"] == other {
				other = "Juice"
			}
			filters := []*pb.Filter{
				{Categories: []string{p.Fields["coarse_label"]}},
				{Categories: []string{other}},
				{Attributes: map[string]string{"iconic": "1"}},
				{ExcludeIds: got[:5]},
			}
			for _, f := range filters {
				resp, err := c.SearchById(ctx, &pb.SearchByIdRequest{Id: id, K: 50, Filter: f})
				if err != nil {
					t.Fatal(err)
				}
				if len(resp.GetResults()) == 0 {
					t.Fatalf("filter %v: no results", f)
				}
				for _, r := range resp.GetResults() {
					prod := r.GetProduct()
					switch {
					case prod.GetId() == id:
						t.Fatalf("filter %v: the product itself came back", f)
					case len(f.Categories) > 0 && prod.GetCategory() != f.Categories[0]:
						t.Fatalf("filter %v: %s has category %q", f, prod.GetId(), prod.GetCategory())
					case f.Attributes != nil && prod.GetAttributes()["iconic"] != "1":
						t.Fatalf("filter %v: %s is not iconic", f, prod.GetId())
					case slices.Contains(f.ExcludeIds, prod.GetId()):
						t.Fatalf("filter %v: excluded %s came back", f, prod.GetId())
					}
				}
			}
		})
	}
	// The iconic filter admits 31 products: all but the probe itself (if iconic) come back.
	resp, err := c.SearchById(ctx, &pb.SearchByIdRequest{Id: photoID(g.catalogue[0]), K: 100,
		Filter: &pb.Filter{Attributes: map[string]string{"iconic": "1"}}})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(resp.GetResults()); n < 30 {
		t.Fatalf("iconic filter returned %d products, want at least 30 of 31", n)
	}
}

// copies of a photo that a shop might upload again: re-encoded harder, and resized to PNG.
func reencoded(t *testing.T, path string) map[string][]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	src, err := jpeg.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	var q60 bytes.Buffer
	if err := jpeg.Encode(&q60, src, &jpeg.Options{Quality: 60}); err != nil {
		t.Fatal(err)
	}
	b := src.Bounds()
	small := image.NewRGBA(image.Rect(0, 0, b.Dx()*3/4, b.Dy()*3/4))
	draw.CatmullRom.Scale(small, small.Bounds(), src, b, draw.Src, nil)
	var pngBuf bytes.Buffer
	if err := png.Encode(&pngBuf, small); err != nil {
		t.Fatal(err)
	}
	return map[string][]byte{"jpeg-q60": q60.Bytes(), "png-75pct": pngBuf.Bytes()}
}

func TestServerDuplicates(t *testing.T) {
	g := groceryServer(t)
	ctx := context.Background()
	c := g.srv.client
	originals := []int{7, 300, 600}
	var reqs []*pb.UpsertRequest
	copyOf := map[string]string{}
	for _, i := range originals {
		orig := photoID(g.catalogue[i])
		for name, img := range reencoded(t, g.catalogue[i].Path) {
			resp, err := c.CheckDuplicate(ctx, &pb.CheckDuplicateRequest{Image: img})
			if err != nil {
				t.Fatal(err)
			}
			best := resp.GetBestMatch()
			t.Logf("%s as %s: best match %s score %.4f", orig, name, best.GetProduct().GetId(), best.GetScore())
			if !resp.GetIsDuplicate() || best.GetProduct().GetId() != orig || resp.GetThreshold() != 0.9 {
				t.Fatalf("%s as %s: is_duplicate=%v best=%s score=%.4f threshold=%v; want a duplicate of %s at 0.9",
					orig, name, resp.GetIsDuplicate(), best.GetProduct().GetId(), best.GetScore(), resp.GetThreshold(), orig)
			}
			id := "copy-" + name + "-" + orig
			copyOf[id] = orig
			reqs = append(reqs, &pb.UpsertRequest{Id: id, Content: &pb.UpsertRequest_Image{Image: img},
				Category: g.catalogue[i].Fields["coarse_label"], Attributes: map[string]string{"copy": "1"}})
		}
	}
	t.Cleanup(func() {
		for id := range copyOf {
			_, _ = c.Delete(context.Background(), &pb.DeleteRequest{Id: id})
		}
	})
	results, err := ingestAll(ctx, c, reqs)
	if err != nil || len(results) != len(reqs) {
		t.Fatalf("ingest copies: %d results, %v", len(results), err)
	}

	threshold := float32(0.9)
	stream, err := c.FindDuplicates(ctx, &pb.FindDuplicatesRequest{Threshold: &threshold})
	if err != nil {
		t.Fatal(err)
	}
	clusterOf := map[string]int{}
	n, prevSize := 0, 1<<30
	for {
		cl, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(cl.GetIds()) < 2 || len(cl.GetIds()) > prevSize {
			t.Fatalf("cluster %d has %d members after one of %d: want >= 2, largest first", n, len(cl.GetIds()), prevSize)
		}
		prevSize = len(cl.GetIds())
		for _, e := range cl.GetEdges() {
			if e.GetScore() < threshold || !slices.Contains(cl.GetIds(), e.GetA()) || !slices.Contains(cl.GetIds(), e.GetB()) {
				t.Fatalf("edge %v does not belong to cluster %v at threshold %v", e, cl.GetIds(), threshold)
			}
		}
		for _, id := range cl.GetIds() {
			clusterOf[id] = n
		}
		n++
	}
	t.Logf("%d duplicate clusters at threshold %.2f", n, threshold)
	for id, orig := range copyOf {
		ci, ok1 := clusterOf[id]
		co, ok2 := clusterOf[orig]
		if !ok1 || !ok2 || ci != co {
			t.Fatalf("%s and its original %s are not in one cluster", id, orig)
		}
	}
}

// pngHeaderClaiming returns a PNG whose header declares w x h pixels (with a valid CRC) and
// no image data: a decompression bomb's calling card.
func pngHeaderClaiming(w, h uint32) []byte {
	var b bytes.Buffer
	b.WriteString("\x89PNG\r\n\x1a\n")
	ihdr := make([]byte, 13)
	binary.BigEndian.PutUint32(ihdr[0:], w)
	binary.BigEndian.PutUint32(ihdr[4:], h)
	ihdr[8], ihdr[9] = 8, 2 // 8-bit RGB
	_ = binary.Write(&b, binary.BigEndian, uint32(len(ihdr)))
	chunk := append([]byte("IHDR"), ihdr...)
	b.Write(chunk)
	_ = binary.Write(&b, binary.BigEndian, crc32.ChecksumIEEE(chunk))
	return b.Bytes()
}

func TestServerBadInputsGetTheirCodes(t *testing.T) {
	g := groceryServer(t)
	ctx := context.Background()
	c := g.srv.client
	photo, err := os.ReadFile(g.val[0].Path)
	if err != nil {
		t.Fatal(err)
	}
	known := photoID(g.catalogue[0])
	dim := testEmbedder(t).Dim()
	tests := []struct {
		name string
		call func() error
		want codes.Code
		says string // a word the message must contain
	}{
		{"garbage image", func() error {
			_, err := c.SearchByImage(ctx, &pb.SearchByImageRequest{Image: []byte("this is not a photo"), K: 5})
			return err
		}, codes.InvalidArgument, "unsupported"},
		{"truncated JPEG", func() error {
			_, err := c.SearchByImage(ctx, &pb.SearchByImageRequest{Image: photo[:400], K: 5})
			return err
		}, codes.InvalidArgument, "corrupt"},
		{"bomb header", func() error {
			_, err := c.SearchByImage(ctx, &pb.SearchByImageRequest{Image: pngHeaderClaiming(200000, 200000), K: 5})
			return err
		}, codes.InvalidArgument, "large"},
		{"empty image", func() error {
			_, err := c.SearchByImage(ctx, &pb.SearchByImageRequest{K: 5})
			return err
		}, codes.InvalidArgument, "empty"},
		{"k zero", func() error {
			_, err := c.SearchByImage(ctx, &pb.SearchByImageRequest{Image: photo, K: 0})
			return err
		}, codes.InvalidArgument, "k"},
		{"k too large", func() error {
			_, err := c.SearchById(ctx, &pb.SearchByIdRequest{Id: known, K: 1001})
			return err
		}, codes.InvalidArgument, "k"},
		{"vector of the wrong dimension", func() error {
			_, err := c.SearchByVector(ctx, &pb.SearchByVectorRequest{Vector: make([]float32, dim-1), K: 5})
			return err
		}, codes.InvalidArgument, "dimension"},
		{"upsert vector of the wrong dimension", func() error {
			_, err := c.Upsert(ctx, &pb.UpsertRequest{Id: "x", Content: &pb.UpsertRequest_Vector{Vector: &pb.Vector{Values: []float32{1, 2}}}})
			return err
		}, codes.InvalidArgument, "dimension"},
		{"upsert without content", func() error {
			_, err := c.Upsert(ctx, &pb.UpsertRequest{Id: "x"})
			return err
		}, codes.InvalidArgument, "no photo"},
		{"unknown id to search from", func() error {
			_, err := c.SearchById(ctx, &pb.SearchByIdRequest{Id: "no-such-product", K: 5})
			return err
		}, codes.NotFound, "no-such-product"},
		{"get unknown", func() error {
			_, err := c.Get(ctx, &pb.GetRequest{Id: "no-such-product"})
			return err
		}, codes.NotFound, "not found"},
		{"delete unknown", func() error {
			_, err := c.Delete(ctx, &pb.DeleteRequest{Id: "no-such-product"})
			return err
		}, codes.NotFound, "not found"},
		{"threshold above 1", func() error {
			th := float32(1.5)
			_, err := c.CheckDuplicate(ctx, &pb.CheckDuplicateRequest{Image: photo, Threshold: &th})
			return err
		}, codes.InvalidArgument, "threshold"},
		{"duplicates with too many neighbours", func() error {
			s, err := c.FindDuplicates(ctx, &pb.FindDuplicatesRequest{MaxNeighbors: 5000})
			if err != nil {
				return err
			}
			_, err = s.Recv()
			return err
		}, codes.InvalidArgument, "max_neighbors"},
		{"message over the size limit", func() error {
			_, err := c.SearchByImage(ctx, &pb.SearchByImageRequest{Image: make([]byte, DefaultMaxMessageBytes+1), K: 5})
			return err
		}, codes.ResourceExhausted, "larger than max"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if got := codeOfErr(err); got != tt.want {
				t.Fatalf("code %v (%v), want %v", got, err, tt.want)
			}
			if !strings.Contains(strings.ToLower(err.Error()), tt.says) {
				t.Fatalf("message %q does not say %q", err, tt.says)
			}
		})
	}
}

func TestServerStreamWithBadItemsIngestsTheGoodOnes(t *testing.T) {
	g := groceryServer(t)
	ctx := context.Background()
	c := g.srv.client
	good, err := os.ReadFile(g.val[1].Path)
	if err != nil {
		t.Fatal(err)
	}
	vec := make([]float32, testEmbedder(t).Dim())
	vec[0], vec[1] = 1, 1
	reqs := []*pb.UpsertRequest{
		{Id: "stream-good-image", Content: &pb.UpsertRequest_Image{Image: good}},
		{Id: "stream-bad-image", Content: &pb.UpsertRequest_Image{Image: []byte("nope")}},
		{Id: "", Content: &pb.UpsertRequest_Image{Image: good}},
		{Id: "stream-good-vector", Content: &pb.UpsertRequest_Vector{Vector: &pb.Vector{Values: vec}}},
		{Id: "stream-short-vector", Content: &pb.UpsertRequest_Vector{Vector: &pb.Vector{Values: vec[:7]}}},
		{Id: "stream-truncated", Content: &pb.UpsertRequest_Image{Image: good[:300]}},
		{Id: "stream-good-image", Content: &pb.UpsertRequest_Image{Image: good}},
	}
	want := []struct {
		outcome pb.Outcome
		code    codes.Code
	}{
		{pb.Outcome_OUTCOME_CREATED, codes.OK},
		{pb.Outcome_OUTCOME_FAILED, codes.InvalidArgument},
		{pb.Outcome_OUTCOME_FAILED, codes.InvalidArgument},
		{pb.Outcome_OUTCOME_CREATED, codes.OK},
		{pb.Outcome_OUTCOME_FAILED, codes.InvalidArgument},
		{pb.Outcome_OUTCOME_FAILED, codes.InvalidArgument},
		// The same photo under the same id again: unchanged, however the stream was batched.
		{pb.Outcome_OUTCOME_UNCHANGED, codes.OK},
	}
	t.Cleanup(func() {
		for _, id := range []string{"stream-good-image", "stream-good-vector"} {
			_, _ = c.Delete(context.Background(), &pb.DeleteRequest{Id: id})
		}
	})
	results, err := ingestAll(ctx, c, reqs)
	if err != nil {
		t.Fatalf("stream ended with %v", err)
	}
	if len(results) != len(reqs) {
		t.Fatalf("%d results for %d requests", len(results), len(reqs))
	}
	for i, r := range results {
		if r.GetIndex() != uint64(i) || r.GetOutcome() != want[i].outcome || codes.Code(r.GetErrorCode()) != want[i].code {
			t.Errorf("item %d (%q): index %d outcome %v code %v %q; want %v %v",
				i, reqs[i].GetId(), r.GetIndex(), r.GetOutcome(), codes.Code(r.GetErrorCode()), r.GetErrorMessage(), want[i].outcome, want[i].code)
		}
	}
	for _, id := range []string{"stream-good-image", "stream-good-vector"} {
		if _, err := c.Get(ctx, &pb.GetRequest{Id: id}); err != nil {
			t.Fatalf("good item %s not stored: %v", id, err)
		}
	}
	for _, id := range []string{"stream-bad-image", "stream-short-vector", "stream-truncated"} {
		if _, err := c.Get(ctx, &pb.GetRequest{Id: id}); codeOfErr(err) != codes.NotFound {
			t.Fatalf("bad item %s: Get says %v, want NOT_FOUND", id, err)
		}
	}
	// Get exposes the sha256 so a client can skip unchanged photos; sending one anyway is a
	// cheap no-op.
	got, err := c.Get(ctx, &pb.GetRequest{Id: "stream-good-image"})
	if err != nil || got.GetProduct().GetImageSha256() != results[0].GetImageSha256() || len(results[0].GetImageSha256()) != 64 {
		t.Fatalf("Get sha256 %q vs upsert %q (%v)", got.GetProduct().GetImageSha256(), results[0].GetImageSha256(), err)
	}
	again, err := c.Upsert(ctx, reqs[0])
	if err != nil || again.GetOutcome() != pb.Outcome_OUTCOME_UNCHANGED {
		t.Fatalf("re-upsert of the same photo: %v %v, want unchanged", again.GetOutcome(), err)
	}
}

func TestServerRestartKeepsResults(t *testing.T) {
	g := groceryServer(t) // for the photo lists; this test has its own server and directory
	ctx := context.Background()
	dir := t.TempDir()
	var photos []dataset.Photo
	for i := 0; i < len(g.catalogue); i += 9 {
		photos = append(photos, g.catalogue[i])
	}
	s := startServer(t, Config{DataDir: dir})
	if _, err := ingest(ctx, s.client, requestsFor(photos)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.client.Delete(ctx, &pb.DeleteRequest{Id: photoID(photos[0])}); err != nil {
		t.Fatal(err)
	}
	snapshot := func(c pb.LookalikeClient) []string {
		var out []string
		for _, p := range g.val[:10] {
			img, err := os.ReadFile(p.Path)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := c.SearchByImage(ctx, &pb.SearchByImageRequest{Image: img, K: 5})
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range resp.GetResults() {
				out = append(out, r.GetProduct().GetId())
			}
		}
		resp, err := c.SearchById(ctx, &pb.SearchByIdRequest{Id: photoID(photos[1]), K: 10})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range resp.GetResults() {
			out = append(out, r.GetProduct().GetId())
		}
		return out
	}
	before := snapshot(s.client)
	statsBefore, err := s.client.Stats(ctx, &pb.StatsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.shutdown(); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "index.hnsw")); err != nil {
		t.Fatalf("no graph snapshot after shutdown: %v", err)
	}

	s2 := startServer(t, Config{DataDir: dir})
	defer s2.shutdown()
	after := snapshot(s2.client)
	if !slices.Equal(before, after) {
		t.Fatalf("results changed across restart:\nbefore %v\nafter  %v", before, after)
	}
	statsAfter, err := s2.client.Stats(ctx, &pb.StatsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if statsAfter.GetCount() != uint64(len(photos)-1) || statsAfter.GetCount() != statsBefore.GetCount() ||
		statsAfter.GetSnapshotSeq() != statsAfter.GetStoreSeq() || statsAfter.GetSnapshotTime() == nil ||
		statsAfter.GetModelIdentity() != statsBefore.GetModelIdentity() || int(statsAfter.GetDim()) != testEmbedder(t).Dim() {
		t.Fatalf("stats before %v\nafter %v", statsBefore, statsAfter)
	}
}
