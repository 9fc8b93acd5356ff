package catalog

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"lookalike/store"
)

// DeriveConfig says how Derive makes a catalogue in another vector space from a stored one.
type DeriveConfig struct {
	// From is the data directory to read; it is opened read-only, so no server may hold it.
	From string
	// To is the new data directory; it must not hold a store yet.
	To string
	// Target says, from the model identity From was made with, what the new catalogue's
	// vectors are; an error refuses that source.
	Target func(sourceIdentity string) (DeriveTarget, error)
	// Logger receives progress; nil discards it.
	Logger *slog.Logger
}

// DeriveTarget is the vector space of a derived catalogue.
type DeriveTarget struct {
	// ModelIdentity and Dim are the new catalogue's.
	ModelIdentity string
	Dim           int
	// Transform maps a stored vector to the new space (a projection, say).
	Transform func([]float32) ([]float32, error)
}

// DeriveReport says what Derive copied.
type DeriveReport struct {
	// Products, Photos and KeptPhotos count what the new catalogue holds.
	Products, Photos, KeptPhotos int
	// Decisions counts the duplicate decisions carried over.
	Decisions int
	// PolicyDropped says that From had a calibrated duplicate policy, which is not carried
	// over: its thresholds are similarities in From's space.
	PolicyDropped bool
}

// deriveBatch is how many products one write of the new store holds.
const deriveBatch = 64

// Derive writes a new catalogue whose every photo has the transformed vector of its stored
// one and everything else as stored: metadata, photo ids and hashes, kept photos, duplicate
// decisions. No photo is embedded again, so a catalogue of a model's raw vectors is the
// source from which catalogues under any projection fitted on them are made in seconds, and
// stays as it was: switching between them is pointing a server at the other directory. The
// new graph is built when the new catalogue is first opened.
//
// To must not exist or be empty; it appears only once complete.
func Derive(ctx context.Context, cfg DeriveConfig) (DeriveReport, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Target == nil {
		return DeriveReport{}, fmt.Errorf("%w: derive needs a target", ErrInvalidArgument)
	}
	if entries, err := os.ReadDir(cfg.To); err == nil && len(entries) > 0 {
		return DeriveReport{}, fmt.Errorf("%w: %s is not empty", ErrInvalidArgument, cfg.To)
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return DeriveReport{}, fmt.Errorf("catalog: derive: %w", err)
	}
	srcPath := filepath.Join(cfg.From, StoreFileName)
	if _, err := os.Stat(srcPath); err != nil {
		return DeriveReport{}, fmt.Errorf("catalog: derive: no catalogue in %s: %w", cfg.From, err)
	}
	src, err := store.Open(srcPath, store.Options{ReadOnly: true, Logger: log})
	if err != nil {
		return DeriveReport{}, fmt.Errorf("catalog: derive: open %s: %w", cfg.From, err)
	}
	defer src.Close()
	target, err := cfg.Target(src.ModelIdentity())
	if err != nil {
		return DeriveReport{}, err
	}
	if target.Transform == nil || target.ModelIdentity == "" || target.Dim <= 0 {
		return DeriveReport{}, fmt.Errorf("%w: derive needs a transform, a model identity and a dimension", ErrInvalidArgument)
	}
	// The new catalogue is written beside To and renamed into place when complete, so a
	// failed or interrupted derive leaves no half catalogue where a server could open it.
	parent := filepath.Dir(filepath.Clean(cfg.To))
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return DeriveReport{}, fmt.Errorf("catalog: derive: %w", err)
	}
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(cfg.To)+".derive-*")
	if err != nil {
		return DeriveReport{}, fmt.Errorf("catalog: derive: %w", err)
	}
	defer os.RemoveAll(tmp) // a no-op once renamed
	out, err := store.Open(filepath.Join(tmp, StoreFileName), store.Options{ModelIdentity: target.ModelIdentity, Dim: target.Dim, Logger: log})
	if err != nil {
		return DeriveReport{}, fmt.Errorf("catalog: derive: create %s: %w", cfg.To, err)
	}
	rep, err := derive(ctx, src, out, target.Transform)
	if cerr := out.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("catalog: derive: close %s: %w", cfg.To, cerr)
	}
	if err == nil {
		if err = os.Chmod(tmp, 0o755); err == nil {
			err = os.Rename(tmp, cfg.To)
		}
		if err != nil {
			err = fmt.Errorf("catalog: derive: %w", err)
		}
	}
	if err == nil {
		log.Info("catalogue derived", "from", cfg.From, "to", cfg.To, "products", rep.Products, "photos", rep.Photos)
	}
	return rep, err
}

func derive(ctx context.Context, src, out *store.Store, transform func([]float32) ([]float32, error)) (DeriveReport, error) {
	var rep DeriveReport
	// ForEach may not call the store, so the ids come first and each product is read again.
	var ids []string
	if err := src.ForEach(func(p store.Product) error { ids = append(ids, p.ID); return nil }); err != nil {
		return rep, fmt.Errorf("catalog: derive: list products: %w", err)
	}
	batch := make([]store.Product, 0, deriveBatch)
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		if _, err := out.UpsertBatch(ctx, batch); err != nil {
			return fmt.Errorf("catalog: derive: write: %w", err)
		}
		batch = batch[:0]
		return nil
	}
	for _, id := range ids {
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		p, err := src.GetWithVectors(id)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return rep, fmt.Errorf("catalog: derive: read %s: %w", id, err)
		}
		for i := range p.Photos {
			ph := &p.Photos[i]
			if ph.Vector, err = transform(ph.Vector); err != nil {
				return rep, fmt.Errorf("catalog: derive: product %s photo %s: %w", id, ph.ID, err)
			}
			if ph.KeptBytes > 0 {
				if ph.Kept, err = src.KeptPhoto(ph.Key); err != nil {
					return rep, fmt.Errorf("catalog: derive: kept photo of %s/%s: %w", id, ph.ID, err)
				}
				rep.KeptPhotos++
			}
			ph.Key = 0
			rep.Photos++
		}
		rep.Products++
		if batch = append(batch, p); len(batch) == deriveBatch {
			if err := flush(); err != nil {
				return rep, err
			}
		}
	}
	if err := flush(); err != nil {
		return rep, err
	}
	ds, err := src.Decisions()
	if err != nil {
		return rep, fmt.Errorf("catalog: derive: read decisions: %w", err)
	}
	if len(ds) > 0 {
		if _, err := out.PutDecisions(ctx, ds); err != nil {
			return rep, fmt.Errorf("catalog: derive: write decisions: %w", err)
		}
	}
	rep.Decisions = len(ds)
	policy, err := src.Setting(settingPolicy)
	if err != nil {
		return rep, fmt.Errorf("catalog: derive: read settings: %w", err)
	}
	rep.PolicyDropped = policy != nil
	return rep, nil
}
