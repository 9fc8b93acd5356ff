package server

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"syscall"
	"testing"

	"google.golang.org/grpc/codes"

	"lookalike/catalog"
	"lookalike/embed"
	pb "lookalike/proto/lookalike/v1"
	"lookalike/store"
)

// TestCodeOfMapsEveryKnownError is the mapping table at the edge, with the errors wrapped
// the way catalog and store wrap them.
func TestCodeOfMapsEveryKnownError(t *testing.T) {
	diskFullWrite := &fs.PathError{Op: "write", Path: "/data/lookalike.db", Err: syscall.ENOSPC}
	tests := []struct {
		name string
		err  error
		want codes.Code
	}{
		{"canceled", fmt.Errorf("catalog: search: %w", context.Canceled), codes.Canceled},
		{"deadline", fmt.Errorf("catalog: search: %w", context.DeadlineExceeded), codes.DeadlineExceeded},
		{"catalogue invalid argument", fmt.Errorf("%w: k is 0", catalog.ErrInvalidArgument), codes.InvalidArgument},
		{"store invalid id, wrapped by the catalogue", fmt.Errorf("catalog: delete %q: %w", "a\tb", fmt.Errorf("%w: contains a control character", store.ErrInvalidID)), codes.InvalidArgument},
		{"store invalid argument", fmt.Errorf("catalog: upsert: %w", store.ErrInvalid), codes.InvalidArgument},
		{"unsupported photo", fmt.Errorf("catalog: %w", embed.ErrUnsupportedFormat), codes.InvalidArgument},
		{"corrupt photo", fmt.Errorf("catalog: %w", embed.ErrCorrupt), codes.InvalidArgument},
		{"photo too large", fmt.Errorf("catalog: %w", embed.ErrTooLarge), codes.InvalidArgument},
		{"not found", fmt.Errorf("%w: %q", catalog.ErrNotFound, "x"), codes.NotFound},
		{"embedder overloaded", fmt.Errorf("catalog: %w", embed.ErrOverloaded), codes.ResourceExhausted},
		{"disk full on write", fmt.Errorf("catalog: upsert: store: commit: %w", diskFullWrite), codes.ResourceExhausted},
		{"disk full, bare errno", fmt.Errorf("store: sync: %w", syscall.ENOSPC), codes.ResourceExhausted},
		{"quota full", fmt.Errorf("store: commit: %w", &fs.PathError{Op: "write", Path: "/d", Err: syscall.EDQUOT}), codes.ResourceExhausted},
		{"disk full inside bbolt's unwrapped resize error", fmt.Errorf("catalog: upsert: %w", fmt.Errorf("file resize error: %s", diskFullWrite)), codes.ResourceExhausted},
		{"catalogue closed", fmt.Errorf("catalog: get: %w", catalog.ErrClosed), codes.Unavailable},
		{"embedder closed", fmt.Errorf("catalog: %w", embed.ErrClosed), codes.Unavailable},
		{"another I/O error", fmt.Errorf("store: commit: %w", &fs.PathError{Op: "write", Path: "/d", Err: syscall.EIO}), codes.Internal},
		{"anything else", errors.New("boom"), codes.Internal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := codeOf(tt.err); got != tt.want {
				t.Fatalf("codeOf(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

// TestToStatusDiskFullSaysWhy: a full disk reaches the client with its reason, not the
// opaque internal-error message.
func TestToStatusDiskFullSaysWhy(t *testing.T) {
	err := toStatus(discardLogger(), "Upsert", fmt.Errorf("catalog: upsert: %w", &fs.PathError{Op: "write", Path: "/d", Err: syscall.ENOSPC}))
	if codeOfErr(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "no space left on device") {
		t.Fatalf("toStatus of a full disk: %v, want RESOURCE_EXHAUSTED saying no space is left", err)
	}
}

// TestServerDeleteInvalidIDIsInvalidArgument: ids the store refuses are the caller's
// mistake, on the real server.
func TestServerDeleteInvalidIDIsInvalidArgument(t *testing.T) {
	s := startServer(t, Config{DataDir: t.TempDir()})
	defer s.shutdown()
	for _, tt := range []struct{ name, id string }{
		{"tab", "sku\t1"},
		{"NUL", "sku\x001"},
		{"513 bytes", strings.Repeat("x", store.MaxIDBytes+1)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.client.Delete(context.Background(), &pb.DeleteRequest{Id: tt.id})
			if codeOfErr(err) != codes.InvalidArgument {
				t.Fatalf("Delete(%q): %v, want INVALID_ARGUMENT", tt.id, err)
			}
		})
	}
}
