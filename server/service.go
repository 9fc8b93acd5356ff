package server

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
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
	recent  *recentErrors
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

// writeOf turns an UpsertRequest into a catalogue write: its one photo (image or vector)
// or its photos, never both.
func writeOf(r *pb.UpsertRequest) (catalog.Write, error) {
	w := catalog.Write{
		ID: r.GetId(), Category: r.GetCategory(), Title: r.GetTitle(), Attributes: r.GetAttributes(),
		RemovePhotos: r.GetRemovePhotos(), KeepOtherPhotos: r.GetKeepOtherPhotos(),
		CheckDuplicates: r.GetCheckDuplicates(),
	}
	if r.GetContent() != nil {
		if len(r.GetPhotos()) > 0 {
			return w, fmt.Errorf("%w: product %q has both image/vector and photos; send one photo as either", catalog.ErrInvalidArgument, r.GetId())
		}
		pw := catalog.PhotoWrite{ID: r.GetPhotoId(), ImageURL: r.GetImageUrl()}
		switch c := r.GetContent().(type) {
		case *pb.UpsertRequest_Image:
			pw.Image = c.Image
		case *pb.UpsertRequest_Vector:
			pw.Vector = presentVector(c.Vector)
		}
		w.Photos = []catalog.PhotoWrite{pw}
		return w, nil
	}
	if r.GetPhotoId() != "" || r.GetImageUrl() != "" {
		return w, fmt.Errorf("%w: product %q: photo_id and image_url describe the image or vector field; with photos, set them per photo", catalog.ErrInvalidArgument, r.GetId())
	}
	for _, ph := range r.GetPhotos() {
		pw := catalog.PhotoWrite{ID: ph.GetId(), ImageURL: ph.GetImageUrl()}
		switch c := ph.GetContent().(type) {
		case *pb.PhotoInput_Image:
			pw.Image = c.Image
		case *pb.PhotoInput_Vector:
			pw.Vector = presentVector(c.Vector)
		}
		w.Photos = append(w.Photos, pw)
	}
	return w, nil
}

// presentVector keeps a present-but-empty vector distinct from none: a dimension error, not
// "keep the stored photo".
func presentVector(v *pb.Vector) []float32 {
	if v.GetValues() == nil {
		return []float32{}
	}
	return v.GetValues()
}

