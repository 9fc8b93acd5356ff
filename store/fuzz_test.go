package store

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"maps"
	"math"
	"strings"
	"testing"
	"time"
)

// seal appends the CRC-32C a product record ends with, so the fuzzer's bytes reach the
// decoder's field parsing instead of all stopping at the checksum.
func seal(body []byte) []byte {
	return binary.BigEndian.AppendUint32(append([]byte(nil), body...), crc32.Checksum(body, castagnoli))
}

func fuzzSeedProducts() []Product {
	t0, t1 := time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC), time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	many := Product{ID: "many", Created: t0, Updated: t1}
	for i := range MaxPhotos {
		many.Photos = append(many.Photos, Photo{ID: fmt.Sprint("p", i), Key: uint32(i + 1), Created: t0, Updated: t1})
	}
	return []Product{
		{ID: "min", Created: time.Unix(0, 0).UTC(), Updated: time.Unix(0, 0).UTC(), Photos: []Photo{{ID: "a", Key: 1,
			Created: time.Unix(0, 0).UTC(), Updated: time.Unix(0, 0).UTC()}}},
		{ID: "sku", Category: "shoes", Title: "Red shoe", Attributes: map[string]string{"colour": "red", "size": "42"},
			Created: t0, Updated: t1, Photos: []Photo{
				{ID: "front", Key: 7, ImageURL: "https://x.test/a.jpg", SHA256: strings.Repeat("ab", 32), PHash: 0xdeadbeef,
					HasPHash: true, KeptBytes: 12345, Created: t0, Updated: t1},
				{ID: "0123456789abcdef", Key: math.MaxUint32 - 1, Created: t1, Updated: t1},
			}},
		{ID: "ü", Title: "ünïcödé ✓", Attributes: map[string]string{"": "", "k": strings.Repeat("v", 300)},
			Created: time.Unix(0, math.MinInt64/2).UTC(), Updated: time.Unix(0, math.MaxInt64/2).UTC(),
			Photos: []Photo{{ID: "x", Key: 2, PHash: math.MaxUint64, KeptBytes: MaxKeptBytes, Created: t0, Updated: t0}}},
		many,
	}
}

// FuzzDecodeProduct: decodeProduct never panics on any bytes; bytes under a valid checksum
// that decode re-encode to a record that decodes to the same product.
func FuzzDecodeProduct(f *testing.F) {
	for _, p := range fuzzSeedProducts() {
		rec := encodeProduct(p)
		f.Add(rec)              // whole, checksum included
		f.Add(rec[:len(rec)-4]) // the body, which the fuzz function seals
	}
	f.Add([]byte{})
	f.Add([]byte{productFormatV2})
	f.Add([]byte{1, 0, 0, 0, 1})
	f.Add([]byte{productFormatV2, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Add([]byte{productFormatV2, 0, 0, 0, 0, 0, 65})
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, rec := range [][]byte{data, seal(data)} {
			p, err := decodeProduct("id", rec)
			if err != nil {
				if p.ID != "" || p.Photos != nil {
					t.Fatalf("a failed decode returned %+v", p)
				}
				continue
			}
			if len(p.Photos) == 0 || len(p.Photos) > MaxPhotos {
				t.Fatalf("decoded %d photos", len(p.Photos))
			}
			again, err := decodeProduct("id", encodeProduct(p))
			if err != nil {
				t.Fatalf("re-encoded product does not decode: %v", err)
			}
			if d := productDiff(again, p); d != "" {
				t.Fatalf("round trip changed the product: %s", d)
			}
		}
	})
}

