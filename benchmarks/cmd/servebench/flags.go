package main

import (
	"flag"
	"time"
)

func flagSet(cfg *config) *flag.FlagSet {
	fs := flag.NewFlagSet("servebench", flag.ContinueOnError)
	fs.IntVar(&cfg.items, "items", 100000, "catalogue size")
	fs.Float64Var(&cfg.noise, "noise", 0.01, "Gaussian noise per component added to each reused photo embedding")
	fs.DurationVar(&cfg.duration, "duration", 5*time.Second, "time per SearchById load level")
	fs.DurationVar(&cfg.imageDuration, "image-duration", 5*time.Second, "time per SearchByImage load level")
	fs.IntVar(&cfg.recallQueries, "recall-queries", 500, "queries for the recall comparison")
	fs.StringVar(&cfg.bin, "bin", "bin/lookalike", "the lookalike binary (make build)")
	fs.StringVar(&cfg.serveArgs, "serve-args", "serve --listen {addr} --data {data} --snapshot-interval -1s", "serve command line; {addr} and {data} are filled in")
	fs.StringVar(&cfg.photoVectors, "photo-vectors", "", "photo embeddings .fvecs from embedbench (default <out>/tmp/photo-embeddings.fvecs)")
	fs.StringVar(&cfg.outDir, "out", "benchmarks/results", "results folder")
	fs.StringVar(&cfg.work, "work", "", "scratch folder for the server's data (default <out>/tmp/serve)")
	fs.Int64Var(&cfg.seed, "seed", 1, "seed for noise and query choice")
	fs.Int64Var(&cfg.indexSeed, "index-seed", 0, "index.Config.Seed of the local comparison index; 0 is what the server's catalogue uses, so the two graphs are the same")
	fs.DurationVar(&cfg.startupTimeout, "startup-timeout", 2*time.Minute, "how long to wait for the server to answer")
	return fs
}
