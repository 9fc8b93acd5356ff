package main

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	lookalikev1 "lookalike/proto/lookalike/v1"
)

// ingestFailure is one product that did not make it into the catalogue, with the stage that
// failed: manifest (bad row), read (file or URL), upsert (the server rejected it) or stream
// (the connection broke while it was in flight).
type ingestFailure struct {
	Line   int    `json:"line"`
	ID     string `json:"id"`
	Image  string `json:"image"`
	Stage  string `json:"stage"`
	Code   string `json:"code,omitempty"`
	Reason string `json:"reason"`
}

// ingestSummary is `lookalike ingest --json` and the numbers of the human summary.
type ingestSummary struct {
	Manifest       string          `json:"manifest"`
	Total          int             `json:"total"`
	Created        int             `json:"created"`
	Updated        int             `json:"updated"`
	Unchanged      int             `json:"unchanged"`
	Skipped        int             `json:"skipped"`
	Failed         int             `json:"failed"`
	NotAttempted   int             `json:"not_attempted"`
	ElapsedSeconds float64         `json:"elapsed_seconds"`
	PerSecond      float64         `json:"per_second"`
	FailuresFile   string          `json:"failures_file,omitempty"`
	Failures       []ingestFailure `json:"failures"`
	// Duplicates, with --check-duplicates: the photos that are copies or exact duplicates
	// of another product's photo.
	Duplicates []ingestDuplicate `json:"duplicates,omitempty"`
}

// ingestDuplicate is an ingested photo found to copy another product's photo.
type ingestDuplicate struct {
	Line         int     `json:"line"`
	ID           string  `json:"id"`
	Photo        string  `json:"photo"`
	Tier         string  `json:"tier"`
	Matches      string  `json:"matches"`
	MatchedPhoto string  `json:"matched_photo"`
	Cosine       float32 `json:"cosine"`
	Hamming      int32   `json:"hamming"`
	// CropHamming is -1 and CropCorrelation 0 when not computed.
	CropHamming     int32   `json:"crop_hamming"`
	CropCorrelation float32 `json:"crop_correlation"`
}

type ingestOptions struct {
	concurrency int
	streams     int
	window      int
	verify      bool // ask the server for each id's image hash and skip identical items
	checkDups   bool // ask the server to report copies and exact duplicates of each new photo
	failures    string
	progress    bool
}