// FuzzValidate feeds request-shaped input to the validation an Upsert runs first: it must
// never panic, and whatever it accepts must encode and decode to exactly the same product.
func FuzzValidate(f *testing.F) {
	f.Add("sku-1", "shoes", "title", "colour", "red", "front", "https://x/a.jpg", strings.Repeat("0F", 32),
		uint64(7), true, uint8(2), uint32(5), int64(1_700_000_000_000_000_000), []byte{0, 0, 128, 63, 0, 0, 0, 0})
	f.Add("", "", "", "", "", "", "", "", uint64(0), false, uint8(0), uint32(0), int64(0), []byte{})
	f.Add("a\x00b", "\xff", "t", "", "v", "a/b", "", "zz", uint64(1), false, uint8(1), uint32(1), int64(-1), []byte{0, 0, 192, 127, 0, 0, 0, 0})
	f.Add(strings.Repeat("x", MaxIDBytes+1), "c", "t", "k", "v", strings.Repeat("p", MaxPhotoIDBytes), "u", "",
		uint64(math.MaxUint64), true, uint8(MaxPhotos+1), uint32(math.MaxUint32), int64(math.MaxInt64), []byte{0, 0, 128, 127, 1, 2, 3, 4})
	f.Fuzz(func(t *testing.T, id, category, title, attrKey, attrValue, photoID, url, sha string,
		phash uint64, hasPHash bool, photos uint8, keptBytes uint32, ns int64, raw []byte) {
		const dim = 2
		vec := make([]float32, len(raw)/4)
		for i := range vec {
			vec[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
		}
		at := time.Unix(0, ns)
		in := Product{ID: id, Category: category, Title: title, Attributes: map[string]string{attrKey: attrValue},
			Created: at, Updated: at.Add(time.Second)}
		for i := range int(photos) {
			pid := photoID
			if i > 0 {
				pid = fmt.Sprint(photoID, i)
			}
			// Key and KeptBytes are the store's to set; any value must survive the record.
			in.Photos = append(in.Photos, Photo{ID: pid, Key: keptBytes + uint32(i), ImageURL: url, SHA256: sha, PHash: phash,
				HasPHash: hasPHash, KeptBytes: int(keptBytes), Created: at, Updated: at, Vector: vec})
		}
		p, err := Validate(in, dim)
		if err != nil {
			return
		}
		if p.Created.IsZero() || p.Updated.IsZero() {
			return // putProduct fills zero times in before encoding
		}
		out, err := decodeProduct(p.ID, encodeProduct(p))
		if err != nil {
			t.Fatalf("a valid product does not decode: %v", err)
		}
		if d := productDiff(out, p); d != "" {
			t.Fatalf("round trip changed a valid product: %s", d)
		}
		if len(p.Photos) > 0 && p.Photos[0].SHA256 != strings.ToLower(sha) {
			t.Fatalf("sha256 %q not normalised to %q", p.Photos[0].SHA256, strings.ToLower(sha))
		}
	})
}

// FuzzDecodeItemV1: decodeItemV1 never panics on any bytes, and what decodes is an item the
// first release could have written: encodeItemV1 of it decodes to the same product.
func FuzzDecodeItemV1(f *testing.F) {
	t0 := time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC)
	for _, it := range []itemV1{
		{Key: 1, Created: time.Unix(0, 0).UTC(), Updated: time.Unix(0, 0).UTC()},
		{Key: 7, Category: "shoes", Title: "Red shoe", ImageURL: "https://x.test/a.jpg", SHA256: strings.Repeat("ab", 32),
			Attributes: map[string]string{"colour": "red", "size": "42"}, Created: t0, Updated: t0.Add(time.Hour)},
		{Key: math.MaxUint32 - 1, Title: "ünïcödé ✓", Attributes: map[string]string{"": "", "k": strings.Repeat("v", 300)},
			Created: time.Unix(0, math.MinInt64/2).UTC(), Updated: time.Unix(0, math.MaxInt64/2).UTC()},
	} {
		f.Add(encodeItemV1(it))
	}
	f.Add([]byte{})
	f.Add([]byte{itemFormat1})
	f.Add([]byte{2, 0, 0, 0, 1})
	f.Add([]byte{itemFormat1, 0, 0, 0, 1, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := decodeItemV1("id", data)
		if err != nil {
			return
		}
		if len(p.Photos) != 1 {
			t.Fatalf("decoded %d photos", len(p.Photos))
		}
		ph := p.Photos[0]
		if (ph.SHA256 == "") != (ph.ID == "") || (ph.SHA256 != "" && ph.ID != ph.SHA256[:PhotoIDLen]) {
			t.Fatalf("photo id %q for sha256 %q", ph.ID, ph.SHA256)
		}
		it := itemV1{ID: p.ID, Key: ph.Key, Created: p.Created, Updated: p.Updated, Category: p.Category, Title: p.Title,
			ImageURL: ph.ImageURL, SHA256: ph.SHA256, Attributes: p.Attributes}
		again, err := decodeItemV1("id", encodeItemV1(it))
		if err != nil {
			t.Fatalf("re-encoded item does not decode: %v", err)
		}
		if d := productDiff(again, p); d != "" || !maps.Equal(again.Attributes, p.Attributes) {
			t.Fatalf("round trip changed the item: %s", d)
		}
	})
}
