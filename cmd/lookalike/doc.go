// Command lookalike is the single binary of Lookalike: it runs the gRPC service (serve), feeds a
// catalogue into it (ingest), queries it (search, similar, dedup, get, stats), administers it
// (delete, backup) and inspects the embedding model locally (embed, model).
//
// This package owns the command line only: flag parsing, manifest reading, progress display and
// human or JSON output. Every command is one file, command_<name>.go, registered in main.go's
// dispatch table. The client commands speak to a server over gRPC through the generated
// lookalike.v1 client; only serve, embed and model load anything in-process.
//
// It must never import bbolt: the data file belongs to the store package behind the server.
package main
