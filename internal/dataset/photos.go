package dataset

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// The photo collections under ../shared/datasets, by folder name.
const (
	PhotosGrocery  = "grocery"
	PhotosClothing = "clothing"
	PhotosABO      = "abo"
)

// Photo is one row of a collection's labels.csv.
type Photo struct {
	// Path is the absolute path of the image file.
	Path string
	// Label is the row's label column: the product for grocery and abo, the garment class
	// for clothing.
	Label string
	// Fields holds every other column of the row by its header name (split, product_id, ...).
	Fields map[string]string
}

// projectRoot returns the nearest directory at or above dir that holds go.mod.
func projectRoot(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("dataset: resolve %q: %w", dir, err)
	}
	for d := abs; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("dataset: no go.mod at or above %s: run from inside the project", abs)
		}
	}
}

// photosDir returns the absolute path of ../shared/datasets beside the project root found
// above the working directory.
func photosDir() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("dataset: working directory: %w", err)
	}
	root, err := projectRoot(wd)
	if err != nil {
		return "", err
	}
	dir := filepath.Join(filepath.Dir(root), "shared", "datasets")
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return "", fmt.Errorf("dataset: the shared photos are not at %s (expected ../shared/datasets beside the project root)", dir)
	}
	return dir, nil
}

// LoadPhotos reads the labels.csv of one collection (PhotosGrocery, PhotosClothing,
// PhotosABO or any other folder with the same layout) under ../shared/datasets.
func LoadPhotos(collection string) ([]Photo, error) {
	dir, err := photosDir()
	if err != nil {
		return nil, err
	}
	return loadPhotosFrom(filepath.Join(dir, collection))
}

// loadPhotosFrom reads dir/labels.csv, whose first two columns are file (relative to dir)
// and label, and resolves every file to an absolute path.
func loadPhotosFrom(dir string) ([]Photo, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("dataset: resolve %q: %w", dir, err)
	}
	f, err := os.Open(filepath.Join(dir, "labels.csv"))
	if err != nil {
		return nil, fmt.Errorf("dataset: open photo labels: %w", err)
	}
	defer f.Close()
	return parsePhotoLabels(f, dir)
}

func parsePhotoLabels(r io.Reader, dir string) ([]Photo, error) {
	cr := csv.NewReader(r)
	header, err := cr.Read()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("dataset: %s/labels.csv is empty", dir)
		}
		return nil, fmt.Errorf("dataset: %s/labels.csv header: %w", dir, err)
	}
	if len(header) < 2 || header[0] != "file" || header[1] != "label" {
		return nil, fmt.Errorf("dataset: %s/labels.csv must start with columns file,label; got %v", dir, header)
	}
	var photos []Photo
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("dataset: %s/labels.csv: %w", dir, err)
		}
		if rec[0] == "" {
			line, _ := cr.FieldPos(0)
			return nil, fmt.Errorf("dataset: %s/labels.csv line %d: empty file column", dir, line)
		}
		p := Photo{
			Path:   filepath.Join(dir, filepath.FromSlash(rec[0])),
			Label:  rec[1],
			Fields: make(map[string]string, len(header)-2),
		}
		for i := 2; i < len(header); i++ {
			p.Fields[header[i]] = rec[i]
		}
		photos = append(photos, p)
	}
	if len(photos) == 0 {
		return nil, fmt.Errorf("dataset: %s/labels.csv has no rows", dir)
	}
	return photos, nil
}
