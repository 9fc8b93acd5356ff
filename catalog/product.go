package catalog

import "time"

// Product is a catalogue product as callers see it: metadata and photos, best first as the
// client listed them.
type Product struct {
	// ID is the client's product id.
	ID string
	// Category, Title and Attributes are as last upserted.
	Category   string
	Title      string
	Attributes map[string]string
	// Created is when the id was first stored; Updated when the product last changed.
	Created time.Time
	Updated time.Time
	// Photos are the product's photos (at least one).
	Photos []Photo
}

// Photo is one photo of a product.
type Photo struct {
	// ID names the photo inside its product: the client's, or derived from the photo's bytes
	// (or vector) when the client gave none, so the same photo keeps the same id.
	ID string
	// ImageURL is where the client said the photo came from.
	ImageURL string
	// SHA256 is the hex sha256 of the bytes it was embedded from; empty for a photo stored
	// from a ready vector.
	SHA256 string
	// PHash is the 64-bit perceptual hash of the decoded photo, when HasPHash.
	PHash    uint64
	HasPHash bool
	// Kept says whether the catalogue keeps a copy of the photo (KeptPhoto), and KeptBytes
	// its size.
	Kept      bool
	KeptBytes int
	// Created is when this photo id was first stored; Updated when its bytes last changed.
	Created time.Time
	Updated time.Time
	// Vector is the photo's embedding; only from Get with withVectors.
	Vector []float32
}

// Photo returns the product's photo with that id.
func (p Product) Photo(id string) (Photo, bool) {
	for _, ph := range p.Photos {
		if ph.ID == id {
			return ph, true
		}
	}
	return Photo{}, false
}
