package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestManifestFromSharedGrocery(t *testing.T) {
	out := filepath.Join(t.TempDir(), "grocery.csv")
	code, stdout, stderr := runCLI(t, nil, "manifest", "--dataset", "grocery", "--split", "iconic,val", out)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if !strings.Contains(stdout, "wrote 131 products") {
		t.Errorf("stdout %q: want 31 iconic + 100 val products", stdout)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows, rejects, err := readManifest(f, out)
	if err != nil || len(rejects) != 0 {
		t.Fatalf("manifest does not read back: %v %v", err, rejects)
	}
	if len(rows) != 131 {
		t.Fatalf("%d rows", len(rows))
	}
	categories := map[string]bool{}
	for _, r := range rows {
		if _, err := os.Stat(resolveImage(filepath.Dir(out), r.Image)); err != nil {
			t.Fatalf("row %d: image does not resolve: %v", r.Line, err)
		}
		if r.Title == "" || r.Category == "" || r.Attributes["split"] == "" {
			t.Fatalf("row %d lacks title, category or split: %+v", r.Line, r)
		}
		if _, ok := r.Attributes["source_path"]; ok {
			t.Fatalf("bookkeeping column leaked into attributes: %+v", r)
		}
		categories[r.Category] = true
	}
	if len(categories) != 9 {
		t.Errorf("%d coarse categories, the grocery set has 9", len(categories))
	}
}
