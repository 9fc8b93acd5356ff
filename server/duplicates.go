package server

import (
	"context"
	"fmt"
	"math"

	"google.golang.org/grpc/metadata"

	"lookalike/catalog"
	pb "lookalike/proto/lookalike/v1"
)

// threshold turns an optional proto threshold into the catalogue's (0 = the policy's). An
// explicit 0 is a real threshold, so it becomes the smallest positive float instead.
func threshold(t *float32) float32 {
	if t == nil {
		return 0
	}
	if *t == 0 {
		return math.SmallestNonzeroFloat32
	}
	return *t
}

func tierProto(t catalog.Tier) pb.Tier {
	switch t {
	case catalog.TierLookAlike:
		return pb.Tier_TIER_LOOK_ALIKE
	case catalog.TierCopy:
		return pb.Tier_TIER_COPY
	case catalog.TierExact:
		return pb.Tier_TIER_EXACT
	}
	return pb.Tier_TIER_UNSPECIFIED
}

func tierOf(t pb.Tier) (catalog.Tier, error) {
	switch t {
	case pb.Tier_TIER_UNSPECIFIED:
		return catalog.TierNone, nil
	case pb.Tier_TIER_LOOK_ALIKE:
		return catalog.TierLookAlike, nil
	case pb.Tier_TIER_COPY:
		return catalog.TierCopy, nil
	case pb.Tier_TIER_EXACT:
		return catalog.TierExact, nil
	}
	return 0, fmt.Errorf("%w: unknown tier %d", catalog.ErrInvalidArgument, t)
}

func signalsProto(s catalog.Signals) *pb.DuplicateSignals {
	return &pb.DuplicateSignals{Cosine: s.Cosine, Hamming: int32(s.Hamming), SameBytes: s.SameBytes,
		CropHamming: int32(s.CropHamming), CropCorrelation: s.CropCorrelation}
}

func decisionProto(d catalog.Decision) *pb.Decision {
	return &pb.Decision{A: d.A, B: d.B, Verdict: d.Verdict.String(), Keep: d.Keep, By: d.By, At: timestamp(d.At), Note: d.Note}
}

func policyProto(p catalog.Policy) *pb.DuplicatePolicy {
	return &pb.DuplicatePolicy{
		LookAlike: p.LookAlike, CopyCosine: p.CopyCosine, CopyHamming: int32(p.CopyHamming),
		CopyCosineAlone: p.CopyCosineAlone, Source: p.Source,
		CropHamming: int32(p.CropHamming), CropCosine: p.CropCosine, CropCorrelation: p.CropCorrelation,
	}
}

func (s *service) FindDuplicates(r *pb.FindDuplicatesRequest, stream pb.Lookalike_FindDuplicatesServer) error {
	c, err := s.catalog()
	if err != nil {
		return err
	}
	minTier, err := tierOf(r.GetMinTier())
	if err != nil {
		return s.fail("FindDuplicates", err)
	}
	opt := catalog.DuplicateOptions{
		Threshold: threshold(r.Threshold), Filter: filterOf(r.GetFilter()), MinTier: minTier,
		MaxNeighbors: int(r.GetMaxNeighbors()), EF: int(r.GetEf()),
	}
	err = c.FindDuplicates(stream.Context(), opt, func(cl catalog.Cluster) error {
		msg := &pb.DuplicateCluster{Ids: cl.IDs, Edges: make([]*pb.DuplicateEdge, len(cl.Edges)),
			Tier: tierProto(cl.Tier), Resolved: cl.Resolved}
		for i, e := range cl.Edges {
			msg.Edges[i] = &pb.DuplicateEdge{A: e.A, B: e.B, Score: e.Score, PhotoA: e.PhotoA, PhotoB: e.PhotoB,
				Tier: tierProto(e.Tier), Signals: signalsProto(e.Signals)}
			if e.Decision != nil {
				msg.Edges[i].Decision = decisionProto(*e.Decision)
			}
		}
		return stream.Send(msg)
	})
	if err != nil {
		return s.fail("FindDuplicates", err)
	}
	return nil
}

