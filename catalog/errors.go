package catalog

import "errors"

// Errors a caller can tell apart with errors.Is; returned errors wrap them with detail.
// Errors from the embedder (embed.ErrCorrupt, embed.ErrOverloaded, ...) are wrapped and pass
// through unchanged in meaning.
var (
	// ErrInvalidArgument means the request itself is wrong: a missing id, k out of range, a
	// vector of the wrong dimension or with non-finite components, a threshold outside [-1, 1].
	ErrInvalidArgument = errors.New("catalog: invalid argument")
	// ErrNotFound means no product has the given id.
	ErrNotFound = errors.New("catalog: product not found")
	// ErrClosed means the catalogue is closed or closing.
	ErrClosed = errors.New("catalog: closed")
)
