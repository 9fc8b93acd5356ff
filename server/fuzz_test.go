package server

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"testing"

	"google.golang.org/grpc/codes"

	"lookalike/catalog"
	pb "lookalike/proto/lookalike/v1"
)

// FuzzRequestValidation feeds arbitrary search, upsert and duplicate-check parameters to the
// handlers over a real catalogue: every answer must be OK or a client-error code, never
// INTERNAL or a panic, and OK answers must respect k, min_score and the ordering.
func FuzzRequestValidation(f *testing.F) {
	f.Add(int32(5), int32(0), float32(0), "p1", 1280, []byte(nil), float32(0.9))
	f.Add(int32(0), int32(-1), float32(math.NaN()), "", 3, []byte("garbage"), float32(2))
	f.Add(int32(1001), int32(100000), float32(-1), "missing", 0, []byte{0xff, 0xd8, 0xff}, float32(-0.5))
	f.Add(int32(1000), int32(10000), float32(0.99), "\xff\xfe", 1281, []byte("\x89PNG\r\n\x1a\n"), float32(math.Inf(1)))
	f.Add(int32(3), int32(1), float32(0.5), "p2", 1280, []byte("GIF89a"), float32(0))

	e := testEmbedder(f)
	cat, err := catalog.Open(context.Background(), catalog.Config{DataDir: f.TempDir(), Embedder: e})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = cat.Close() })
	dim := e.Dim()
	for i := range 8 {
		v := make([]float32, dim)
		v[i], v[i+1] = 1, float32(i)
		if _, err := cat.Upsert(context.Background(), catalog.Write{ID: fmt.Sprint("p", i), Category: fmt.Sprint(i % 2), Photos: []catalog.PhotoWrite{{Vector: v}}}); err != nil {
			f.Fatal(err)
		}
	}
	svc := &service{log: discardLogger()}
	svc.metrics = newMetrics(func() float64 { return 0 })
	svc.cat.Store(cat)
	clientError := map[codes.Code]bool{codes.OK: true, codes.InvalidArgument: true, codes.NotFound: true}

	f.Fuzz(func(t *testing.T, k, ef int32, minScore float32, id string, vecLen int, img []byte, threshold float32) {
		ctx := context.Background()
		if vecLen < 0 || vecLen > 4*dim {
			vecLen = dim
		}
		vec := make([]float32, vecLen)
		for i := range vec {
			vec[i] = float32(i%7) - 2
		}
		// Let the image bytes steer a few vector components, NaN included.
		for i := 0; i+4 <= len(img) && i/4 < vecLen; i += 4 {
			vec[i/4] = math.Float32frombits(binary.LittleEndian.Uint32(img[i:]))
		}
		filter := &pb.Filter{Categories: []string{"1"}, ExcludeIds: []string{id}}
		check := func(what string, resp *pb.SearchResponse, err error) {
			if !clientError[codeOfErr(toStatus(discardLogger(), what, err))] {
				t.Fatalf("%s: code %v (%v)", what, codeOfErr(err), err)
			}
			if err != nil {
				return
			}
			rs := resp.GetResults()
			if int32(len(rs)) > k {
				t.Fatalf("%s: %d results for k=%d", what, len(rs), k)
			}
			for i, r := range rs {
				if minScore != 0 && r.GetScore() < minScore {
					t.Fatalf("%s: score %v below min_score %v", what, r.GetScore(), minScore)
				}
				if i > 0 && r.GetScore() > rs[i-1].GetScore() {
					t.Fatalf("%s: results out of order", what)
				}
				if r.GetProduct().GetCategory() != "1" || r.GetProduct().GetId() == id {
					t.Fatalf("%s: filter broken by %v", what, r.GetProduct())
				}
			}
		}
		resp, err := svc.SearchByVector(ctx, &pb.SearchByVectorRequest{Vector: vec, K: k, Ef: ef, MinScore: minScore, Filter: filter})
		check("SearchByVector", resp, err)
		resp, err = svc.SearchById(ctx, &pb.SearchByIdRequest{Id: id, K: k, Ef: ef, MinScore: minScore, Filter: filter})
		check("SearchById", resp, err)
		// The same with query expansion and a boost steered by the other parameters (out of
		// range as often as not): boosted scores still respect min_score and the order.
		boosts := []*pb.Boost{{Attribute: id, Value: "x", Add: threshold}}
		resp, err = svc.SearchByVector(ctx, &pb.SearchByVectorRequest{Vector: vec, K: k, Ef: ef, MinScore: minScore, Filter: filter,
			Expand: ef % 64, ExpandAlpha: threshold, Boosts: boosts})
		check("SearchByVector expanded and boosted", resp, err)
		resp, err = svc.SearchById(ctx, &pb.SearchByIdRequest{Id: id, K: k, Ef: ef, MinScore: minScore, Filter: filter,
			Expand: k % 64, ExpandAlpha: minScore, Boosts: boosts})
		check("SearchById expanded and boosted", resp, err)
		_, err = svc.SearchByImage(ctx, &pb.SearchByImageRequest{Image: img, K: k, Ef: ef, MinScore: minScore})
		if err != nil { // results of an image search cannot match the filter checks above
			check("SearchByImage", nil, err)
		}
		if _, err := svc.CheckDuplicate(ctx, &pb.CheckDuplicateRequest{Image: img, Threshold: &threshold}); !clientError[codeOfErr(err)] {
			t.Fatalf("CheckDuplicate: %v", err)
		}
		// Upserts under a prefix, so the fuzzer never replaces the fixed products.
		up, err := svc.Upsert(ctx, &pb.UpsertRequest{Id: "fz" + id, Content: &pb.UpsertRequest_Vector{Vector: &pb.Vector{Values: vec}}})
		if !clientError[codeOfErr(err)] {
			t.Fatalf("Upsert: %v", err)
		}
		if err == nil && up.GetOutcome() == pb.Outcome_OUTCOME_FAILED {
			t.Fatalf("Upsert: OK status with a failed outcome")
		}
	})
}