func (s *service) upsertResult(method string, pos uint64, res catalog.UpsertResult) *pb.UpsertResult {
	out := &pb.UpsertResult{Id: res.ID, Index: pos, Embedded: uint32(res.Embedded)}
	for _, ph := range res.Photos {
		out.Photos = append(out.Photos, photoProto(ph))
	}
	if len(res.Photos) > 0 {
		out.ImageSha256 = res.Photos[0].SHA256
	}
	for _, d := range res.Duplicates {
		out.Duplicates = append(out.Duplicates, &pb.PhotoDuplicate{PhotoId: d.PhotoID, Tier: tierProto(d.Tier),
			Signals: signalsProto(d.Signals), ProductId: d.ProductID, MatchedPhotoId: d.MatchedPhotoID})
	}
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
	w, err := writeOf(r)
	if err != nil {
		s.metrics.upserts.WithLabelValues("failed").Inc()
		return nil, s.fail("Upsert", err)
	}
	res, err := c.Upsert(ctx, w)
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
		var items []*pb.UpsertRequest
		endErr := first.err
		if first.err == nil {
			items = append(items, first.req)
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
					items = append(items, r.req)
				default:
					break gather
				}
			}
		}
		if len(items) > 0 {
			s.metrics.streamBatch.Observe(float64(len(items)))
			for _, res := range upsertBatch(ctx, c, items) {
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
// upsertBatch writes a batch of requests; a request that does not convert gets its error
// in its place, in order, without stopping the others.
func upsertBatch(ctx context.Context, c *catalog.Catalog, reqs []*pb.UpsertRequest) []catalog.UpsertResult {
	writes := make([]catalog.Write, 0, len(reqs))
	results := make([]catalog.UpsertResult, len(reqs))
	at := make([]int, 0, len(reqs))
	for i, r := range reqs {
		w, err := writeOf(r)
		if err != nil {
			results[i] = catalog.UpsertResult{ID: r.GetId(), Err: err}
			continue
		}
		writes = append(writes, w)
		at = append(at, i)
	}
	for j, res := range c.UpsertBatch(ctx, writes) {
		results[at[j]] = res
	}
	return results
}

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

// ListProducts returns one page of products in id order. The page token is the last id of
// the previous page, base64url-encoded: opaque to clients, and a position that writes in
// between do not shift.
func (s *service) ListProducts(ctx context.Context, r *pb.ListProductsRequest) (*pb.ListProductsResponse, error) {
	c, err := s.catalog()
	if err != nil {
		return nil, err
	}
	after, err := base64.RawURLEncoding.DecodeString(r.GetPageToken())
	if err != nil {
		return nil, s.fail("ListProducts", fmt.Errorf("%w: page_token is not one this server handed out", catalog.ErrInvalidArgument))
	}
	page, err := c.List(ctx, catalog.ListOptions{Filter: filterOf(r.GetFilter()), After: string(after), Limit: int(r.GetPageSize())})
	if err != nil {
		return nil, s.fail("ListProducts", err)
	}
	out := &pb.ListProductsResponse{Products: make([]*pb.Product, len(page.Products)), TotalSize: uint64(page.Total)}
	for i, p := range page.Products {
		out.Products[i] = productProto(p)
	}
	if page.More {
		out.NextPageToken = base64.RawURLEncoding.EncodeToString([]byte(page.Products[len(page.Products)-1].ID))
	}
	return out, nil
}

// GetPhoto returns a kept photo.
func (s *service) GetPhoto(ctx context.Context, r *pb.GetPhotoRequest) (*pb.GetPhotoResponse, error) {
	c, err := s.catalog()
	if err != nil {
		return nil, err
	}
	if r.GetPhotoId() == "" {
		return nil, s.fail("GetPhoto", fmt.Errorf("%w: photo_id is empty", catalog.ErrInvalidArgument))
	}
	jpeg, ph, err := c.KeptPhoto(ctx, r.GetId(), r.GetPhotoId())
	if err != nil {
		return nil, s.fail("GetPhoto", err)
	}
	return &pb.GetPhotoResponse{Image: jpeg, ContentType: "image/jpeg", Photo: photoProto(ph)}, nil
}

// rankedRequest is what the three search requests share.
type rankedRequest interface {
	GetK() int32
	GetEf() int32
	GetMinScore() float32
	GetFilter() *pb.Filter
	GetGroupBy() string
	GetNotLike() []string
	GetDiversity() float32
	GetExpand() int32
	GetExpandAlpha() float32
	GetBoosts() []*pb.Boost
}

func searchOptions(r rankedRequest) catalog.SearchOptions {
	return catalog.SearchOptions{
		K: int(r.GetK()), EF: int(r.GetEf()), MinScore: r.GetMinScore(), Filter: filterOf(r.GetFilter()),
		GroupBy: r.GetGroupBy(), NotLike: r.GetNotLike(), Diversity: r.GetDiversity(),
		Expand: int(r.GetExpand()), ExpandAlpha: r.GetExpandAlpha(), Boosts: boostsOf(r.GetBoosts()),
	}
}

func boostsOf(bs []*pb.Boost) []catalog.Boost {
	if len(bs) == 0 {
		return nil
	}
	out := make([]catalog.Boost, len(bs))
	for i, b := range bs {
		out[i] = catalog.Boost{Attribute: b.GetAttribute(), Value: b.GetValue(), Add: b.GetAdd()}
	}
	return out
}

func filterOf(f *pb.Filter) catalog.Filter {
	return catalog.Filter{
		Categories: f.GetCategories(), Attributes: f.GetAttributes(), ExcludeIDs: f.GetExcludeIds(),
	}
}

func searchResponse(rs []catalog.Result) *pb.SearchResponse {
	out := &pb.SearchResponse{Results: make([]*pb.SearchResult, len(rs))}
	for i, r := range rs {
		out.Results[i] = &pb.SearchResult{Product: productProto(r.Product), Score: r.Score, PhotoId: r.PhotoID}
	}
	return out
}

// SearchByImage embeds a photo and searches with it.
func (s *service) SearchByImage(ctx context.Context, r *pb.SearchByImageRequest) (*pb.SearchResponse, error) {
	c, err := s.catalog()
	if err != nil {
		return nil, err
	}
	rs, err := c.SearchByImage(ctx, r.GetImage(), searchOptions(r))
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
	rs, err := c.SearchByID(ctx, r.GetId(), searchOptions(r))
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
	rs, err := c.SearchByVector(ctx, r.GetVector(), searchOptions(r))
	if err != nil {
		return nil, s.fail("SearchByVector", err)
	}
	return searchResponse(rs), nil
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
		Count: uint64(st.Count), Photos: uint64(st.Photos), KeptPhotos: uint64(st.KeptPhotos),
		KeptBytes: uint64(st.KeptBytes), CountByCategory: make(map[string]uint64, len(st.CountByCategory)),
		ModelIdentity: st.ModelIdentity, Dim: uint32(st.Dim),
		Index: &pb.IndexParams{
			M: uint32(st.Index.M), EfConstruction: uint32(st.Index.EFConstruction),
			EfSearch: uint32(st.Index.EFSearch), Metric: st.Index.Metric, Size: uint64(st.Index.Size),
			CatchingUp: uint64(st.Index.CatchingUp),
		},
		StoreSeq: st.StoreSeq, SnapshotSeq: st.SnapshotSeq, Backend: st.Backend,
		DuplicatePolicy: policyProto(st.Policy), Decisions: uint64(st.Decisions),
		RecentErrors: s.recent.list(),
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
		Photos: make([]*pb.Photo, len(p.Photos)),
	}
	for i, ph := range p.Photos {
		out.Photos[i] = photoProto(ph)
	}
	if len(p.Photos) > 0 {
		first := p.Photos[0]
		out.ImageUrl, out.ImageSha256, out.Vector = first.ImageURL, first.SHA256, first.Vector
	}
	out.Created, out.Updated = timestamp(p.Created), timestamp(p.Updated)
	return out
}

func photoProto(ph catalog.Photo) *pb.Photo {
	out := &pb.Photo{
		Id: ph.ID, ImageUrl: ph.ImageURL, ImageSha256: ph.SHA256, Kept: ph.Kept,
		KeptBytes: uint32(ph.KeptBytes), Vector: ph.Vector,
		Created: timestamp(ph.Created), Updated: timestamp(ph.Updated),
	}
	if ph.HasPHash {
		out.Phash = fmt.Sprintf("%016x", ph.PHash)
	}
	return out
}

// timestamp is t as a proto timestamp, unset for the zero time.
func timestamp(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
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
		StoreSeq: info.Seq, Count: uint64(info.Products), Photos: uint64(info.Photos),
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
