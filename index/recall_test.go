package index

import (
	"testing"
	"time"
)

func TestHNSWRecallAgainstExact(t *testing.T) {
	mnist, mnistQ := fashionMNIST(t, 10000, 200)
	blobs, blobsQ := clustered(1, 20000, 200, 128, 200, true)
	cases := []struct {
		name    string
		metric  Metric
		base    [][]float32
		queries [][]float32
	}{
		{"clustered-20k-128d-ip", InnerProduct, blobs, blobsQ},
		{"fashion-mnist-10k-l2", L2, mnist, mnistQ},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Metric = tc.metric
			start := time.Now()
			h, e := buildBoth(t, tc.base, cfg)
			t.Logf("built %d vectors in %v", len(tc.base), time.Since(start))
			for _, k := range []int{10, 1} {
				got := searchAll(h, tc.queries, k, SearchOptions{})
				want := searchAll(e, tc.queries, k, SearchOptions{})
				r := RecallAtK(got, want, k)
				t.Logf("recall@%d = %.4f", k, r)
				if r < 0.95 {
					t.Errorf("recall@%d = %.4f, want >= 0.95", k, r)
				}
				for q := range got {
					if len(got[q]) != k {
						t.Fatalf("query %d returned %d results, want %d", q, len(got[q]), k)
					}
					for i := 1; i < len(got[q]); i++ {
						if got[q][i].Score > got[q][i-1].Score {
							t.Fatalf("query %d results not best first: %v", q, got[q])
						}
					}
				}
			}
		})
	}
}
