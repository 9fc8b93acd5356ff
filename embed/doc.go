// Package embed turns image bytes into L2-normalised float32 vectors with an ONNX model.
//
// It owns everything between the bytes and the vector: format sniffing and decompression-bomb
// refusal, decoding (JPEG with EXIF orientation, PNG, GIF, WebP, uncompressed BMP; large
// JPEGs at reduced DCT scale through libjpeg-turbo, which the cgo build always links),
// resizing and cropping straight into the model's input tensor, the ONNX Runtime environment
// and session pool, dynamic batching of concurrent calls, and the model Spec and Identity that
// let a store refuse vectors from a different model. A Spec may also pool the model's last
// convolutional feature map (GAP, GeM, R-MAC; pooling.go), read through an output added to
// the graph in memory at load time (onnxedit.go), and embed several views of each photo,
// each its own model request, summed (views.go). Analyze derives, from the same decode,
// a 64-bit DCT perceptual hash (PHash, Hamming) and, when asked, the kept photo: the picture
// as the model sees it before cropping, JPEG-encoded with libjpeg-turbo. Windows hashes a
// kept photo's crop windows and MatchCrop aligns another photo with the nearest of them and
// measures their colours' correlation, so that a crop of a photo can be told from a
// different photo of the same design.
//
// A Spec may list post-processing steps: a projection file of package adapt (centring,
// whitening, a projection learned from the catalogue's groups) applied to every vector, its
// checksum part of the Identity.
//
// It must never import grpc, bbolt, or the project's index, store, catalog or server packages:
// it knows images and tensors, and of the project only package adapt, itself a leaf. Metrics reach callers through the small
// Observer interface rather than a metrics library.
package embed
