package server

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"syscall"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"lookalike/catalog"
	"lookalike/embed"
	"lookalike/store"
)

// toStatus maps an error from catalog or embed to the gRPC status a client sees. It is the
// only place where that decision is made.
//
// An image over the size limits (embed.ErrTooLarge) is INVALID_ARGUMENT, not
// RESOURCE_EXHAUSTED: the request itself is at fault and retrying it later cannot succeed,
// whereas RESOURCE_EXHAUSTED tells clients to back off and retry (as for embed.ErrOverloaded
// and the concurrency limit). A full disk is RESOURCE_EXHAUSTED too, with its reason: the
// write was refused whole and can succeed once space is freed, which INTERNAL would not say.
func toStatus(log *slog.Logger, method string, err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	code := codeOf(err)
	if code == codes.Internal {
		log.Error("internal error", "method", method, "err", err)
		return status.Error(codes.Internal, internalMessage)
	}
	if code == codes.ResourceExhausted && diskFull(err) {
		log.Error("disk full: write refused", "method", method, "err", err)
	}
	return status.Error(code, err.Error())
}

// internalMessage is all a client learns of an internal error or a panic; the details go to
// the server log.
const internalMessage = "internal error; see the server log"

// codeOf classifies an error that is not a gRPC status (toStatus passes those through);
// codes.Internal for anything unexpected.
func codeOf(err error) codes.Code {
	switch {
	case errors.Is(err, context.Canceled):
		return codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded
	case errors.Is(err, catalog.ErrInvalidArgument),
		// The store's own validation (an id with a control character, say) reaches here
		// through catalogue calls that pass it on wrapped rather than translated.
		errors.Is(err, store.ErrInvalid),
		errors.Is(err, embed.ErrUnsupportedFormat),
		errors.Is(err, embed.ErrCorrupt),
		errors.Is(err, embed.ErrTooLarge):
		return codes.InvalidArgument
	case errors.Is(err, catalog.ErrNotFound):
		return codes.NotFound
	case errors.Is(err, embed.ErrOverloaded), diskFull(err):
		return codes.ResourceExhausted
	case errors.Is(err, catalog.ErrClosed), errors.Is(err, embed.ErrClosed), errors.Is(err, catalog.ErrUnavailable):
		return codes.Unavailable
	case errors.Is(err, catalog.ErrUnsupported):
		return codes.Unimplemented
	}
	return codes.Internal
}

// diskFull tells a write refused for lack of space: ENOSPC (or EDQUOT, a full quota) anywhere
// in the chain, or in the text of an error bbolt formats with %s instead of wrapping (its
// "file resize error").
func diskFull(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) ||
		strings.Contains(err.Error(), syscall.ENOSPC.Error())
}
