package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"math"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"lookalike/catalog"
	pb "lookalike/proto/lookalike/v1"
)

// streamBatch bounds how many streamed items go to the catalogue together: enough to fill
// the embedder's batches and amortise one store transaction, small enough that results flow
// back steadily.
const streamBatch = 64

// service implements lookalikev1.LookalikeServer over a catalogue that appears once loaded.
type service struct {
	pb.UnimplementedLookalikeServer
	log     *slog.Logger
	metrics *metrics
	cat     atomic.Pointer[catalog.Catalog]
	// backupChunk is the data size of one Backup message, below the largest message.
	backupChunk int
}

// catalog returns the open catalogue, or UNAVAILABLE while it is still loading.
func (s *service) catalog() (*catalog.Catalog, error) {
	c := s.cat.Load()
	if c == nil {
		return nil, status.Error(codes.Unavailable, "the catalogue is still loading; retry shortly")
	}
	return c, nil
}

func (s *service) fail(method string, err error) error { return toStatus(s.log, method, err) }

func upsertItem(r *pb.UpsertRequest) catalog.UpsertItem {
	it := catalog.UpsertItem{
		ID: r.GetId(), Category: r.GetCategory(), Title: r.GetTitle(), ImageURL: r.GetImageUrl(),
		Attributes: r.GetAttributes(),
	}
	switch c := r.GetContent().(type) {
	case *pb.UpsertRequest_Image:
		it.Image = c.Image
	case *pb.UpsertRequest_Vector:
		it.Vector = c.Vector.GetValues()
		if it.Vector == nil {
			it.Vector = []float32{} // present but empty: a dimension error, not "no content"
		}
	}
	return it
}

func (s *service) upsertResult(method string, pos uint64, res catalog.UpsertResult) *pb.UpsertResult {
	out := &pb.UpsertResult{Id: res.ID, Index: pos, ImageSha256: res.ImageSHA256}
	if res.Err != nil {
		st, _ := status.FromError(s.fail(method, res.Err))
		out.Outcome = pb.Outcome_OUTCOME_FAILED
		out.ErrorCode = int32(st.Code())
		out.ErrorMessage = st.Message()
		s.metrics.upserts.WithLabelValues("failed").Inc()
		return out
	}
	switch res.Outcome {
	case catalog.Created:
		out.Outcome = pb.Outcome_OUTCOME_CREATED
	case catalog.Updated:
		out.Outcome = pb.Outcome_OUTCOME_UPDATED
	case catalog.Unchanged:
		out.Outcome = pb.Outcome_OUTCOME_UNCHANGED
	}
	s.metrics.upserts.WithLabelValues(res.Outcome.String()).Inc()
	return out
}

// Upsert adds or replaces one product.
func (s *service) Upsert(ctx context.Context, r *pb.UpsertRequest) (*pb.UpsertResult, error) {
	c, err := s.catalog()
	if err != nil {
		return nil, err
	}
	res, err := c.Upsert(ctx, upsertItem(r))
	if err != nil {
		s.metrics.upserts.WithLabelValues("failed").Inc()
		return nil, s.fail("Upsert", err)
	}
	return s.upsertResult("Upsert", 0, res), nil
}

