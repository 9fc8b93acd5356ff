package store

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Verdict is what a reviewer decided about two products.
type Verdict byte

const (
	// VerdictSame: the two are the same product (a duplicate); Decision.Keep names the one
	// to keep.
	VerdictSame Verdict = 1
	// VerdictDifferent: the two are different products, however alike they look.
	VerdictDifferent Verdict = 2
)

// String names the verdict as the API and the CLI spell it.
func (v Verdict) String() string {
	switch v {
	case VerdictSame:
		return "same"
	case VerdictDifferent:
		return "different"
	}
	return fmt.Sprintf("verdict(%d)", byte(v))
}

// Limits on a decision's free text.
const (
	MaxDecisionByBytes   = 256
	MaxDecisionNoteBytes = 4096
)

// Decision is a reviewer's verdict on a pair of products, remembered so that later duplicate
// scans honour it. The pair is unordered; the store keeps A < B.
type Decision struct {
	// A and B are the product ids (A < B once stored).
	A, B string
	// Verdict is the decision.
	Verdict Verdict
	// Keep is the product to keep for VerdictSame (A, B or empty when not said).
	Keep string
	// By says who decided (from the request's metadata); At when (zero on input: now).
	By string
	At time.Time
	// Note is the reviewer's free text.
	Note string
}

func decisionKey(a, b string) []byte { return []byte(a + "\x00" + b) }

// Normalise orders the pair and checks the fields, as PutDecisions does before storing.
func (d Decision) Normalise() (Decision, error) {
	if d.B < d.A {
		d.A, d.B = d.B, d.A
	}
	for _, id := range []string{d.A, d.B} {
		if err := ValidateID(id); err != nil {
			return d, err
		}
	}
	switch {
	case d.A == d.B:
		return d, fmt.Errorf("%w: a decision needs two different products, got %q twice", ErrInvalidMetadata, d.A)
	case d.Verdict != VerdictSame && d.Verdict != VerdictDifferent:
		return d, fmt.Errorf("%w: unknown verdict %d", ErrInvalidMetadata, d.Verdict)
	case d.Keep != "" && (d.Verdict != VerdictSame || (d.Keep != d.A && d.Keep != d.B)):
		return d, fmt.Errorf("%w: keep %q must be one of the pair, and only for verdict same", ErrInvalidMetadata, d.Keep)
	}
	if err := validateText("decided by", d.By, MaxDecisionByBytes); err != nil {
		return d, err
	}
	if err := validateText("note", d.Note, MaxDecisionNoteBytes); err != nil {
		return d, err
	}
	if err := validateTimes(d.At); err != nil {
		return d, err
	}
	return d, nil
}

// encodeDecision: byte format (1), byte verdict, strings keep, by, note, varint at, CRC-32C.
func encodeDecision(d Decision) []byte {
	b := []byte{1, byte(d.Verdict)}
	b = appendString(b, d.Keep)
	b = appendString(b, d.By)
	b = appendString(b, d.Note)
	b = binary.AppendVarint(b, d.At.UnixNano())
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

func decodeDecision(key, data []byte) (Decision, error) {
	a, b, ok := strings.Cut(string(key), "\x00")
	if !ok || len(data) < 5 {
		return Decision{}, fmt.Errorf("%w: decision record %q", ErrCorrupt, key)
	}
	body := data[:len(data)-4]
	if crc32.Checksum(body, castagnoli) != binary.BigEndian.Uint32(data[len(data)-4:]) {
		return Decision{}, fmt.Errorf("%w: decision %q: checksum mismatch", ErrCorrupt, key)
	}
	d := decoder{data: body}
	if f := d.byte(); d.err == nil && f != 1 {
		return Decision{}, fmt.Errorf("%w: decision %q has unknown format %d", ErrCorrupt, key, f)
	}
	out := Decision{A: a, B: b, Verdict: Verdict(d.byte())}
	out.Keep = d.string(MaxIDBytes)
	out.By = d.string(MaxDecisionByBytes)
	out.Note = d.string(MaxDecisionNoteBytes)
	out.At = time.Unix(0, d.varint()).UTC()
	if d.err == nil && len(d.data) != 0 {
		d.fail("trailing bytes")
	}
	if d.err != nil {
		return Decision{}, fmt.Errorf("%w: decision %q: %w", ErrCorrupt, key, d.err)
	}
	return out, nil
}

// PrepareDecisions normalises decisions as they are stored, a zero At becoming now (UTC):
// what PutDecisions stores, and what any other backend keeping decisions must store too.
func PrepareDecisions(ds []Decision, now time.Time) ([]Decision, error) {
	out := make([]Decision, len(ds))
	for i, d := range ds {
		n, err := d.Normalise()
		if err != nil {
			return nil, err
		}
		if n.At.IsZero() {
			n.At = now
		}
		n.At = n.At.UTC()
		out[i] = n
	}
	return out, nil
}

// PutDecisions records decisions (replacing any earlier one on the same pair) in one
// transaction, fsynced. They are not changes of the catalogue: Seq stays as it is.
func (s *Store) PutDecisions(ctx context.Context, ds []Decision) ([]Decision, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	out, err := PrepareDecisions(ds, time.Now())
	if err != nil {
		return nil, err
	}
	err = s.update(func(tx *bolt.Tx, _ *metaState) error {
		b := tx.Bucket(bucketDecisions)
		for _, d := range out {
			if err := b.Put(decisionKey(d.A, d.B), encodeDecision(d)); err != nil {
				return fmt.Errorf("store: put decision: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// DeleteDecision forgets the decision on a pair; ErrNotFound if there is none.
func (s *Store) DeleteDecision(ctx context.Context, a, b string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if b < a {
		a, b = b, a
	}
	return s.update(func(tx *bolt.Tx, _ *metaState) error {
		bk := tx.Bucket(bucketDecisions)
		k := decisionKey(a, b)
		if bk.Get(k) == nil {
			return fmt.Errorf("%w: no decision on %q and %q", ErrNotFound, a, b)
		}
		return bk.Delete(k)
	})
}

// Decisions returns every recorded decision, ordered by pair.
func (s *Store) Decisions() ([]Decision, error) {
	var out []Decision
	err := s.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketDecisions).ForEach(func(k, v []byte) error {
			d, err := decodeDecision(k, v)
			if err != nil {
				return err
			}
			out = append(out, d)
			return nil
		})
	})
	return out, err
}

// Setting returns a stored setting's value, or nil when unset.
func (s *Store) Setting(name string) ([]byte, error) {
	var out []byte
	err := s.view(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketSettings).Get([]byte(name)); v != nil {
			out = append([]byte(nil), v...)
		}
		return nil
	})
	return out, err
}

// SetSetting stores a setting (nil value: remove it), fsynced.
func (s *Store) SetSetting(ctx context.Context, name string, value []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.update(func(tx *bolt.Tx, _ *metaState) error {
		b := tx.Bucket(bucketSettings)
		if value == nil {
			return b.Delete([]byte(name))
		}
		return b.Put([]byte(name), value)
	})
}
