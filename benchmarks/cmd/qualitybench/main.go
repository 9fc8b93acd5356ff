// Command qualitybench runs `lookalike quality` on the shared labelled sets for several
// model specs (the raw embedding and pooled variants), each beside a projection that
// `lookalike adapt` learns from the same catalogue, in one run, and writes one table:
// benchmarks/results/quality.md.
//
// For every dataset and spec it runs `adapt --dataset D --spec S --out P` (adapt chooses the
// projection on its own validation split of the catalogue) and then
// `quality --dataset D --spec S --projection P` on the dataset's query split, which adapt
// never saw; for grocery also with --boost-shots (catalogue shots ranked a little higher).
// It calls the built binary, so the figures are the ones a user gets from the CLI.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"lookalike/benchmarks/internal/benchkit"
)

// spec is one configuration: a name and a spec file ("" for the model's built-in spec).
type spec struct{ name, path string }

// figures mirrors the CLI's figuresJSON.
type figures struct {
	Queries           int                `json:"queries"`
	RecallAt          map[string]float64 `json:"recall_at"`
	MAP10             float64            `json:"map_at_10"`
	P10               float64            `json:"precision_at_10"`
	CatalogueShotAt10 *float64           `json:"catalogue_shot_at_10"`
}

type gain struct {
	Figure string  `json:"figure"`
	Diff   float64 `json:"diff"`
	Low    float64 `json:"low"`
	High   float64 `json:"high"`
}

// report mirrors the parts of `quality --projection --json` the table shows.
type report struct {
	Dims           int               `json:"dims"`
	Meta           map[string]string `json:"meta"`
	Raw            figures           `json:"raw"`
	Projected      figures           `json:"projected"`
	MillisPerPhoto float64           `json:"ms_per_photo"`
	Transfer       *struct {
		Gain []gain `json:"gain"`
	} `json:"transfer"`
}

func main() {
	bin := flag.String("bin", "bin/lookalike", "the lookalike binary")
	specList := flag.String("specs", "raw=", "comma-separated NAME=SPECFILE (an empty file: the built-in spec)")
	datasets := flag.String("datasets", "grocery,clothing", "shared datasets to measure")
	boost := flag.Float64("boost-shots", 0.04, "also measure grocery with catalogue shots boosted by this much (0: not)")
	out := flag.String("out", "benchmarks/results/quality.md", "the results file")
	work := flag.String("work", "benchmarks/results/tmp/quality", "where the projections go")
	flag.Parse()
	var specs []spec
	for _, kv := range strings.Split(*specList, ",") {
		name, path, ok := strings.Cut(kv, "=")
		if !ok || name == "" {
			log.Fatalf("-specs: %q is not NAME=SPECFILE", kv)
		}
		specs = append(specs, spec{name, path})
	}
	if err := os.MkdirAll(*work, 0o755); err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	root, _ := os.Getwd()
	machine := benchkit.DescribeMachine(ctx, root)

	t := benchkit.Table{
		Title: "Query split of each shared set: raw vectors, then the projection adapt chose (and, for grocery, catalogue shots boosted)",
		Note: fmt.Sprintf("Each row: `lookalike adapt --dataset D --spec S --out P` (it chooses dims, shrink and, where the catalogue marks shots, their weight on its own split of the catalogue), "+
			"then `lookalike quality --dataset D --spec S --projection P` (the dataset's query split, never seen by adapt); "+
			"the boost row adds `--boost-shots %g`. ms/photo: embedding every catalogue and query photo with all cores busy, divided by their number. "+
			"transfer: the same training refitted on half the labels (seed 1), scored on the other half's queries, projected - raw with its 95%% interval.", *boost),
		Header: []string{"set", "spec", "ms/photo", "vectors", "R@1", "R@10", "mAP@10", "P@10", "catalogue shot@10", "transfer R@1", "transfer R@10"},
	}
	for _, d := range strings.Split(*datasets, ",") {
		for _, s := range specs {
			rep, err := measure(ctx, *bin, d, s, *work, 0)
			if err != nil {
				log.Printf("%s %s: %v", d, s.name, err)
				t.Add(d, s.name, "", "failed: "+oneLine(err.Error()), "", "", "", "", "", "", "")
				continue
			}
			t.Add(append([]any{d, s.name, fmt.Sprintf("%.1f", rep.MillisPerPhoto), "raw"}, cells(rep.Raw, nil)...)...)
			var tr []gain
			if rep.Transfer != nil {
				tr = rep.Transfer.Gain
			}
			t.Add(append([]any{d, s.name, "", projectedLabel(rep)}, cells(rep.Projected, tr)...)...)
			if d == "grocery" && *boost != 0 {
				b, err := measure(ctx, *bin, d, s, *work, *boost)
				if err != nil {
					log.Printf("%s %s boosted: %v", d, s.name, err)
					continue
				}
				t.Add(append([]any{d, s.name, "", fmt.Sprintf("projected, shots +%g", *boost)}, cells(b.Projected, nil)...)...)
			}
			fmt.Fprintf(os.Stderr, "%s %s done\n", d, s.name)
		}
	}
	var b strings.Builder
	b.WriteString("## Retrieval quality on the shared sets (`go run ./benchmarks/cmd/qualitybench`)\n\n")
	b.WriteString(machine.Markdown())
	b.WriteString("- specs: ")
	for i, s := range specs {
		if i > 0 {
			b.WriteString(", ")
		}
		p := s.path
		if p == "" {
			p = "built-in"
		}
		fmt.Fprintf(&b, "%s = %s", s.name, p)
	}
	b.WriteString("\n\n")
	b.WriteString(t.Markdown())
	fmt.Print(b.String())
	if err := os.WriteFile(*out, []byte(b.String()), 0o644); err != nil {
		log.Fatal(err)
	}
}

