// Package adapt learns a linear projection of embedding vectors from labelled groups of them
// (photos of one product are one group) so that photos of one group come closer together than
// the frozen model puts them: supervised whitening. It owns the training (weighted covariances,
// shrinkage, the generalised eigenproblem), applying a projection to a vector, and the
// projection's file format with its checksum, which is what a model identity can name.
//
// It works on vectors only. It must never import the project's embed, index, store, catalog or
// server packages, grpc or bbolt: whoever embeds photos hands it vectors, and a model spec
// (package embed's Post steps) decides when a projection applies.
package adapt
