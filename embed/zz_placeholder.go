package embed

// TEMPORARY placeholder on the photos branch until main's Analyze lands; deleted before merge.

import (
	"context"
	"image"
)

type AnalyzeOptions struct{ Keep bool }

type Analysis struct {
	Vector []float32
	PHash  uint64
	Kept   []byte
}

func (e *Embedder) Analyze(ctx context.Context, img []byte, opt AnalyzeOptions) (Analysis, error) {
	v, err := e.Embed(ctx, img)
	return Analysis{Vector: v}, err
}

func PHash(image.Image) uint64 { return 0 }

func Hamming(a, b uint64) int { return 0 }
