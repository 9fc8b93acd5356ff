package main

import (
	"cmp"
	"context"
	"fmt"
	"sort"
	"time"

	lookalikev1 "lookalike/proto/lookalike/v1"
)

// statsJSON is `lookalike stats --json`.
type statsJSON struct {
	Count      uint64 `json:"count"`
	Photos     uint64 `json:"photos"`
	KeptPhotos uint64 `json:"kept_photos"`
	KeptBytes  uint64 `json:"kept_bytes"`
	// DuplicatePolicy is the policy dedup and check apply; Decisions counts recorded ones.
	DuplicatePolicy policyJSON        `json:"duplicate_policy"`
	Decisions       uint64            `json:"decisions"`
	CountByCategory map[string]uint64 `json:"count_by_category"`
	ModelIdentity   string            `json:"model_identity"`
	Dim             uint32            `json:"dim"`
	Index           indexJSON         `json:"index"`
	Backend         string            `json:"backend"`
	StoreSeq        uint64            `json:"store_seq"`
	SnapshotSeq     uint64            `json:"snapshot_seq"`
	SnapshotTime    string            `json:"snapshot_time,omitempty"`
	SnapshotAgeSecs float64           `json:"snapshot_age_seconds,omitempty"`
}

type indexJSON struct {
	Metric         string `json:"metric"`
	M              uint32 `json:"m"`
	EFConstruction uint32 `json:"ef_construction"`
	EFSearch       uint32 `json:"ef_search"`
	Size           uint64 `json:"size"`
	// CatchingUp counts the photos the graph does not hold yet after a restart (searches
	// score them exactly); omitted once it holds everything.
	CatchingUp uint64 `json:"catching_up,omitempty"`
}

func runStats(ctx context.Context, a *app, args []string) error {
	fs := newFlagSet(a, "stats", "[flags]",
		"Describe the catalogue: product counts per category, the model, the index and its last snapshot.")
	var cf clientFlags
	cf.register(fs, a)
	asJSON := fs.Bool("json", false, "print JSON instead of a table")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usagef("takes no arguments")
	}
	resp, err := callOnce(ctx, &cf, func(ctx context.Context, c lookalikev1.LookalikeClient) (*lookalikev1.StatsResponse, error) {
		return c.Stats(ctx, &lookalikev1.StatsRequest{})
	})
	if err != nil {
		return err
	}
	out := toStatsJSON(resp)
	if *asJSON {
		return writeJSON(a.stdout, out)
	}
	tw := newTable(a.stdout)
	fmt.Fprintf(tw, "products\t%d\n", out.Count)
	fmt.Fprintf(tw, "photos\t%d\n", out.Photos)
	kept := fmt.Sprintf("%d (%d bytes", out.KeptPhotos, out.KeptBytes)
	if out.KeptPhotos > 0 {
		kept += fmt.Sprintf(", %d per photo", out.KeptBytes/out.KeptPhotos)
	}
	fmt.Fprintf(tw, "kept photos\t%s)\n", kept)
	p := out.DuplicatePolicy
	fmt.Fprintf(tw, "duplicate policy\tlook-alike >= %.3f; copy: hamming <= %d & cosine >= %.3f, or cosine >= %.3f%s (%s)\n",
		p.LookAlike, p.CopyHamming, p.CopyCosine, p.CopyCosineAlone, cropRule(p.CropHamming, p.CropCosine, p.CropCorrelation), p.Source)
	fmt.Fprintf(tw, "duplicate decisions\t%d\n", out.Decisions)
	fmt.Fprintf(tw, "model\t%s\n", clean(out.ModelIdentity, 0))
	fmt.Fprintf(tw, "dim\t%d\n", out.Dim)
	fmt.Fprintf(tw, "index\t%s, M=%d, efConstruction=%d, efSearch=%d, %d vectors\n",
		clean(out.Index.Metric, 0), out.Index.M, out.Index.EFConstruction, out.Index.EFSearch, out.Index.Size)
	if out.Index.CatchingUp > 0 {
		fmt.Fprintf(tw, "catching up\t%d photos not in the graph yet (searched exactly meanwhile)\n", out.Index.CatchingUp)
	}
	backend := cmp.Or(out.Backend, "embedded") // servers before the field existed
	fmt.Fprintf(tw, "backend\t%s\n", clean(backend, 40))
	if backend == "embedded" {
		fmt.Fprintf(tw, "store seq\t%d\n", out.StoreSeq)
		if out.SnapshotTime != "" {
			fmt.Fprintf(tw, "snapshot\tseq %d, saved %s (%s ago)\n", out.SnapshotSeq, out.SnapshotTime,
				formatDuration(time.Duration(out.SnapshotAgeSecs*float64(time.Second))))
		} else {
			fmt.Fprintf(tw, "snapshot\tnone yet\n")
		}
	}
	cats := make([]string, 0, len(out.CountByCategory))
	for c := range out.CountByCategory {
		cats = append(cats, c)
	}
	sort.Slice(cats, func(i, j int) bool {
		ci, cj := out.CountByCategory[cats[i]], out.CountByCategory[cats[j]]
		if ci != cj {
			return ci > cj
		}
		return cats[i] < cats[j]
	})
	for _, c := range cats {
		name := c
		if name == "" {
			name = "(none)"
		}
		fmt.Fprintf(tw, "category %s\t%d\n", clean(name, 40), out.CountByCategory[c])
	}
	return tw.Flush()
}

