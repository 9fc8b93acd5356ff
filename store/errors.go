package store

import (
	"errors"
	"fmt"
)

// ErrInvalid is the parent of every validation error: errors.Is(err, ErrInvalid) tells a caller
// (the gRPC server maps it to INVALID_ARGUMENT) that the request, not the store, is at fault.
var ErrInvalid = errors.New("store: invalid argument")

// Validation errors. Each wraps ErrInvalid.
var (
	// ErrInvalidID: the product id is empty, longer than MaxIDBytes, not UTF-8 or has control characters.
	ErrInvalidID = fmt.Errorf("%w: product id", ErrInvalid)
	// ErrInvalidPhotoID: a photo id is empty, too long, not UTF-8, has control characters or
	// '/', or appears twice in one product.
	ErrInvalidPhotoID = fmt.Errorf("%w: photo id", ErrInvalid)
	// ErrInvalidVector: the vector has the wrong dimension or holds NaN or Inf.
	ErrInvalidVector = fmt.Errorf("%w: vector", ErrInvalid)
	// ErrInvalidMetadata: a metadata field is too long, not UTF-8, or the sha256 is malformed.
	ErrInvalidMetadata = fmt.Errorf("%w: metadata", ErrInvalid)
	// ErrInvalidOptions: Open was called with options that cannot create a store.
	ErrInvalidOptions = fmt.Errorf("%w: options", ErrInvalid)
)

var (
	// ErrNotFound: no product has that id, or no photo that key.
	ErrNotFound = errors.New("store: not found")
	// ErrModelMismatch: the file was written for another model identity or dimension.
	ErrModelMismatch = errors.New("store: model mismatch")
	// ErrSchemaVersion: the file was written with a schema version this code does not read.
	ErrSchemaVersion = errors.New("store: unsupported schema version")
	// ErrCorrupt: the file or one of its records fails validation.
	ErrCorrupt = errors.New("store: corrupt")
	// ErrChangesUnavailable: ChangesSince cannot list the changes after the requested sequence
	// number (the log was truncated past it, or the number is ahead of the store); the caller
	// must rebuild from ForEach instead.
	ErrChangesUnavailable = errors.New("store: changes unavailable")
	// ErrInUse: the file is locked by another open store.
	ErrInUse = errors.New("store: file in use")
	// ErrClosed: the store has been closed.
	ErrClosed = errors.New("store: closed")
	// ErrKeysExhausted: all 2^32-1 compact keys have been handed out.
	ErrKeysExhausted = errors.New("store: compact keys exhausted")
)
