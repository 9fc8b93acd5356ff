package main

import (
	"math"
	"slices"
	"strings"
	"testing"
)

func TestPerturbedCatalogue(t *testing.T) {
	photos := [][]float32{{1, 0, 0, 0}, {0, 0.6, 0.8, 0}}
	a := perturbedCatalogue(photos, 7, 0.01, 3)
	b := perturbedCatalogue(photos, 7, 0.01, 3)
	if len(a) != 7 {
		t.Fatalf("got %d vectors", len(a))
	}
	for i, v := range a {
		var ss, dot float64
		src := photos[i%len(photos)]
		for j := range v {
			ss += float64(v[j]) * float64(v[j])
			dot += float64(v[j]) * float64(src[j])
		}
		if math.Abs(ss-1) > 1e-5 {
			t.Errorf("vector %d has squared norm %v, want 1", i, ss)
		}
		if dot < 0.95 {
			t.Errorf("vector %d drifted from its photo: cosine %v", i, dot)
		}
		if !slices.Equal(v, b[i]) {
			t.Errorf("vector %d differs between runs with the same seed", i)
		}
	}
	if slices.Equal(a[0], a[2]) {
		t.Error("two ids of the same photo got identical vectors")
	}
}

func TestInts(t *testing.T) {
	tests := []struct {
		in      string
		want    []int
		wantErr bool
	}{
		{"1,4,16", []int{1, 4, 16}, false},
		{" 0 ", []int{0}, false},
		{"1,x", nil, true},
		{"-1", nil, true},
	}
	for _, tt := range tests {
		got, err := ints(tt.in)
		if (err != nil) != tt.wantErr || !slices.Equal(got, tt.want) {
			t.Errorf("ints(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestParseStatus(t *testing.T) {
	status := "Name:\tlookalike\nVmPeak:\t 2000000 kB\nVmHWM:\t  900000 kB\nVmRSS:\t  800000 kB\n" +
		"RssAnon:\t  600000 kB\nRssFile:\t  200000 kB\nRssShmem:\t       0 kB\nThreads:\t12\n"
	m, err := parseStatus(strings.NewReader(status))
	if err != nil {
		t.Fatal(err)
	}
	want := memory{rss: 800000 << 10, anon: 600000 << 10, file: 200000 << 10, peak: 900000 << 10}
	if m != want {
		t.Errorf("parseStatus = %+v, want %+v", m, want)
	}
	if _, err := parseStatus(strings.NewReader("VmRSS:\t1 kB\n")); err == nil {
		t.Error("a status without RssAnon, RssFile and VmHWM parsed")
	}
	if _, err := parseStatus(strings.NewReader("VmRSS:\t1 MB\nVmHWM:\t1 kB\nRssAnon:\t1 kB\nRssFile:\t1 kB\n")); err == nil {
		t.Error("a size in MB parsed")
	}
}

func TestParseVariant(t *testing.T) {
	v, err := parseVariant("int8|--quantize int8")
	if err != nil || v.name != "int8" || !slices.Equal(v.args, []string{"--quantize", "int8"}) || v.bin != "" {
		t.Errorf("parseVariant = %+v, %v", v, err)
	}
	v, err = parseVariant("patched||/tmp/lookalike")
	if err != nil || v.name != "patched" || len(v.args) != 0 || v.bin != "/tmp/lookalike" {
		t.Errorf("parseVariant = %+v, %v", v, err)
	}
	for _, bad := range []string{"", "float32", "|x", "a b|", "a|b|c|d"} {
		if _, err := parseVariant(bad); err == nil {
			t.Errorf("parseVariant(%q) accepted", bad)
		}
	}
}

func TestThousands(t *testing.T) {
	for in, want := range map[float64]string{0: "0", 999.4: "999", 1000: "1,000", 1234567.8: "1,234,568", -1500: "-1,500"} {
		if got := thousands(in); got != want {
			t.Errorf("thousands(%v) = %q, want %q", in, got, want)
		}
	}
}
