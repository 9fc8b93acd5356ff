package main

import (
	"google.golang.org/protobuf/types/known/timestamppb"

	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	lookalikev1 "lookalike/proto/lookalike/v1"
)

// The JSON shapes below are the CLI's contract with scripts (documented in README.md). They are
// plain structs rather than protojson so field names and types stay put if the proto grows.

// productJSON is a stored product.
type productJSON struct {
	ID          string            `json:"id"`
	Category    string            `json:"category"`
	Title       string            `json:"title"`
	Attributes  map[string]string `json:"attributes"`
	ImageURL    string            `json:"image_url"`
	ImageSHA256 string            `json:"image_sha256"`
	Created     string            `json:"created,omitempty"`
	Updated     string            `json:"updated,omitempty"`
	Vector      []float32         `json:"vector,omitempty"`
	Photos      []photoJSON       `json:"photos"`
}

// photoJSON is one photo of a product.
type photoJSON struct {
	ID          string    `json:"id"`
	ImageURL    string    `json:"image_url"`
	ImageSHA256 string    `json:"image_sha256"`
	PHash       string    `json:"phash,omitempty"`
	Kept        bool      `json:"kept"`
	KeptBytes   uint32    `json:"kept_bytes,omitempty"`
	Created     string    `json:"created,omitempty"`
	Updated     string    `json:"updated,omitempty"`
	Vector      []float32 `json:"vector,omitempty"`
}

// resultJSON is one ranked search result.
type resultJSON struct {
	Rank    int         `json:"rank"`
	Score   float32     `json:"score"`
	PhotoID string      `json:"photo_id"`
	Product productJSON `json:"product"`
}

func toProductJSON(p *lookalikev1.Product) productJSON {
	if p == nil {
		return productJSON{Attributes: map[string]string{}}
	}
	out := productJSON{
		ID:          p.GetId(),
		Category:    p.GetCategory(),
		Title:       p.GetTitle(),
		Attributes:  p.GetAttributes(),
		ImageURL:    p.GetImageUrl(),
		ImageSHA256: p.GetImageSha256(),
		Vector:      p.GetVector(),
	}
	if out.Attributes == nil {
		out.Attributes = map[string]string{}
	}
	out.Created, out.Updated = timeText(p.GetCreated()), timeText(p.GetUpdated())
	out.Photos = make([]photoJSON, 0, len(p.GetPhotos()))
	for _, ph := range p.GetPhotos() {
		out.Photos = append(out.Photos, photoJSON{
			ID: ph.GetId(), ImageURL: ph.GetImageUrl(), ImageSHA256: ph.GetImageSha256(), PHash: ph.GetPhash(),
			Kept: ph.GetKept(), KeptBytes: ph.GetKeptBytes(), Created: timeText(ph.GetCreated()),
			Updated: timeText(ph.GetUpdated()), Vector: ph.GetVector(),
		})
	}
	return out
}

// timeText is a timestamp as RFC 3339 in UTC, "" when unset.
func timeText(t *timestamppb.Timestamp) string {
	if t == nil {
		return ""
	}
	return t.AsTime().UTC().Format(time.RFC3339Nano)
}

func toResultsJSON(results []*lookalikev1.SearchResult) []resultJSON {
	out := make([]resultJSON, 0, len(results))
	for i, r := range results {
		out = append(out, resultJSON{Rank: i + 1, Score: r.GetScore(), PhotoID: r.GetPhotoId(), Product: toProductJSON(r.GetProduct())})
	}
	return out
}

// writeFileAtomically writes path through write into path+".tmp" and renames it into place, so
// a reader (a script polling for --addr-file, a person opening a report) sees the whole file or
// nothing; on any failure the temporary file is removed.
func writeFileAtomically(path string, write func(io.Writer) error) error {
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	err = write(f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("write JSON: %w", err)
	}
	return nil
}

// newTable aligns columns for people; cells must not contain tabs (clean removes them).
func newTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
}