func runIngest(ctx context.Context, a *app, args []string) error {
	fs := newFlagSet(a, "ingest", "[flags] MANIFEST",
		"Stream the products of a CSV or JSON Lines manifest into a server.\n\n"+
			"Columns (CSV header or JSON keys): id and image are required; image is a path relative to\n"+
			"the manifest, an absolute path or an http(s) URL. category and title are optional; every\n"+
			"other column becomes an attribute. Items whose stored image hash and metadata already\n"+
			"match are skipped without sending the photo, so an interrupted ingest can simply be re-run.\n"+
			"Failures are written with their reasons to --failures; the exit status is 1 if any item failed.")
	var cf clientFlags
	cf.register(fs, a)
	var opt ingestOptions
	fs.IntVar(&opt.concurrency, "concurrency", 4, "photos read, hashed and checked in parallel")
	fs.IntVar(&opt.streams, "streams", 2, "parallel upload streams to the server")
	fs.IntVar(&opt.window, "window", 32, "photos in flight per stream before waiting for results")
	noSkip := fs.Bool("no-skip", false, "send every photo even when the server already holds the same one (the server still answers unchanged)")
	fs.StringVar(&opt.failures, "failures", "lookalike-failures.csv", "file the failed items are written to, with reasons (only when some fail)")
	fs.BoolVar(&opt.checkDups, "check-duplicates", false, "report every photo that is a copy or an exact duplicate of another product's photo (the write goes ahead)")
	quiet := fs.Bool("quiet", false, "no progress display")
	asJSON := fs.Bool("json", false, "print the summary as JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("want exactly one MANIFEST, got %d arguments", fs.NArg())
	}
	if opt.concurrency < 1 || opt.streams < 1 || opt.window < 1 {
		return usagef("--concurrency, --streams and --window must be at least 1")
	}
	opt.verify = !*noSkip
	opt.progress = !*quiet

	path := fs.Arg(0)
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open manifest: %w", err)
	}
	rows, rejects, err := readManifest(f, path)
	f.Close()
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	manifestDir, err := filepath.Abs(filepath.Dir(path))
	if err != nil {
		return fmt.Errorf("manifest directory: %w", err)
	}
	c, err := cf.dial()
	if err != nil {
		return err
	}
	defer c.Close()

	// One cheap call first, so a wrong address or token fails at once with one clear reason
	// instead of once per item.
	pre, cancelPre := c.call(ctx)
	_, err = c.client.Stats(pre, &lookalikev1.StatsRequest{})
	cancelPre()
	if err != nil {
		return describeRPCError(cf.server, err)
	}

	in := &ingester{
		conn:     c,
		server:   cf.server,
		loader:   newImageLoader(cf.timeout),
		opt:      opt,
		dir:      manifestDir,
		failures: rejects,
		finished: len(rejects),
		logger:   a.logger,
	}
	in.summary.Manifest = path
	in.summary.Total = len(rows) + len(rejects)
	in.summary.Failed = len(rejects)
	if opt.progress {
		terminal, width := isTerminal(a.stderr)
		in.bar = newProgress(a.stderr, "ingest", in.summary.Total, terminal)
		if width > 0 {
			in.bar.width = width
		}
		if len(rejects) > 0 {
			in.bar.Add(len(rejects), in.counters())
		}
	}
	start := time.Now()
	runErr := in.run(ctx, rows)
	if in.bar != nil {
		in.bar.Finish()
	}
	s := in.finish(time.Since(start))
	if s.Failed > 0 && opt.failures != "" {
		if err := writeFailures(opt.failures, s.Failures); err != nil {
			return err
		}
		s.FailuresFile = opt.failures
	}
	if *asJSON {
		if err := writeJSON(a.stdout, s); err != nil {
			return err
		}
	} else {
		printIngestSummary(a.stdout, s)
	}
	switch {
	case runErr != nil:
		return runErr
	case s.Failed > 0:
		where := ""
		if s.FailuresFile != "" {
			where = "; reasons in " + s.FailuresFile
		}
		return fmt.Errorf("%d of %d items failed%s", s.Failed, s.Total, where)
	}
	return nil
}

// ingester runs one ingest: loaders read and hash photos and drop the ones the server already
// holds, then a few UpsertStreams carry the rest.
type ingester struct {
	conn   *connection
	server string
	loader *imageLoader
	opt    ingestOptions
	dir    string
	logger *slog.Logger
	bar    *progress

	mu       sync.Mutex
	summary  ingestSummary
	failures []ingestFailure
	finished int
}

// pendingUpsert is a photo ready to send.
type pendingUpsert struct {
	row manifestRow
	req *lookalikev1.UpsertRequest
}

// maxStreamRestarts bounds reconnects after a broken stream before giving the rest up.
const maxStreamRestarts = 3

func (in *ingester) run(ctx context.Context, rows []manifestRow) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	todo := make(chan manifestRow)
	ready := make(chan pendingUpsert, in.opt.streams*in.opt.window)

	var loaders sync.WaitGroup
	for range in.opt.concurrency {
		loaders.Add(1)
		go func() {
			defer loaders.Done()
			for row := range todo {
				if p, ok := in.prepare(ctx, row); ok {
					select {
					case ready <- p:
					case <-ctx.Done():
						return
					}
				}
			}
		}()
	}
	go func() {
		defer close(todo)
		for _, row := range rows {
			select {
			case todo <- row:
			case <-ctx.Done():
				return
			}
		}
	}()
	go func() {
		loaders.Wait()
		close(ready)
	}()

	var senders sync.WaitGroup
	streamErrs := make([]error, in.opt.streams)
	for i := range in.opt.streams {
		senders.Add(1)
		go func() {
			defer senders.Done()
			streamErrs[i] = in.stream(ctx, ready)
		}()
	}
	senders.Wait()
	// If every stream gave up, loaders may still be blocked on ready: cancel releases them.
	cancel()
	loaders.Wait()
	for range ready {
	}
	// Every stream usually fails for the same reason; report it once.
	for _, err := range streamErrs {
		if err != nil {
			return err
		}
	}
	return nil
}

