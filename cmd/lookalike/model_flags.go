package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"

	"lookalike/embed"
)

// modelFlags choose the embedding model and runtime; serve, embed and model share them, each
// falling back to the environment variable embed itself honours.
type modelFlags struct {
	model   string
	spec    string
	runtime string
	threads int
}

func (m *modelFlags) register(fs *flag.FlagSet, a *app) {
	fs.StringVar(&m.model, "model", a.getenv(embed.EnvModel), "ONNX embedding model (env "+embed.EnvModel+"; default ../shared/models/"+embed.DefaultModelFile+" above the project root)")
	fs.StringVar(&m.spec, "spec", a.getenv("LOOKALIKE_SPEC"), "model spec JSON: tensor names, size, normalisation (env LOOKALIKE_SPEC; default <model>.json beside the model, built in for the shared MobileNetV2)")
	fs.StringVar(&m.runtime, "ort-lib", a.getenv(embed.EnvRuntime), "ONNX Runtime shared library (env "+embed.EnvRuntime+"; default .lookalike/onnxruntime/libonnxruntime.so.1 from 'make setup')")
	fs.IntVar(&m.threads, "threads", envInt(a, "LOOKALIKE_THREADS", 0), "inference threads per model session (env LOOKALIKE_THREADS; 0: one thread per session, one session per CPU; N: N threads per session, NumCPU/N sessions)")
}

// config resolves the defaults now so errors name the file that is missing.
func (m *modelFlags) config(logger *slog.Logger) (embed.Config, error) {
	cfg := embed.Config{ModelPath: m.model, SpecPath: m.spec, RuntimePath: m.runtime, Threads: m.threads, Logger: logger}
	if cfg.ModelPath == "" {
		p, err := embed.FindModel()
		if err != nil {
			return cfg, fmt.Errorf("%w (or pass --model)", err)
		}
		cfg.ModelPath = p
	}
	if cfg.RuntimePath == "" {
		p, err := embed.FindRuntime()
		if err != nil {
			return cfg, fmt.Errorf("%w (or pass --ort-lib)", err)
		}
		cfg.RuntimePath = p
	}
	return cfg, nil
}

// open loads the model, returning the resolved config alongside it for commands that report it.
func (m *modelFlags) open(ctx context.Context, logger *slog.Logger) (*embed.Embedder, embed.Config, error) {
	cfg, err := m.config(logger)
	if err != nil {
		return nil, cfg, err
	}
	e, err := embed.Open(ctx, cfg)
	if err != nil {
		return nil, cfg, fmt.Errorf("load model %s: %w", cfg.ModelPath, err)
	}
	return e, cfg, nil
}
