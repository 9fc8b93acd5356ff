package server

import (
	"context"
	"os"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"

	"lookalike/internal/dataset"
	pb "lookalike/proto/lookalike/v1"
)

// Duplicate tiers and decisions over the real gRPC API.
func TestServerDuplicateTiersAndDecisions(t *testing.T) {
	s := startServer(t, Config{DataDir: t.TempDir(), SnapshotInterval: -1})
	defer s.shutdown()
	ctx := context.Background()
	photos, err := dataset.LoadPhotos(dataset.PhotosGrocery)
	if err != nil {
		t.Fatal(err)
	}
	img, err := os.ReadFile(photos[0].Path)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"a", "b"} {
		if _, err := s.client.Upsert(ctx, &pb.UpsertRequest{Id: id, Content: &pb.UpsertRequest_Image{Image: img}}); err != nil {
			t.Fatal(err)
		}
	}
	check, err := s.client.CheckDuplicate(ctx, &pb.CheckDuplicateRequest{Image: img})
	if err != nil {
		t.Fatal(err)
	}
	if check.GetTier() != pb.Tier_TIER_EXACT || !check.GetSignals().GetSameBytes() || !check.GetIsDuplicate() {
		t.Errorf("check of stored bytes: %+v", check)
	}
	clusters := func() []*pb.DuplicateCluster {
		t.Helper()
		st, err := s.client.FindDuplicates(ctx, &pb.FindDuplicatesRequest{MinTier: pb.Tier_TIER_COPY})
		if err != nil {
			t.Fatal(err)
		}
		var out []*pb.DuplicateCluster
		for {
			cl, err := st.Recv()
			if err != nil {
				break
			}
			out = append(out, cl)
		}
		return out
	}
	cls := clusters()
	if len(cls) != 1 || cls[0].GetTier() != pb.Tier_TIER_EXACT || cls[0].GetEdges()[0].GetSignals().GetHamming() != 0 || cls[0].GetResolved() {
		t.Fatalf("clusters: %+v", cls)
	}

	rctx := metadata.AppendToOutgoingContext(ctx, "x-lookalike-reviewer", "ann")
	res, err := s.client.ResolveDuplicates(rctx, &pb.ResolveDuplicatesRequest{Ids: []string{"b", "a"}, Verdict: "same", Keep: "a"})
	if err != nil {
		t.Fatal(err)
	}
	if d := res.GetDecisions(); len(d) != 1 || d[0].GetA() != "a" || d[0].GetB() != "b" || d[0].GetBy() != "ann" || d[0].GetKeep() != "a" || d[0].GetAt() == nil {
		t.Errorf("recorded: %+v", d)
	}
	if cls := clusters(); len(cls) != 1 || !cls[0].GetResolved() || cls[0].GetEdges()[0].GetDecision().GetVerdict() != "same" {
		t.Errorf("after resolving: %+v", cls)
	}
	if _, err := s.client.ResolveDuplicates(ctx, &pb.ResolveDuplicatesRequest{Ids: []string{"a", "b"}, Verdict: "different"}); err != nil {
		t.Fatal(err)
	}
	if cls := clusters(); len(cls) != 0 {
		t.Errorf("a pair decided different still clusters: %+v", cls)
	}
	list, err := s.client.ListDecisions(ctx, &pb.ListDecisionsRequest{})
	if err != nil || len(list.GetDecisions()) != 1 || list.GetDecisions()[0].GetVerdict() != "different" {
		t.Errorf("list: %+v, %v", list, err)
	}
	stats, err := s.client.Stats(ctx, &pb.StatsRequest{})
	if err != nil || stats.GetDecisions() != 1 || stats.GetDuplicatePolicy().GetSource() != "default" {
		t.Errorf("stats: decisions %d, policy %+v, %v", stats.GetDecisions(), stats.GetDuplicatePolicy(), err)
	}
	if _, err := s.client.ForgetDecision(ctx, &pb.ForgetDecisionRequest{A: "b", B: "a"}); err != nil {
		t.Fatal(err)
	}
	for _, r := range []struct {
		name string
		err  error
		code codes.Code
	}{
		{"forget twice", func() error {
			_, err := s.client.ForgetDecision(ctx, &pb.ForgetDecisionRequest{A: "a", B: "b"})
			return err
		}(), codes.NotFound},
		{"bad verdict", func() error {
			_, err := s.client.ResolveDuplicates(ctx, &pb.ResolveDuplicatesRequest{Ids: []string{"a", "b"}, Verdict: "maybe"})
			return err
		}(), codes.InvalidArgument},
		{"one id", func() error {
			_, err := s.client.ResolveDuplicates(ctx, &pb.ResolveDuplicatesRequest{Ids: []string{"a"}, Verdict: "same"})
			return err
		}(), codes.InvalidArgument},
		{"unknown product", func() error {
			_, err := s.client.ResolveDuplicates(ctx, &pb.ResolveDuplicatesRequest{Ids: []string{"a", "zz"}, Verdict: "same"})
			return err
		}(), codes.NotFound},
		{"calibration without kept photos of several", func() error {
			_, err := s.client.Calibrate(ctx, &pb.CalibrateRequest{Sample: 1})
			return err
		}(), codes.InvalidArgument},
	} {
		if got := codeOfErr(r.err); got != r.code {
			t.Errorf("%s: %v (%v), want %v", r.name, got, r.err, r.code)
		}
	}
}
