package dataset

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadPhotosSharedCollections(t *testing.T) {
	tests := []struct {
		collection string
		minRows    int
		field      string // a column besides file and label that every row has
	}{
		{PhotosGrocery, 900, "is_iconic"},
		{PhotosClothing, 1000, "split"},
		{PhotosABO, 10, "product_id"},
	}
	for _, tc := range tests {
		t.Run(tc.collection, func(t *testing.T) {
			photos, err := LoadPhotos(tc.collection)
			if err != nil {
				t.Fatalf("LoadPhotos(%q): %v", tc.collection, err)
			}
			if len(photos) < tc.minRows {
				t.Fatalf("got %d photos, want at least %d", len(photos), tc.minRows)
			}
			labels := map[string]bool{}
			for _, p := range photos {
				if !filepath.IsAbs(p.Path) {
					t.Fatalf("path %q is not absolute", p.Path)
				}
				if p.Label == "" {
					t.Fatalf("%s: empty label", p.Path)
				}
				if _, ok := p.Fields[tc.field]; !ok {
					t.Fatalf("%s: no %q column in %v", p.Path, tc.field, p.Fields)
				}
				labels[p.Label] = true
			}
			if len(labels) < 2 {
				t.Fatalf("only %d distinct labels", len(labels))
			}
			// Spot-check that paths resolve to real files (first and last row).
			for _, p := range []Photo{photos[0], photos[len(photos)-1]} {
				if _, err := os.Stat(p.Path); err != nil {
					t.Fatalf("listed photo missing: %v", err)
				}
			}
		})
	}
}

func TestParsePhotoLabels(t *testing.T) {
	tests := []struct {
		name    string
		csv     string
		wantErr string
		want    []Photo
	}{
		{
			name: "extra columns become fields",
			csv:  "file,label,split\nimages/a.jpg,hat,train\nimages/b.jpg,skirt,validation\n",
			want: []Photo{
				{Path: "/d/images/a.jpg", Label: "hat", Fields: map[string]string{"split": "train"}},
				{Path: "/d/images/b.jpg", Label: "skirt", Fields: map[string]string{"split": "validation"}},
			},
		},
		{name: "empty file", csv: "", wantErr: "empty"},
		{name: "wrong header", csv: "path,class\nx.jpg,a\n", wantErr: "file,label"},
		{name: "no rows", csv: "file,label\n", wantErr: "no rows"},
		{name: "ragged row", csv: "file,label,split\na.jpg,hat\n", wantErr: "wrong number of fields"},
		{name: "empty file column", csv: "file,label\n,hat\n", wantErr: "empty file column"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parsePhotoLabels(strings.NewReader(tc.csv), "/d")
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %d photos, want %d", len(got), len(tc.want))
			}
			for i := range got {
				g, w := got[i], tc.want[i]
				if g.Path != w.Path || g.Label != w.Label || len(g.Fields) != len(w.Fields) {
					t.Fatalf("row %d = %+v, want %+v", i, g, w)
				}
				for k, v := range w.Fields {
					if g.Fields[k] != v {
						t.Fatalf("row %d field %q = %q, want %q", i, k, g.Fields[k], v)
					}
				}
			}
		})
	}
}
