package main

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"strings"
)

// manifestRow is one product of an ingest manifest.
type manifestRow struct {
	Line  int // 1-based line in the manifest, for error messages and the failures file
	ID    string
	Image string // as written: a path relative to the manifest, an absolute path, or an http(s) URL
	// Photos are the product's photos in manifest order, the first being Image: one per
	// repeated row of the id, or the ';'-separated entries of an images column.
	Photos     []manifestPhoto
	Category   string
	Title      string
	Attributes map[string]string

	photoID string // a photo_id column, applied by finish
}

// Manifest columns with a meaning of their own; every other column becomes an attribute.
const (
	columnID       = "id"
	columnImage    = "image"
	columnImages   = "images"
	columnPhotoID  = "photo_id"
	columnCategory = "category"
	columnTitle    = "title"
)

var errManifest = errors.New("invalid manifest")

// manifestFormat is how a manifest's rows are written.
type manifestFormat int

const (
	formatCSV manifestFormat = iota
	formatJSONL
)

// detectManifestFormat decides by extension, then by the first non-blank byte: a JSON Lines
// manifest starts with '{'.
func detectManifestFormat(path string, head []byte) manifestFormat {
	switch strings.ToLower(filepath.Ext(path)) {
	case ".jsonl", ".ndjson", ".json":
		return formatJSONL
	case ".csv":
		return formatCSV
	}
	if t := bytes.TrimLeft(head, " \t\r\n\ufeff"); len(t) > 0 && t[0] == '{' {
		return formatJSONL
	}
	return formatCSV
}

// readManifest parses a whole manifest. Row-level problems (a missing id or image, a duplicate
// id) are returned in rejects so the ingest can report them alongside other failures instead of
// giving up on the whole file; a malformed file is an error.
func readManifest(r io.Reader, path string) (rows []manifestRow, rejects []ingestFailure, err error) {
	br := bufio.NewReader(r)
	head, _ := br.Peek(512)
	switch detectManifestFormat(path, head) {
	case formatJSONL:
		rows, err = parseJSONLManifest(br)
	default:
		rows, err = parseCSVManifest(br)
	}
	if err != nil {
		return nil, nil, err
	}
	// Rows repeating an id add photos to the first row of that id.
	first := make(map[string]int, len(rows)) // id -> index in valid
	var valid []manifestRow
	for _, row := range rows {
		reject := func(reason string) {
			rejects = append(rejects, ingestFailure{Line: row.Line, ID: row.ID, Image: row.Image, Stage: "manifest", Reason: reason})
		}
		switch at, repeated := first[row.ID]; {
		case row.ID == "":
			reject("missing id")
		case len(row.Photos) == 0:
			reject("missing image")
		case row.photoID != "" && len(row.Photos) > 1:
			reject("photo_id names one photo, but the row lists several images")
		case repeated && !valid[at].sameMetadata(row):
			reject(fmt.Sprintf("repeated id with other metadata than on line %d (give category, title and attributes once, or the same on every row)", valid[at].Line))
		case repeated:
			valid[at].Photos = append(valid[at].Photos, row.Photos...)
		default:
			first[row.ID] = len(valid)
			valid = append(valid, row)
		}
	}
	return valid, rejects, nil
}

// manifestPhoto is one photo of a manifest row.
type manifestPhoto struct {
	// Line is the manifest line that named it.
	Line int
	// Image is as written in the manifest.
	Image string
	// ID is the photo id from a photo_id column; empty derives it from the bytes.
	ID string
}

// sameMetadata reports whether a repeated row agrees with the first row of its id: each of
// its metadata fields is empty or equal.
func (r manifestRow) sameMetadata(o manifestRow) bool {
	agree := func(a, b string) bool { return b == "" || a == b }
	if !agree(r.Category, o.Category) || !agree(r.Title, o.Title) {
		return false
	}
	for k, v := range o.Attributes {
		if r.Attributes[k] != v {
			return false
		}
	}
	return true
}

// photoList is the images of a row joined for messages and the failures file.
func (r manifestRow) photoList() string {
	images := make([]string, len(r.Photos))
	for i, ph := range r.Photos {
		images[i] = ph.Image
	}
	return strings.Join(images, ";")
}

func parseCSVManifest(r io.Reader) ([]manifestRow, error) {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = 0 // every record as wide as the header
	cr.TrimLeadingSpace = true
	header, err := cr.Read()
	if errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: empty file, expected a header line with id and image", errManifest)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errManifest, err)
	}
	for i := range header {
		header[i] = strings.ToLower(strings.TrimSpace(strings.TrimPrefix(header[i], "\ufeff")))
	}
	if err := checkHeader(header); err != nil {
		return nil, err
	}
	var rows []manifestRow
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			return rows, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %w", errManifest, err)
		}
		line, _ := cr.FieldPos(0)
		if len(rec) == 1 && strings.TrimSpace(rec[0]) == "" {
			continue
		}
		row := manifestRow{Line: line}
		for i, name := range header {
			row.set(name, strings.TrimSpace(rec[i]))
		}
		row.finish()
		rows = append(rows, row)
	}
}

