package main

import (
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

func TestReadManifest(t *testing.T) {
	tests := []struct {
		name        string
		path        string
		text        string
		want        []manifestRow
		wantRejects []string // "line:reason"
		wantErr     string
	}{
		{
			name: "csv with attributes",
			path: "m.csv",
			text: "id,image,category,title,colour,size\n" +
				"a1,img/a.jpg,Juice,Apple juice,green,1l\n" +
				"b2, img/b.jpg ,,,\"red, dark\",\n",
			want: []manifestRow{
				{Line: 2, ID: "a1", Image: "img/a.jpg", Category: "Juice", Title: "Apple juice", Attributes: map[string]string{"colour": "green", "size": "1l"}},
				{Line: 3, ID: "b2", Image: "img/b.jpg", Attributes: map[string]string{"colour": "red, dark"}},
			},
		},
		{
			name: "csv header case and BOM",
			path: "m.csv",
			text: "\ufeffID,Image\nx,https://example.com/x.jpg\n",
			want: []manifestRow{{Line: 2, ID: "x", Image: "https://example.com/x.jpg"}},
		},
		{
			name: "jsonl by extension with numbers, bools and nesting",
			path: "m.jsonl",
			text: `{"id":"p1","image":"a.png","title":"T","price":12.5,"in_stock":true,"tags":["x","y"]}` + "\n\n" +
				`{"id":"p2","image":"b.png","category":null}` + "\n",
			want: []manifestRow{
				{Line: 1, ID: "p1", Image: "a.png", Title: "T", Attributes: map[string]string{"price": "12.5", "in_stock": "true", "tags": `["x","y"]`}},
				{Line: 3, ID: "p2", Image: "b.png"},
			},
		},
		{
			name: "jsonl sniffed without extension",
			path: "manifest",
			text: `  {"id":"q","image":"q.jpg"}`,
			want: []manifestRow{{Line: 1, ID: "q", Image: "q.jpg"}},
		},
		{
			name: "bad rows are rejected, not fatal",
			path: "m.csv",
			text: "id,image,title\n,a.jpg,\nb,,\nc,c.jpg,C\nc,c2.jpg,other\n",
			want: []manifestRow{{Line: 4, ID: "c", Image: "c.jpg", Title: "C"}},
			wantRejects: []string{
				"2:missing id", "3:missing image",
				"5:repeated id with other metadata than on line 4 (give category, title and attributes once, or the same on every row)",
			},
		},
		{
			name: "repeated rows add photos, with photo ids",
			path: "m.csv",
			text: "id,image,photo_id,title,colour\nc,front.jpg,front,Coat,red\nc,back.jpg,back,,\nd,d.jpg,,D,\nc,side.jpg,,Coat,red\n",
			want: []manifestRow{
				{Line: 2, ID: "c", Image: "front.jpg", Title: "Coat", Attributes: map[string]string{"colour": "red"}, photoID: "front",
					Photos: []manifestPhoto{{Line: 2, Image: "front.jpg", ID: "front"}, {Line: 3, Image: "back.jpg", ID: "back"}, {Line: 5, Image: "side.jpg"}}},
				{Line: 4, ID: "d", Image: "d.jpg", Title: "D"},
			},
		},
		{
			name: "images column split on semicolons",
			path: "m.csv",
			text: "id,images\np,a.jpg; b.jpg;;c.jpg\n",
			want: []manifestRow{{Line: 2, ID: "p", Image: "a.jpg", Photos: []manifestPhoto{{Line: 2, Image: "a.jpg"}, {Line: 2, Image: "b.jpg"}, {Line: 2, Image: "c.jpg"}}}},
		},
		{
			name:        "photo_id with several images is refused",
			path:        "m.jsonl",
			text:        `{"id":"p","images":"a.jpg;b.jpg","photo_id":"x"}`,
			wantRejects: []string{"1:photo_id names one photo, but the row lists several images"},
		},
		{name: "empty file", path: "m.csv", text: "", wantErr: "empty file"},
		{name: "no image column", path: "m.csv", text: "id,picture\na,b\n", wantErr: `no "image" or "images" column`},
		{name: "duplicate column", path: "m.csv", text: "id,image,id\n", wantErr: `column "id" appears twice`},
		{name: "ragged csv", path: "m.csv", text: "id,image\na,b,c\n", wantErr: "wrong number of fields"},
		{name: "broken json", path: "m.jsonl", text: "{\"id\":\"a\",\n", wantErr: "line 1"},
		{name: "two values on a line", path: "m.jsonl", text: `{"id":"a","image":"b"} {}`, wantErr: "more than one JSON value"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rows, rejects, err := readManifest(strings.NewReader(tt.text), tt.path)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			// A row given with Image alone has that one photo.
			for i, w := range tt.want {
				if w.Photos == nil {
					tt.want[i].Photos = []manifestPhoto{{Line: w.Line, Image: w.Image}}
				}
			}
			if !reflect.DeepEqual(rows, tt.want) {
				t.Errorf("rows\n got %+v\nwant %+v", rows, tt.want)
			}
			var got []string
			for _, r := range rejects {
				got = append(got, strconv.Itoa(r.Line)+":"+r.Reason)
			}
			if !reflect.DeepEqual(got, tt.wantRejects) {
				t.Errorf("rejects %v, want %v", got, tt.wantRejects)
			}
		})
	}
}