// measure runs adapt then quality for one dataset and spec.
func measure(ctx context.Context, bin, dataset string, s spec, work string, boost float64) (report, error) {
	var specArgs []string
	if s.path != "" {
		specArgs = []string{"--spec", s.path}
	}
	proj := filepath.Join(work, dataset+"-"+s.name+".proj")
	if boost == 0 {
		args := append([]string{"adapt", "--dataset", dataset, "--out", proj, "--json"}, specArgs...)
		if _, err := run(ctx, bin, args...); err != nil {
			return report{}, err
		}
	}
	args := append([]string{"quality", "--dataset", dataset, "--projection", proj, "--json"}, specArgs...)
	if boost != 0 {
		args = append(args, "--boost-shots", fmt.Sprint(boost), "--no-transfer")
	}
	stdout, err := run(ctx, bin, args...)
	if err != nil {
		return report{}, err
	}
	var r report
	if err := json.Unmarshal(stdout, &r); err != nil {
		return report{}, fmt.Errorf("quality --json: %w", err)
	}
	return r, nil
}

func run(ctx context.Context, bin string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		tail := stderr.String()
		if len(tail) > 400 {
			tail = tail[len(tail)-400:]
		}
		return nil, fmt.Errorf("%s %s: %w: %s", bin, strings.Join(args, " "), err, tail)
	}
	return stdout.Bytes(), nil
}

// cells formats one row's figures; transfer gains go in the last two columns.
func cells(f figures, transfer []gain) []any {
	shot := "-"
	if f.CatalogueShotAt10 != nil {
		shot = fmt.Sprintf("%.3f", *f.CatalogueShotAt10)
	}
	out := []any{fmt.Sprintf("%.3f", f.RecallAt["1"]), fmt.Sprintf("%.3f", f.RecallAt["10"]),
		fmt.Sprintf("%.3f", f.MAP10), fmt.Sprintf("%.3f", f.P10), shot}
	for _, name := range []string{"R@1", "R@10"} {
		cell := ""
		for _, g := range transfer {
			if g.Figure == name {
				cell = fmt.Sprintf("%+.3f [%+.2f, %+.2f]", g.Diff, g.Low, g.High)
			}
		}
		out = append(out, cell)
	}
	return out
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// projectedLabel names the configuration adapt chose: its dims and shrink, and the weight of
// a catalogue shot when the catalogue marks shots.
func projectedLabel(rep report) string {
	l := fmt.Sprintf("projected (%d dims, shrink %s", rep.Dims, rep.Meta["shrink"])
	if rep.Projected.CatalogueShotAt10 != nil {
		l += ", shot weight " + rep.Meta["shot_weight"]
	}
	return l + ")"
}