func checkHeader(header []string) error {
	seen := map[string]bool{}
	for _, h := range header {
		if h == "" {
			return fmt.Errorf("%w: a header column has no name", errManifest)
		}
		if seen[h] {
			return fmt.Errorf("%w: column %q appears twice", errManifest, h)
		}
		seen[h] = true
	}
	if !seen[columnID] {
		return fmt.Errorf("%w: no %q column (header: %s)", errManifest, columnID, strings.Join(header, ","))
	}
	if !seen[columnImage] && !seen[columnImages] {
		return fmt.Errorf("%w: no %q or %q column (header: %s)", errManifest, columnImage, columnImages, strings.Join(header, ","))
	}
	return nil
}

func parseJSONLManifest(r io.Reader) ([]manifestRow, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 16*1024*1024)
	var rows []manifestRow
	for line := 1; sc.Scan(); line++ {
		text := bytes.TrimSpace(sc.Bytes())
		if line == 1 {
			text = bytes.TrimPrefix(text, []byte("\ufeff"))
		}
		if len(text) == 0 {
			continue
		}
		var obj map[string]any
		dec := json.NewDecoder(bytes.NewReader(text))
		dec.UseNumber()
		if err := dec.Decode(&obj); err != nil {
			return nil, fmt.Errorf("%w: line %d: %w", errManifest, line, err)
		}
		if dec.More() {
			return nil, fmt.Errorf("%w: line %d: more than one JSON value", errManifest, line)
		}
		row := manifestRow{Line: line}
		keys := make([]string, 0, len(obj))
		for k := range obj {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			v, err := jsonScalar(obj[k])
			if err != nil {
				return nil, fmt.Errorf("%w: line %d: field %q: %w", errManifest, line, k, err)
			}
			row.set(strings.ToLower(k), v)
		}
		row.finish()
		rows = append(rows, row)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: %w", errManifest, err)
	}
	return rows, nil
}

// jsonScalar flattens a JSON value to the string an attribute holds. Objects and arrays are
// kept as compact JSON rather than rejected: a catalogue export often has a nested field or two.
func jsonScalar(v any) (string, error) {
	switch x := v.(type) {
	case nil:
		return "", nil
	case string:
		return strings.TrimSpace(x), nil
	case json.Number:
		return x.String(), nil
	case bool:
		if x {
			return "true", nil
		}
		return "false", nil
	default:
		b, err := json.Marshal(x)
		if err != nil {
			return "", err
		}
		return string(b), nil
	}
}

func (r *manifestRow) set(column, value string) {
	switch column {
	case columnID:
		r.ID = value
	case columnImage:
		if value != "" {
			r.Photos = append(r.Photos, manifestPhoto{Line: r.Line, Image: value})
		}
	case columnImages:
		for _, image := range strings.Split(value, ";") {
			if image = strings.TrimSpace(image); image != "" {
				r.Photos = append(r.Photos, manifestPhoto{Line: r.Line, Image: image})
			}
		}
	case columnPhotoID:
		r.photoID = value
	case columnCategory:
		r.Category = value
	case columnTitle:
		r.Title = value
	default:
		if value == "" {
			return
		}
		if r.Attributes == nil {
			r.Attributes = map[string]string{}
		}
		r.Attributes[column] = value
	}
}

// finish applies a photo_id column to the row's one image and sets Image to the first photo.
func (r *manifestRow) finish() {
	if r.photoID != "" && len(r.Photos) == 1 {
		r.Photos[0].ID = r.photoID
	}
	if len(r.Photos) > 0 {
		r.Image = r.Photos[0].Image
	}
}

// isRemoteImage reports whether a manifest image is fetched over HTTP rather than read from disk.
func isRemoteImage(image string) bool {
	l := strings.ToLower(image)
	return strings.HasPrefix(l, "http://") || strings.HasPrefix(l, "https://")
}

// resolveImage turns a manifest image reference into an absolute path or a URL. Relative paths
// are relative to the manifest's directory, so a manifest and its images can move together.
func resolveImage(manifestDir, image string) string {
	if isRemoteImage(image) || filepath.IsAbs(image) {
		return image
	}
	return filepath.Join(manifestDir, filepath.FromSlash(image))
}