// prepare reads and hashes a product's photos and decides what needs sending: nothing when
// the server holds the product as it is; otherwise the product, with each photo the server
// already holds under the same id and bytes sent as a reference (its id, no bytes).
func (in *ingester) prepare(ctx context.Context, row manifestRow) (pendingUpsert, bool) {
	req := &lookalikev1.UpsertRequest{
		Id: row.ID, Category: row.Category, Title: row.Title, Attributes: row.Attributes,
		CheckDuplicates: in.opt.checkDups,
	}
	hashes := make([]string, len(row.Photos))
	for i, ph := range row.Photos {
		ref := resolveImage(in.dir, ph.Image)
		img, err := in.loader.load(ctx, ref)
		if err != nil {
			if ctx.Err() != nil {
				return pendingUpsert{}, false
			}
			in.fail(row, "read", "", fmt.Sprintf("%s: %v", ph.Image, err))
			return pendingUpsert{}, false
		}
		sum := sha256.Sum256(img)
		hashes[i] = hex.EncodeToString(sum[:])
		req.Photos = append(req.Photos, &lookalikev1.PhotoInput{
			Id: ph.ID, Content: &lookalikev1.PhotoInput_Image{Image: img}, ImageUrl: ref,
		})
	}
	if in.opt.verify && in.skipStored(ctx, req, hashes) {
		in.done(func(s *ingestSummary) { s.Skipped++ })
		return pendingUpsert{}, false
	}
	return pendingUpsert{row: row, req: req}, true
}

// skipStored asks the server for the stored product. It reports true when the product is
// stored exactly as req would write it; otherwise it turns every photo of req that the
// server holds under the same id with the same bytes into a reference, so those bytes are
// not sent. Any doubt (an error, a difference) means "send": the server makes the final call.
func (in *ingester) skipStored(ctx context.Context, req *lookalikev1.UpsertRequest, hashes []string) bool {
	callCtx, cancel := in.conn.call(ctx)
	defer cancel()
	resp, err := in.conn.client.Get(callCtx, &lookalikev1.GetRequest{Id: req.GetId()})
	if err != nil {
		if status.Code(err) != codes.NotFound && ctx.Err() == nil {
			in.logger.Warn("could not check stored product; sending it", "id", req.GetId(), "err", err)
		}
		return false
	}
	p := resp.GetProduct()
	stored := make(map[string]*lookalikev1.Photo, len(p.GetPhotos()))
	for _, ph := range p.GetPhotos() {
		stored[ph.GetId()] = ph
	}
	same := len(p.GetPhotos()) == len(req.Photos) && p.GetCategory() == req.GetCategory() &&
		p.GetTitle() == req.GetTitle() && maps.Equal(p.GetAttributes(), req.GetAttributes())
	for i, ph := range req.Photos {
		id := ph.GetId()
		if id == "" {
			id = hashes[i][:16] // the id the server derives from the bytes
		}
		old, ok := stored[id]
		if !ok || old.GetImageSha256() != hashes[i] {
			same = false
			continue
		}
		if i >= len(p.GetPhotos()) || p.GetPhotos()[i].GetId() != id || old.GetImageUrl() != ph.GetImageUrl() {
			same = false
		}
		req.Photos[i] = &lookalikev1.PhotoInput{Id: id, ImageUrl: ph.GetImageUrl()}
	}
	return same
}

// stream sends photos over UpsertStream until ready is drained, reconnecting after a broken
// stream; items in flight on a broken stream are failed so a re-run picks them up.
func (in *ingester) stream(ctx context.Context, ready <-chan pendingUpsert) error {
	restarts := 0
	for {
		sent, err := in.streamOnce(ctx, ready)
		switch {
		case err == nil:
			return nil
		case ctx.Err() != nil:
			return fmt.Errorf("interrupted; re-run the same command to resume: %w", ctx.Err())
		}
		if sent > 0 {
			restarts = 0
		}
		restarts++
		if restarts > maxStreamRestarts {
			return describeRPCError(in.server, err)
		}
		in.logger.Warn("upload stream broke; reconnecting", "err", err, "attempt", restarts)
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(restarts) * 500 * time.Millisecond):
		}
	}
}

