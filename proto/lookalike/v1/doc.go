// Package lookalikev1 is the generated Go code for the lookalike.v1 gRPC API
// (lookalike.proto): messages, the Lookalike client and the server interface.
//
// Only lookalike.proto is edited by hand; regenerate the rest with `make proto`, which pins
// protoc-gen-go and protoc-gen-go-grpc. This package must never import anything from the rest
// of the project: the CLI, the server and outside clients all depend on it.
package lookalikev1
