// Package augment makes synthetic copies of a photo: the edits a photo goes through when a
// seller uploads it again (re-encoded, resized, cropped, rotated a little, brightened,
// mirrored, captioned). The catalogue's duplicate calibration uses them as labelled
// positives, and tests use them as known copies.
//
// It owns only pixel edits and JPEG encoding. It must never import the catalogue, the store,
// the index or the model: it knows nothing of duplicates, only of images.
package augment