// clean makes a value safe for one table cell and keeps long titles from wrecking the layout.
func clean(s string, max int) string {
	s = strings.Join(strings.Fields(s), " ")
	if max > 0 && len([]rune(s)) > max {
		r := []rune(s)
		s = string(r[:max-1]) + "…"
	}
	if s == "" {
		return "-"
	}
	return s
}

func printResultsTable(w io.Writer, results []*lookalikev1.SearchResult) error {
	if len(results) == 0 {
		_, err := fmt.Fprintln(w, "no results")
		return err
	}
	tw := newTable(w)
	fmt.Fprintln(tw, "RANK\tSCORE\tID\tPHOTO\tCATEGORY\tTITLE")
	for i, r := range results {
		p := r.GetProduct()
		fmt.Fprintf(tw, "%d\t%.4f\t%s\t%s\t%s\t%s\n", i+1, r.GetScore(), clean(p.GetId(), 0), clean(r.GetPhotoId(), 0), clean(p.GetCategory(), 20), clean(p.GetTitle(), 50))
	}
	return tw.Flush()
}

func printProduct(w io.Writer, p *lookalikev1.Product) error {
	tw := newTable(w)
	j := toProductJSON(p)
	fmt.Fprintf(tw, "id\t%s\n", j.ID)
	fmt.Fprintf(tw, "category\t%s\n", clean(j.Category, 0))
	fmt.Fprintf(tw, "title\t%s\n", clean(j.Title, 0))
	fmt.Fprintf(tw, "created\t%s\n", clean(j.Created, 0))
	fmt.Fprintf(tw, "updated\t%s\n", clean(j.Updated, 0))
	keys := make([]string, 0, len(j.Attributes))
	for k := range j.Attributes {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(tw, "attr %s\t%s\n", clean(k, 0), clean(j.Attributes[k], 0))
	}
	for i, ph := range j.Photos {
		kept := "not kept"
		if ph.Kept {
			kept = fmt.Sprintf("kept %d bytes", ph.KeptBytes)
		}
		fmt.Fprintf(tw, "photo %d\t%s  %s  sha256 %s  phash %s  %s\n", i+1, clean(ph.ID, 0), clean(ph.ImageURL, 0),
			clean(ph.ImageSHA256, 0), clean(ph.PHash, 0), kept)
		if len(ph.Vector) > 0 {
			fmt.Fprintf(tw, "  vector\t%d dims %s\n", len(ph.Vector), vectorPreview(ph.Vector, 6))
		}
	}
	return tw.Flush()
}

// vectorPreview shows the first few components, enough to eyeball that two vectors differ.
func vectorPreview(v []float32, n int) string {
	var b strings.Builder
	b.WriteString("[")
	for i, x := range v {
		if i == n {
			b.WriteString(" …")
			break
		}
		if i > 0 {
			b.WriteString(" ")
		}
		fmt.Fprintf(&b, "%.4f", x)
	}
	b.WriteString("]")
	return b.String()
}

// stringList collects a repeatable flag such as --category A --category B (or A,B).
type stringList []string

func (s *stringList) String() string { return strings.Join(*s, ",") }

func (s *stringList) Set(v string) error {
	for _, part := range strings.Split(v, ",") {
		if part = strings.TrimSpace(part); part != "" {
			*s = append(*s, part)
		}
	}
	return nil
}

// keyValues collects a repeatable --attr key=value flag.
type keyValues map[string]string