func toStatsJSON(r *lookalikev1.StatsResponse) statsJSON {
	out := statsJSON{
		Count:      r.GetCount(),
		Photos:     r.GetPhotos(),
		KeptPhotos: r.GetKeptPhotos(),
		KeptBytes:  r.GetKeptBytes(),
		DuplicatePolicy: policyJSON{
			LookAlike: r.GetDuplicatePolicy().GetLookAlike(), CopyCosine: r.GetDuplicatePolicy().GetCopyCosine(),
			CopyHamming: r.GetDuplicatePolicy().GetCopyHamming(), CopyCosineAlone: r.GetDuplicatePolicy().GetCopyCosineAlone(),
			CropHamming: r.GetDuplicatePolicy().GetCropHamming(), CropCosine: r.GetDuplicatePolicy().GetCropCosine(),
			CropCorrelation: r.GetDuplicatePolicy().GetCropCorrelation(),
			Source:          r.GetDuplicatePolicy().GetSource(),
		},
		Decisions:       r.GetDecisions(),
		CountByCategory: r.GetCountByCategory(),
		ModelIdentity:   r.GetModelIdentity(),
		Dim:             r.GetDim(),
		Index: indexJSON{
			Metric:         r.GetIndex().GetMetric(),
			M:              r.GetIndex().GetM(),
			EFConstruction: r.GetIndex().GetEfConstruction(),
			EFSearch:       r.GetIndex().GetEfSearch(),
			Size:           r.GetIndex().GetSize(),
			CatchingUp:     r.GetIndex().GetCatchingUp(),
		},
		Backend:     r.GetBackend(),
		StoreSeq:    r.GetStoreSeq(),
		SnapshotSeq: r.GetSnapshotSeq(),
	}
	if out.CountByCategory == nil {
		out.CountByCategory = map[string]uint64{}
	}
	if r.GetSnapshotTime() != nil {
		out.SnapshotTime = r.GetSnapshotTime().AsTime().UTC().Format(time.RFC3339)
	}
	if r.GetSnapshotAge() != nil {
		out.SnapshotAgeSecs = r.GetSnapshotAge().AsDuration().Seconds()
	}
	return out
}

// policyJSON is the duplicate policy in `stats --json`.
type policyJSON struct {
	LookAlike       float32 `json:"look_alike"`
	CopyCosine      float32 `json:"copy_cosine"`
	CopyHamming     int32   `json:"copy_hamming"`
	CopyCosineAlone float32 `json:"copy_cosine_alone"`
	// CropHamming 0: no crop rule.
	CropHamming     int32   `json:"crop_hamming"`
	CropCosine      float32 `json:"crop_cosine"`
	CropCorrelation float32 `json:"crop_correlation"`
	Source          string  `json:"source"`
}

// cropRule describes a policy's crop rule as the tail of its copy rules ("" when off).
func cropRule(hamming int32, cosine, correlation float32) string {
	if hamming <= 0 {
		return ""
	}
	return fmt.Sprintf(", or crop distance <= %d & cosine >= %.3f & crop correlation >= %.3f", hamming, cosine, correlation)
}

// cropText describes a pair's crop signals after its hash distance.
func cropText(hamming int32, correlation float32) string {
	if correlation == 0 {
		return fmt.Sprintf(", crop distance %d", hamming)
	}
	return fmt.Sprintf(", crop distance %d, crop correlation %.4f", hamming, correlation)
}