// UpsertStream ingests a stream of products in batches: a reader goroutine keeps receiving
// while a batch is embedded and written, and each batch takes whatever has arrived, up to
// streamBatch items.
func (s *service) UpsertStream(stream pb.Lookalike_UpsertStreamServer) error {
	c, err := s.catalog()
	if err != nil {
		return err
	}
	ctx := stream.Context()
	type received struct {
		req *pb.UpsertRequest
		err error
	}
	incoming := make(chan received, 2*streamBatch)
	go func() {
		defer close(incoming)
		for {
			req, err := stream.Recv()
			select {
			case incoming <- received{req, err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()

	var pos uint64
	for {
		var first received
		select {
		case r, ok := <-incoming:
			if !ok {
				return s.fail("UpsertStream", ctx.Err())
			}
			first = r
		case <-ctx.Done():
			return s.fail("UpsertStream", ctx.Err())
		}
		var items []catalog.UpsertItem
		endErr := first.err
		if first.err == nil {
			items = append(items, upsertItem(first.req))
		gather:
			for len(items) < streamBatch {
				select {
				case r, ok := <-incoming:
					if !ok {
						break gather
					}
					if r.err != nil {
						endErr = r.err
						break gather
					}
					items = append(items, upsertItem(r.req))
				default:
					break gather
				}
			}
		}
		if len(items) > 0 {
			s.metrics.streamBatch.Observe(float64(len(items)))
			for _, res := range c.UpsertBatch(ctx, items) {
				if err := stream.Send(s.upsertResult("UpsertStream", pos, res)); err != nil {
					return err
				}
				pos++
			}
		}
		if errors.Is(endErr, io.EOF) {
			return nil
		}
		if endErr != nil {
			return endErr
		}
	}
}

// Delete removes a product.
func (s *service) Delete(ctx context.Context, r *pb.DeleteRequest) (*pb.DeleteResponse, error) {
	c, err := s.catalog()
	if err != nil {
		return nil, err
	}
	p, err := c.Delete(ctx, r.GetId())
	if err != nil {
		return nil, s.fail("Delete", err)
	}
	return &pb.DeleteResponse{Product: productProto(p)}, nil
}

// Get returns a product.
func (s *service) Get(ctx context.Context, r *pb.GetRequest) (*pb.GetResponse, error) {
	c, err := s.catalog()
	if err != nil {
		return nil, err
	}
	p, err := c.Get(ctx, r.GetId(), r.GetIncludeVector())
	if err != nil {
		return nil, s.fail("Get", err)
	}
	return &pb.GetResponse{Product: productProto(p)}, nil
}

// searchOptions converts the common search fields; k's range is checked by the catalogue.
func searchOptions(k, ef int32, minScore float32, f *pb.Filter) catalog.SearchOptions {
	return catalog.SearchOptions{K: int(k), EF: int(ef), MinScore: minScore, Filter: filterOf(f)}
}

func filterOf(f *pb.Filter) catalog.Filter {
	return catalog.Filter{
		Categories: f.GetCategories(), Attributes: f.GetAttributes(), ExcludeIDs: f.GetExcludeIds(),
	}
}

func searchResponse(rs []catalog.Result) *pb.SearchResponse {
	out := &pb.SearchResponse{Results: make([]*pb.SearchResult, len(rs))}
	for i, r := range rs {
		out.Results[i] = &pb.SearchResult{Product: productProto(r.Product), Score: r.Score}
	}
	return out
}

// SearchByImage embeds a photo and searches with it.
func (s *service) SearchByImage(ctx context.Context, r *pb.SearchByImageRequest) (*pb.SearchResponse, error) {
	c, err := s.catalog()
	if err != nil {
		return nil, err
	}
	rs, err := c.SearchByImage(ctx, r.GetImage(), searchOptions(r.GetK(), r.GetEf(), r.GetMinScore(), r.GetFilter()))
	if err != nil {
		return nil, s.fail("SearchByImage", err)
	}
	return searchResponse(rs), nil
}

// SearchById searches from a stored product's vector.
func (s *service) SearchById(ctx context.Context, r *pb.SearchByIdRequest) (*pb.SearchResponse, error) {
	c, err := s.catalog()
	if err != nil {
		return nil, err
	}
	rs, err := c.SearchByID(ctx, r.GetId(), searchOptions(r.GetK(), r.GetEf(), r.GetMinScore(), r.GetFilter()))
	if err != nil {
		return nil, s.fail("SearchById", err)
	}
	return searchResponse(rs), nil
}

// SearchByVector searches from a client-made vector.
func (s *service) SearchByVector(ctx context.Context, r *pb.SearchByVectorRequest) (*pb.SearchResponse, error) {
	c, err := s.catalog()
	if err != nil {
		return nil, err
	}
	rs, err := c.SearchByVector(ctx, r.GetVector(), searchOptions(r.GetK(), r.GetEf(), r.GetMinScore(), r.GetFilter()))
	if err != nil {
		return nil, s.fail("SearchByVector", err)
	}
	return searchResponse(rs), nil
}

// threshold turns an optional proto threshold into the catalogue's (0 = default). An explicit
// 0 becomes the smallest positive float, which admits the same pairs for any real score.
func threshold(t *float32) float32 {
	if t == nil {
		return 0
	}
	if *t == 0 {
		return math.SmallestNonzeroFloat32
	}
	return *t
}

// FindDuplicates streams near-duplicate clusters.
func (s *service) FindDuplicates(r *pb.FindDuplicatesRequest, stream pb.Lookalike_FindDuplicatesServer) error {
	c, err := s.catalog()
	if err != nil {
		return err
	}
	opt := catalog.DuplicateOptions{
		Threshold: threshold(r.Threshold), Filter: filterOf(r.GetFilter()),
		MaxNeighbors: int(r.GetMaxNeighbors()), EF: int(r.GetEf()),
	}
	err = c.FindDuplicates(stream.Context(), opt, func(cl catalog.Cluster) error {
		msg := &pb.DuplicateCluster{Ids: cl.IDs, Edges: make([]*pb.DuplicateEdge, len(cl.Edges))}
		for i, e := range cl.Edges {
			msg.Edges[i] = &pb.DuplicateEdge{A: e.A, B: e.B, Score: e.Score}
		}
		return stream.Send(msg)
	})
	if err != nil {
		return s.fail("FindDuplicates", err)
	}
	return nil
}

// CheckDuplicate tells whether a photo is already in the catalogue.
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
		out.BestMatch = &pb.SearchResult{Product: productProto(d.BestMatch.Product), Score: d.BestMatch.Score}
	}
	return out, nil
}

// Stats describes the catalogue.
func (s *service) Stats(ctx context.Context, _ *pb.StatsRequest) (*pb.StatsResponse, error) {
	c, err := s.catalog()
	if err != nil {
		return nil, err
	}
	st, err := c.Stats(ctx)
	if err != nil {
		return nil, s.fail("Stats", err)
	}
	out := &pb.StatsResponse{
		Count: uint64(st.Count), CountByCategory: make(map[string]uint64, len(st.CountByCategory)),
		ModelIdentity: st.ModelIdentity, Dim: uint32(st.Dim),
		Index: &pb.IndexParams{
			M: uint32(st.Index.M), EfConstruction: uint32(st.Index.EFConstruction),
			EfSearch: uint32(st.Index.EFSearch), Metric: st.Index.Metric, Size: uint64(st.Index.Size),
		},
		StoreSeq: st.StoreSeq, SnapshotSeq: st.SnapshotSeq,
	}
	for k, v := range st.CountByCategory {
		out.CountByCategory[k] = uint64(v)
	}
	if !st.SnapshotTime.IsZero() {
		out.SnapshotTime = timestamppb.New(st.SnapshotTime)
		out.SnapshotAge = durationpb.New(time.Since(st.SnapshotTime))
	}
	return out, nil
}

func productProto(p catalog.Product) *pb.Product {
	out := &pb.Product{
		Id: p.ID, Category: p.Category, Title: p.Title, Attributes: p.Attributes,
		ImageUrl: p.ImageURL, ImageSha256: p.ImageSHA256, Vector: p.Vector,
	}
	if !p.Created.IsZero() {
		out.Created = timestamppb.New(p.Created)
	}
	if !p.Updated.IsZero() {
		out.Updated = timestamppb.New(p.Updated)
	}
	return out
}

// Backup streams a consistent copy of the store, then its size and SHA-256.
func (s *service) Backup(_ *pb.BackupRequest, stream pb.Lookalike_BackupServer) error {
	c, err := s.catalog()
	if err != nil {
		return err
	}
	out := &chunkStream{send: stream.Send, size: s.backupChunk, hash: sha256.New(), sent: s.metrics.backupBytes}
	info, err := c.Backup(stream.Context(), out)
	if err == nil {
		err = out.flush()
	}
	if err != nil {
		return s.fail("Backup", err)
	}
	if uint64(info.Bytes) != out.offset {
		return s.fail("Backup", fmt.Errorf("server: backup of %d bytes, %d sent", info.Bytes, out.offset))
	}
	return stream.Send(&pb.BackupChunk{Offset: out.offset, Complete: &pb.BackupComplete{
		Size: out.offset, Sha256: hex.EncodeToString(out.hash.Sum(nil)),
		StoreSeq: info.Seq, Count: uint64(info.Items),
	}})
}

// chunkStream gathers written bytes into messages of size bytes and sends each as it fills,
// hashing everything it sends.
type chunkStream struct {
	send   func(*pb.BackupChunk) error
	size   int
	hash   hash.Hash
	sent   prometheus.Counter
	buf    []byte
	offset uint64 // bytes sent before buf
}

func (w *chunkStream) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		if w.buf == nil {
			// A new slice per message: gRPC may still read a sent message after Send returns.
			w.buf = make([]byte, 0, w.size)
		}
		n := min(len(p), w.size-len(w.buf))
		w.buf = append(w.buf, p[:n]...)
		p = p[n:]
		written += n
		if len(w.buf) == w.size {
			if err := w.flush(); err != nil {
				return written, err
			}
		}
	}
	return written, nil
}

func (w *chunkStream) flush() error {
	if len(w.buf) == 0 {
		return nil
	}
	if err := w.send(&pb.BackupChunk{Data: w.buf, Offset: w.offset}); err != nil {
		return err
	}
	w.hash.Write(w.buf)
	w.offset += uint64(len(w.buf))
	w.sent.Add(float64(len(w.buf)))
	w.buf = nil
	return nil
}