func (kv keyValues) String() string {
	parts := make([]string, 0, len(kv))
	for k, v := range kv {
		parts = append(parts, k+"="+v)
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

func (kv keyValues) Set(v string) error {
	k, val, ok := strings.Cut(v, "=")
	if !ok || strings.TrimSpace(k) == "" {
		return fmt.Errorf("want key=value, got %q", v)
	}
	kv[strings.TrimSpace(k)] = val
	return nil
}

// filterFlags are the result filters search, similar and dedup share.
type filterFlags struct {
	categories stringList
	attributes keyValues
	exclude    stringList
}

func (f *filterFlags) register(fs *flag.FlagSet) {
	fs.Var(&f.categories, "category", "only products in this category (repeat or comma-separate for any of several)")
	f.attributes = keyValues{}
	fs.Var(f.attributes, "attr", "only products with this attribute, key=value (repeatable)")
	fs.Var(&f.exclude, "exclude", "never return these product ids (repeatable)")
}

func (f *filterFlags) proto() *lookalikev1.Filter {
	if len(f.categories) == 0 && len(f.attributes) == 0 && len(f.exclude) == 0 {
		return nil
	}
	return &lookalikev1.Filter{Categories: f.categories, Attributes: f.attributes, ExcludeIds: f.exclude}
}

// rankFlags are the flags of the commands that return ranked products (search, similar).
type rankFlags struct {
	filter   filterFlags
	k        int
	minScore float64
	ef       int
	json     bool
	// Ranking options (SearchOptions in the catalogue).
	groupBy   string
	notLike   stringList
	diversity float64
	// Query expansion.
	expand      int
	expandAlpha float64
	// boosts as given, ATTR=VALUE:ADD, and parsed.
	boostFlags stringList
	boosts     []*lookalikev1.Boost
}

func (r *rankFlags) register(fs *flag.FlagSet) {
	r.filter.register(fs)
	fs.IntVar(&r.k, "k", 10, "how many results at most (1..1000)")
	fs.Float64Var(&r.minScore, "min-score", 0, "drop results scoring below this similarity")
	fs.IntVar(&r.ef, "ef", 0, "HNSW search breadth; 0 is the server's default (larger: slower, more exact)")
	fs.BoolVar(&r.json, "json", false, "print JSON instead of a table")
	fs.StringVar(&r.groupBy, "group-by", "", "at most one result per value of this attribute (e.g. family)")
	fs.Var(&r.notLike, "not-like", "a product id the shopper rejected; results more like it than like the query are dropped (repeatable)")
	fs.Float64Var(&r.diversity, "diversity", 0, "0..1: trade similarity for variety among the results (maximal marginal relevance)")
	fs.IntVar(&r.expand, "expand", 0, "query expansion: search again with the query plus its first N photos (0..50; 0: off)")
	fs.Float64Var(&r.expandAlpha, "expand-alpha", 0, "with --expand: weight each photo by its score to this power (0: equally)")
	fs.Var(&r.boostFlags, "boost", "ATTR=VALUE:ADD: add ADD (-1..1) to the score of products whose attribute ATTR is VALUE (repeatable), e.g. kind=pack:0.04")
}

// parse parses args with fs, checks the flags and returns the one argument, named what in
// the usage message (IMAGE, ID).
func (r *rankFlags) parse(fs *flag.FlagSet, args []string, what string) (string, error) {
	if err := parseFlags(fs, args); err != nil {
		return "", err
	}
	if fs.NArg() != 1 {
		return "", usagef("want exactly one %s, got %d arguments", what, fs.NArg())
	}
	if r.k < 1 || r.k > 1000 {
		return "", usagef("--k must be in 1..1000, got %d", r.k)
	}
	if r.diversity < 0 || r.diversity > 1 {
		return "", usagef("--diversity must be in 0..1, got %v", r.diversity)
	}
	for _, b := range r.boostFlags {
		sel, add, ok := strings.Cut(b, ":")
		attr, value, ok2 := strings.Cut(sel, "=")
		x, err := strconv.ParseFloat(add, 32)
		if !ok || !ok2 || attr == "" || err != nil || x < -1 || x > 1 {
			return "", usagef("--boost %q: want ATTR=VALUE:ADD with ADD in -1..1", b)
		}
		r.boosts = append(r.boosts, &lookalikev1.Boost{Attribute: attr, Value: value, Add: float32(x)})
	}
	return fs.Arg(0), nil
}