func TestResolveImage(t *testing.T) {
	dir := filepath.FromSlash("/data/catalogue")
	tests := []struct{ image, want string }{
		{"img/a.jpg", filepath.Join(dir, "img", "a.jpg")},
		{"../b.jpg", filepath.FromSlash("/data/b.jpg")},
		{"/abs/c.jpg", "/abs/c.jpg"},
		{"https://cdn.example.com/d.jpg", "https://cdn.example.com/d.jpg"},
		{"HTTP://cdn.example.com/e.jpg", "HTTP://cdn.example.com/e.jpg"},
	}
	for _, tt := range tests {
		if got := resolveImage(dir, tt.image); got != tt.want {
			t.Errorf("resolveImage(%q) = %q, want %q", tt.image, got, tt.want)
		}
	}
}

// FuzzReadManifest checks the manifest reader never panics and that what it accepts is sane:
// every row has an id and an image, and ids are unique.
func FuzzReadManifest(f *testing.F) {
	f.Add("m.csv", "id,image,category,title,x\na,a.jpg,c,t,1\n")
	f.Add("m.csv", "id,image\n\"a\nb\",\"c\"\"d\"\n")
	f.Add("m.jsonl", `{"id":"a","image":"b","n":[1,{"k":2}]}`+"\n")
	f.Add("m", "\ufeff{\"id\":1,\"image\":true}")
	f.Add("m.csv", "ID,IMAGE,Image\n")
	f.Fuzz(func(t *testing.T, path, text string) {
		rows, _, err := readManifest(strings.NewReader(text), path)
		if err != nil {
			return
		}
		seen := map[string]bool{}
		for _, r := range rows {
			if r.ID == "" || r.Image == "" {
				t.Fatalf("accepted row without id or image: %+v", r)
			}
			if seen[r.ID] {
				t.Fatalf("accepted duplicate id %q", r.ID)
			}
			seen[r.ID] = true
		}
	})
}

// BenchmarkReadManifestCSV measures parsing a catalogue-sized CSV manifest with attributes.
func BenchmarkReadManifestCSV(b *testing.B) {
	var sb strings.Builder
	sb.WriteString("id,image,category,title,colour,size,brand\n")
	for i := range 10000 {
		sb.WriteString("sku-" + strconv.Itoa(i) + ",photos/" + strconv.Itoa(i) + ".jpg,Juice,Apple juice 1 l,green,1l,Bravo\n")
	}
	text := sb.String()
	b.SetBytes(int64(len(text)))
	b.ResetTimer()
	for b.Loop() {
		rows, _, err := readManifest(strings.NewReader(text), "m.csv")
		if err != nil || len(rows) != 10000 {
			b.Fatalf("%d rows, %v", len(rows), err)
		}
	}
}
