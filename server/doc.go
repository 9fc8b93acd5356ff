// Package server is the gRPC face of Lookalike: it adapts catalog to the lookalike.v1 API and
// owns everything a serving process needs around it: status-code mapping (once, at the edge),
// the recovery, authentication, load-shedding and metrics interceptors, TLS, the health and
// reflection services, the Prometheus /metrics listener, and graceful shutdown.
//
// Run (or Serve, with listeners the caller made) is the whole server process in one call.
// WithHTTP adds an HTTP front end (the web package's): Serve connects it to the service in
// memory through a Gateway, so its calls pass the same tap and interceptors, serves it with
// the same TLS certificate and drains it at shutdown. The
// handlers stay thin: validation of numbers and conversion of messages here, every decision
// about products in catalog.
//
// It must never import bbolt or onnxruntime: it reaches the store and the model only through
// catalog and embed. Nor web: the front end is handed in as a FrontEnd builder.
package server