func (s *service) CheckDuplicate(ctx context.Context, r *pb.CheckDuplicateRequest) (*pb.CheckDuplicateResponse, error) {
	c, err := s.catalog()
	if err != nil {
		return nil, err
	}
	d, err := c.CheckDuplicate(ctx, r.GetImage(), threshold(r.Threshold), filterOf(r.GetFilter()))
	if err != nil {
		return nil, s.fail("CheckDuplicate", err)
	}
	out := &pb.CheckDuplicateResponse{IsDuplicate: d.IsDuplicate, Threshold: d.Threshold}
	if d.BestMatch != nil {
		out.BestMatch = &pb.SearchResult{Product: productProto(d.BestMatch.Product), Score: d.BestMatch.Score, PhotoId: d.BestMatch.PhotoID}
		out.Tier, out.Signals = tierProto(d.Tier), signalsProto(d.Signals)
	}
	return out, nil
}

// reviewerKey is the metadata that names who resolves duplicates when the request does not.
const reviewerKey = "x-lookalike-reviewer"

func (s *service) ResolveDuplicates(ctx context.Context, r *pb.ResolveDuplicatesRequest) (*pb.ResolveDuplicatesResponse, error) {
	c, err := s.catalog()
	if err != nil {
		return nil, err
	}
	var v catalog.Verdict
	switch r.GetVerdict() {
	case "same":
		v = catalog.Same
	case "different":
		v = catalog.Different
	default:
		return nil, s.fail("ResolveDuplicates", fmt.Errorf("%w: verdict %q must be \"same\" or \"different\"", catalog.ErrInvalidArgument, r.GetVerdict()))
	}
	by := r.GetBy()
	if by == "" {
		if md, ok := metadata.FromIncomingContext(ctx); ok && len(md.Get(reviewerKey)) > 0 {
			by = md.Get(reviewerKey)[0]
		}
	}
	ds, err := c.Resolve(ctx, catalog.Resolution{IDs: r.GetIds(), Verdict: v, Keep: r.GetKeep(), By: by, Note: r.GetNote()})
	if err != nil {
		return nil, s.fail("ResolveDuplicates", err)
	}
	out := &pb.ResolveDuplicatesResponse{}
	for _, d := range ds {
		out.Decisions = append(out.Decisions, decisionProto(d))
	}
	return out, nil
}

func (s *service) ListDecisions(ctx context.Context, _ *pb.ListDecisionsRequest) (*pb.ListDecisionsResponse, error) {
	c, err := s.catalog()
	if err != nil {
		return nil, err
	}
	ds, err := c.Decisions(ctx)
	if err != nil {
		return nil, s.fail("ListDecisions", err)
	}
	out := &pb.ListDecisionsResponse{}
	for _, d := range ds {
		out.Decisions = append(out.Decisions, decisionProto(d))
	}
	return out, nil
}

func (s *service) ForgetDecision(ctx context.Context, r *pb.ForgetDecisionRequest) (*pb.ForgetDecisionResponse, error) {
	c, err := s.catalog()
	if err != nil {
		return nil, err
	}
	if err := c.Forget(ctx, r.GetA(), r.GetB()); err != nil {
		return nil, s.fail("ForgetDecision", err)
	}
	return &pb.ForgetDecisionResponse{}, nil
}

func (s *service) Calibrate(ctx context.Context, r *pb.CalibrateRequest) (*pb.CalibrateReport, error) {
	c, err := s.catalog()
	if err != nil {
		return nil, err
	}
	rep, err := c.Calibrate(ctx, catalog.CalibrateOptions{
		Sample: int(r.GetSample()), TargetPrecision: float64(r.GetTargetPrecision()), Apply: r.GetApply(), Seed: r.GetSeed(),
	})
	if err != nil {
		return nil, s.fail("Calibrate", err)
	}
	point := func(p catalog.CalibrationPoint) *pb.CalibrationPoint {
		return &pb.CalibrationPoint{Rule: p.Rule, Precision: p.Precision, PrecisionLow: p.PrecisionLow, Recall: p.Recall,
			TruePositives: uint32(p.TruePositives), FalsePositives: uint32(p.FalsePositives)}
	}
	out := &pb.CalibrateReport{
		Photos: uint32(rep.Photos), Positives: uint32(rep.Positives), Negatives: uint32(rep.Negatives),
		DecisionPairs: uint32(rep.DecisionPairs), Recommended: policyProto(rep.Recommended),
		HeldOutCopy: point(rep.HeldOutCopy), HeldOutLookAlike: point(rep.HeldOutLookAlike), HeldOutEstimate: point(rep.HeldOutEstimate),
		CopyRecallByTransform: rep.CopyRecallByTransform, Applied: rep.Applied, TargetPrecision: rep.TargetPrecision,
	}
	for _, p := range rep.Points {
		out.Points = append(out.Points, point(p))
	}
	return out, nil
}