// streamOnce runs one UpsertStream. It returns how many results arrived, and nil once ready is
// closed and every sent item has its result.
func (in *ingester) streamOnce(ctx context.Context, ready <-chan pendingUpsert) (int, error) {
	streamCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := in.conn.client.UpsertStream(streamCtx)
	if err != nil {
		return 0, err
	}
	var (
		mu       sync.Mutex
		inflight = map[uint64]pendingUpsert{}
		window   = make(chan struct{}, in.opt.window)
		recvErr  = make(chan error, 1)
		received int
	)
	go func() {
		for {
			res, err := st.Recv()
			if err != nil {
				if errors.Is(err, io.EOF) {
					err = nil
				}
				recvErr <- err
				return
			}
			mu.Lock()
			p, ok := inflight[res.GetIndex()]
			delete(inflight, res.GetIndex())
			received++
			mu.Unlock()
			if !ok {
				recvErr <- fmt.Errorf("server answered for unknown stream position %d", res.GetIndex())
				return
			}
			in.record(p.row, res)
			<-window
		}
	}()

	// failInflight turns whatever the broken stream still owed into failures.
	// After an interrupt their outcome is unknown rather than failed: they count as not
	// attempted, and the re-run the message suggests settles them.
	failInflight := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		for idx, p := range inflight {
			if ctx.Err() == nil {
				in.fail(p.row, "stream", status.Code(err).String(), describeRPCError(in.server, err).Error())
			}
			delete(inflight, idx)
		}
	}
	var next uint64
	for {
		var p pendingUpsert
		var open bool
		select {
		case p, open = <-ready:
		case err := <-recvErr:
			if err == nil {
				err = errors.New("server closed the stream early")
			}
			failInflight(err)
			return received, err
		}
		if !open {
			break
		}
		select {
		case window <- struct{}{}:
		case err := <-recvErr:
			if err == nil {
				err = errors.New("server closed the stream early")
			}
			if ctx.Err() == nil {
				in.fail(p.row, "stream", status.Code(err).String(), describeRPCError(in.server, err).Error())
			}
			failInflight(err)
			return received, err
		}
		mu.Lock()
		inflight[next] = p
		mu.Unlock()
		next++
		if err := st.Send(p.req); err != nil {
			// The real cause comes from Recv; Send only reports io.EOF on a broken stream.
			err = <-recvErr
			if err == nil {
				err = errors.New("server closed the stream early")
			}
			failInflight(err)
			return received, err
		}
	}
	if err := st.CloseSend(); err != nil {
		failInflight(err)
		return received, err
	}
	if err := <-recvErr; err != nil {
		failInflight(err)
		return received, err
	}
	mu.Lock()
	left := len(inflight)
	mu.Unlock()
	if left > 0 {
		err := fmt.Errorf("stream ended with %d results missing", left)
		failInflight(err)
		return received, err
	}
	return received, nil
}

func (in *ingester) record(row manifestRow, res *lookalikev1.UpsertResult) {
	if len(res.GetDuplicates()) > 0 {
		in.mu.Lock()
		for _, d := range res.GetDuplicates() {
			in.summary.Duplicates = append(in.summary.Duplicates, ingestDuplicate{
				Line: row.Line, ID: row.ID, Photo: d.GetPhotoId(), Tier: tierName(d.GetTier()), Matches: d.GetProductId(),
				MatchedPhoto: d.GetMatchedPhotoId(), Cosine: d.GetSignals().GetCosine(), Hamming: d.GetSignals().GetHamming(),
				CropHamming: d.GetSignals().GetCropHamming(), CropCorrelation: d.GetSignals().GetCropCorrelation(),
			})
		}
		in.mu.Unlock()
	}
	switch res.GetOutcome() {
	case lookalikev1.Outcome_OUTCOME_CREATED:
		in.done(func(s *ingestSummary) { s.Created++ })
	case lookalikev1.Outcome_OUTCOME_UPDATED:
		in.done(func(s *ingestSummary) { s.Updated++ })
	case lookalikev1.Outcome_OUTCOME_UNCHANGED:
		in.done(func(s *ingestSummary) { s.Unchanged++ })
	default:
		in.fail(row, "upsert", codes.Code(res.GetErrorCode()).String(), res.GetErrorMessage())
	}
}

func (in *ingester) fail(row manifestRow, stage, code, reason string) {
	in.mu.Lock()
	in.failures = append(in.failures, ingestFailure{Line: row.Line, ID: row.ID, Image: row.photoList(), Stage: stage, Code: code, Reason: oneLine(reason)})
	in.mu.Unlock()
	in.done(func(s *ingestSummary) { s.Failed++ })
}

