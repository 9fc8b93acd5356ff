// Package lookalikev1 is the generated Go code for the lookalike.v1 gRPC API
// (lookalike.proto): messages, the Lookalike client and the server interface, the HTTP/JSON
// gateway handlers (lookalike.pb.gw.go, grpc-gateway) and the OpenAPI description
// (lookalike.swagger.json, served through OpenAPI).
//
// Only lookalike.proto, lookalike_http.yaml (the HTTP route of each RPC) and
// lookalike_openapi.yaml (extra OpenAPI text) are edited by hand; regenerate the rest with
// `make proto`, which pins protoc-gen-go, protoc-gen-go-grpc, protoc-gen-grpc-gateway and
// protoc-gen-openapiv2. This package must never import anything from the rest of the project:
// the CLI, the server, the web front end and outside clients all depend on it.
package lookalikev1
