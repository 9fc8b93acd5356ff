// Package web is Lookalike's HTTP face: the HTTP/JSON API beside gRPC and the pages the
// binary serves (the storefront demo at /, the duplicate review at /duplicates, the status
// page at /status).
//
// The API is grpc-gateway over a connection to the server's own gRPC service (a
// server.Gateway), so every HTTP call passes the service's tap and interceptors: the same
// bearer token, limits, validation and status codes. The routes come from the HTTP rules in
// proto/lookalike/v1/lookalike_http.yaml, one per RPC, through the generated gateway and
// OpenAPI description (served at /v1/openapi.json); this package adds only what a JSON
// transcoder cannot do: photo uploads as multipart/form-data or raw image bytes, kept photos
// served as JPEG with an ETag, request bodies bounded and counted in the server's request
// budget before the service sees them, CORS, and the pages.
//
// The pages are plain HTML, CSS and JavaScript modules embedded with embed.FS (no build step,
// no CDN); they call the same JSON API as any client.
//
// It owns no catalogue logic and must never import catalog, store, embed, index or bbolt: it
// reaches the catalogue only through the lookalike.v1 API.
package web
