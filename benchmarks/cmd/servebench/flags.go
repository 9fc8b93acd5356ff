package main

import (
	"flag"
	"fmt"
	"strings"
	"time"
)

func flagSet(cfg *config) *flag.FlagSet {
	fs := flag.NewFlagSet("servebench", flag.ContinueOnError)
	fs.IntVar(&cfg.items, "items", 100000, "catalogue size")
	fs.StringVar(&cfg.source, "source", "real", "catalogue vectors: real (the 70,000 Fashion-MNIST embeddings, then mixes of two of them) "+
		"or photos (the shared photos' embeddings, each reused under many ids with -noise added)")
	fs.StringVar(&cfg.cacheDir, "cache", "benchmarks/results/cache", "-source real: where the Fashion-MNIST embeddings are cached (git-ignored)")
	fs.Float64Var(&cfg.mixNoise, "mix-noise", 0.05, "-source real: norm of the Gaussian noise added to each mixed vector")
	fs.Float64Var(&cfg.noise, "noise", 0.01, "-source photos: Gaussian noise per component added to each reused photo embedding")
	fs.DurationVar(&cfg.duration, "duration", 5*time.Second, "time per SearchById load level and round")
	fs.DurationVar(&cfg.imageDuration, "image-duration", 5*time.Second, "time per SearchByImage load level and round")
	fs.IntVar(&cfg.rounds, "rounds", 1, "interleaved rounds of every (rpc, clients, variant) level; a level's latencies pool its rounds")
	fs.IntVar(&cfg.recallQueries, "recall-queries", 500, "queries for the recall comparison (0: none)")
	fs.BoolVar(&cfg.localIndex, "local-index", false, "also build a float32 index.HNSW in the benchmark with the server's parameters "+
		"and report its recall beside the served one (a minute or two at 100,000 items)")
	fs.StringVar(&cfg.bin, "bin", "bin/lookalike", "the lookalike binary (make build)")
	fs.StringVar(&cfg.serveArgs, "serve-args", "serve --listen {addr} --data {data} --snapshot-interval -1s", "serve command line; {addr} and {data} are filled in")
	fs.StringVar(&cfg.photoVectors, "photo-vectors", "", "photo embeddings .fvecs from embedbench (default <out>/tmp/photo-embeddings.fvecs)")
	fs.StringVar(&cfg.outDir, "out", "benchmarks/results", "results folder")
	fs.StringVar(&cfg.work, "work", "", "scratch folder for the servers' data (default <out>/tmp/serve)")
	fs.Int64Var(&cfg.seed, "seed", 1, "seed for the catalogue's made vectors and the query choice")
	fs.Int64Var(&cfg.indexSeed, "index-seed", 0, "index.Config.Seed of the local comparison index; 0 is what the server's catalogue uses, so the two graphs are the same")
	fs.DurationVar(&cfg.startupTimeout, "startup-timeout", 2*time.Minute, "how long to wait for a server to answer")
	fs.BoolVar(&cfg.restart, "restart", true, "restart each server after its ingest (it saves and reloads its graph snapshot) and measure its memory again")
	fs.BoolVar(&cfg.keepData, "keep-data", false, "leave each variant's data folder (<work>/data-<name>) for the serving profile benchmark")
	fs.Func("variant", "a server to measure, NAME|EXTRA SERVE FLAGS[|BINARY]; repeat for several (default: float32| and int8|--quantize int8)",
		func(s string) error {
			v, err := parseVariant(s)
			if err == nil {
				cfg.variants = append(cfg.variants, v)
			}
			return err
		})
	return fs
}

var defaultVariants = []variant{{name: "float32"}, {name: "int8", args: []string{"--quantize", "int8"}}}

// parseVariant reads NAME|EXTRA SERVE FLAGS[|BINARY].
func parseVariant(s string) (variant, error) {
	parts := strings.Split(s, "|")
	if len(parts) < 2 || len(parts) > 3 || strings.TrimSpace(parts[0]) == "" {
		return variant{}, fmt.Errorf("servebench: -variant %q: want NAME|EXTRA SERVE FLAGS[|BINARY]", s)
	}
	name := strings.TrimSpace(parts[0])
	if strings.ContainsAny(name, "/ \t") {
		return variant{}, fmt.Errorf("servebench: -variant name %q: no slashes or spaces", name)
	}
	v := variant{name: name, args: strings.Fields(parts[1])}
	if len(parts) == 3 {
		v.bin = strings.TrimSpace(parts[2])
	}
	return v, nil
}
