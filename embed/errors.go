package embed

import "errors"

// Errors a caller can tell apart with errors.Is. The returned errors wrap these with detail.
var (
	// ErrUnsupportedFormat means the bytes are not an image format this package decodes.
	ErrUnsupportedFormat = errors.New("embed: unsupported image format")
	// ErrCorrupt means the bytes claim a supported format but do not decode.
	ErrCorrupt = errors.New("embed: corrupt image data")
	// ErrTooLarge means the input exceeds Limits (bytes, or pixels declared in the header).
	ErrTooLarge = errors.New("embed: image too large")
	// ErrOverloaded means the request queue is full; retry later.
	ErrOverloaded = errors.New("embed: request queue full")
	// ErrClosed means the Embedder has been closed.
	ErrClosed = errors.New("embed: embedder closed")
	// ErrSpecMismatch means a model Spec disagrees with the model's real inputs or outputs.
	ErrSpecMismatch = errors.New("embed: model spec does not match the model")
)

// errTruncated is the detail under ErrCorrupt when encoded data stops early.
var errTruncated = errors.New("unexpected end of data")
