// Package dataset loads the shared labelled data the project tests and benchmarks against:
// the product photographs under ../shared/datasets (grocery, clothing, abo) and the
// Fashion-MNIST vectors Debian installs under /usr/share/datasets.
//
// It owns only finding and reading those files. It must never import the project's own
// packages (embed, store, index, catalog, server): every one of them may use it in tests.
package dataset