func (in *ingester) done(update func(*ingestSummary)) {
	in.mu.Lock()
	update(&in.summary)
	in.finished++
	extra := in.countersLocked()
	in.mu.Unlock()
	if in.bar != nil {
		in.bar.Add(1, extra)
	}
}

func (in *ingester) counters() string {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.countersLocked()
}

func (in *ingester) countersLocked() string {
	s := in.summary
	return fmt.Sprintf("(new %d, updated %d, same %d, failed %d)", s.Created, s.Updated, s.Unchanged+s.Skipped, s.Failed)
}

func (in *ingester) finish(elapsed time.Duration) ingestSummary {
	in.mu.Lock()
	defer in.mu.Unlock()
	s := in.summary
	s.Failures = append([]ingestFailure{}, in.failures...)
	// Manifest order reads best next to the manifest.
	slices.SortStableFunc(s.Failures, func(a, b ingestFailure) int { return cmp.Compare(a.Line, b.Line) })
	s.NotAttempted = s.Total - in.finished
	s.ElapsedSeconds = elapsed.Seconds()
	if elapsed > 0 {
		s.PerSecond = float64(s.Created+s.Updated+s.Unchanged+s.Skipped) / elapsed.Seconds()
	}
	return s
}

func writeFailures(path string, failures []ingestFailure) error {
	err := writeFileAtomically(path, func(f io.Writer) error {
		w := csv.NewWriter(f)
		w.Write([]string{"line", "id", "image", "stage", "code", "reason"})
		for _, x := range failures {
			w.Write([]string{strconv.Itoa(x.Line), x.ID, x.Image, x.Stage, x.Code, x.Reason})
		}
		w.Flush()
		return w.Error()
	})
	if err != nil {
		return fmt.Errorf("write failures file: %w", err)
	}
	return nil
}

func printIngestSummary(w io.Writer, s ingestSummary) {
	tw := newTable(w)
	fmt.Fprintf(tw, "manifest\t%s\n", s.Manifest)
	fmt.Fprintf(tw, "products\t%d\n", s.Total)
	fmt.Fprintf(tw, "created\t%d\n", s.Created)
	fmt.Fprintf(tw, "updated\t%d\n", s.Updated)
	fmt.Fprintf(tw, "unchanged\t%d (+%d skipped before sending: same photos and metadata already stored)\n", s.Unchanged, s.Skipped)
	fmt.Fprintf(tw, "failed\t%d\n", s.Failed)
	if s.NotAttempted > 0 {
		fmt.Fprintf(tw, "not attempted\t%d\n", s.NotAttempted)
	}
	fmt.Fprintf(tw, "elapsed\t%s (%.1f products/s)\n", formatDuration(time.Duration(s.ElapsedSeconds*float64(time.Second))), s.PerSecond)
	tw.Flush()
	if len(s.Duplicates) > 0 {
		fmt.Fprintf(w, "\n%d photos copy another product's photo:\n", len(s.Duplicates))
		for i, d := range s.Duplicates {
			if i == 10 {
				fmt.Fprintf(w, "  ... and %d more (--json lists them all)\n", len(s.Duplicates)-10)
				break
			}
			crop := ""
			if d.CropHamming >= 0 {
				crop = cropText(d.CropHamming, d.CropCorrelation)
			}
			fmt.Fprintf(w, "  line %d %s photo %s: %s of %s photo %s (cosine %.4f, hash distance %d%s)\n",
				d.Line, clean(d.ID, 40), clean(d.Photo, 40), d.Tier, clean(d.Matches, 40), clean(d.MatchedPhoto, 40), d.Cosine, d.Hamming, crop)
		}
	}
	if len(s.Failures) == 0 {
		return
	}
	fmt.Fprintln(w, "\nfailures:")
	for i, f := range s.Failures {
		if i == 10 {
			fmt.Fprintf(w, "  ... and %d more\n", len(s.Failures)-10)
			break
		}
		fmt.Fprintf(w, "  line %d %s (%s): %s\n", f.Line, clean(f.ID, 40), f.Stage, f.Reason)
	}
	if s.FailuresFile != "" {
		fmt.Fprintf(w, "all failures with reasons: %s\n", s.FailuresFile)
	}
}
