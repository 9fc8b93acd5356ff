package catalog

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"lookalike/store"
)

// Verdict is a reviewer's decision on products a duplicate scan paired.
type Verdict int

const (
	// Same: the products are one product; Decision.Keep names the one to keep.
	Same Verdict = iota + 1
	// Different: the products are different, however alike they look. They never join a
	// duplicate cluster again.
	Different
)

// String names the verdict as the API and the CLI spell it.
func (v Verdict) String() string {
	switch v {
	case Same:
		return "same"
	case Different:
		return "different"
	}
	return fmt.Sprintf("verdict(%d)", int(v))
}

// Decision is a recorded verdict on a pair of products.
type Decision struct {
	// A and B are the product ids, A < B.
	A, B string
	// Verdict is the decision; Keep the product to keep for Same ("" when not said).
	Verdict Verdict
	Keep    string
	// By and At say who decided and when; Note is their free text.
	By   string
	At   time.Time
	Note string
}

func decisionFromStore(d store.Decision) Decision {
	v := Same
	if d.Verdict == store.VerdictDifferent {
		v = Different
	}
	return Decision{A: d.A, B: d.B, Verdict: v, Keep: d.Keep, By: d.By, At: d.At, Note: d.Note}
}

// Resolution is a verdict on a pair or a whole cluster of products.
type Resolution struct {
	// IDs are two or more product ids.
	IDs []string
	// Verdict applies to every pair of IDs.
	Verdict Verdict
	// Keep, for Same, is the product to keep: one of IDs.
	Keep string
	// By says who decided, Note why.
	By, Note string
}

// MaxResolveIDs bounds one resolution (a cluster of n records n(n-1)/2 decisions).
const MaxResolveIDs = 100

// Resolve records a verdict on every pair of the resolution's products, durably, and returns
// the decisions recorded. Later duplicate scans honour them: a Different pair never joins a
// cluster again, and a cluster whose pairs are all decided Same is reported as resolved.
func (c *Catalog) Resolve(ctx context.Context, r Resolution) ([]Decision, error) {
	if err := c.enter(); err != nil {
		return nil, err
	}
	defer c.life.RUnlock()
	ids := slices.Clone(r.IDs)
	slices.Sort(ids)
	ids = slices.Compact(ids)
	switch {
	case len(ids) < 2:
		return nil, fmt.Errorf("%w: a resolution names at least two different products", ErrInvalidArgument)
	case len(ids) > MaxResolveIDs:
		return nil, fmt.Errorf("%w: %d products in one resolution, at most %d", ErrInvalidArgument, len(ids), MaxResolveIDs)
	case r.Verdict != Same && r.Verdict != Different:
		return nil, fmt.Errorf("%w: verdict must be same or different", ErrInvalidArgument)
	case r.Keep != "" && r.Verdict != Same:
		return nil, fmt.Errorf("%w: keep goes with verdict same", ErrInvalidArgument)
	case r.Keep != "" && !slices.Contains(ids, r.Keep):
		return nil, fmt.Errorf("%w: keep %q is not one of the products", ErrInvalidArgument, r.Keep)
	}
	for _, id := range ids {
		if _, ok := c.lookup(id); !ok {
			return nil, fmt.Errorf("%w: %q", ErrNotFound, id)
		}
	}
	verdict := store.VerdictSame
	if r.Verdict == Different {
		verdict = store.VerdictDifferent
	}
	var ds []store.Decision
	for i, a := range ids {
		for _, b := range ids[i+1:] {
			keep := ""
			if r.Keep == a || r.Keep == b {
				keep = r.Keep
			}
			ds = append(ds, store.Decision{A: a, B: b, Verdict: verdict, Keep: keep, By: r.By, Note: r.Note})
		}
	}
	stored, err := c.backend.PutDecisions(ctx, ds)
	if errors.Is(err, store.ErrInvalid) {
		return nil, fmt.Errorf("%w: %w", ErrInvalidArgument, err)
	}
	if err != nil {
		return nil, fmt.Errorf("catalog: record decisions: %w", err)
	}
	out := make([]Decision, len(stored))
	for i, d := range stored {
		out[i] = decisionFromStore(d)
	}
	return out, nil
}

// Decisions lists every recorded decision, ordered by pair.
func (c *Catalog) Decisions(ctx context.Context) ([]Decision, error) {
	if err := c.enter(); err != nil {
		return nil, err
	}
	defer c.life.RUnlock()
	return c.decisions(ctx)
}

func (c *Catalog) decisions(ctx context.Context) ([]Decision, error) {
	ds, err := c.backend.Decisions(ctx)
	if err != nil {
		return nil, fmt.Errorf("catalog: read decisions: %w", err)
	}
	out := make([]Decision, len(ds))
	for i, d := range ds {
		out[i] = decisionFromStore(d)
	}
	return out, nil
}

// Forget removes the decision on a pair of products.
func (c *Catalog) Forget(ctx context.Context, a, b string) error {
	if err := c.enter(); err != nil {
		return err
	}
	defer c.life.RUnlock()
	err := c.backend.DeleteDecision(ctx, a, b)
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("%w: no decision on %q and %q", ErrNotFound, a, b)
	}
	return err
}
