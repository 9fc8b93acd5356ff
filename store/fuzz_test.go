package store

import (
	"maps"
	"math"
	"strings"
	"testing"
	"time"
)

func FuzzDecodeItem(f *testing.F) {
	seeds := []Item{
		{Key: 1, Created: time.Unix(0, 0), Updated: time.Unix(0, 0)},
		{Key: 7, Category: "shoes", Title: "Red shoe", ImageURL: "https://x.test/a.jpg",
			ImageSHA256: strings.Repeat("ab", 32), Attributes: map[string]string{"colour": "red", "size": "42"},
			Created: time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC), Updated: time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)},
		{Key: math.MaxUint32 - 1, Title: "ünïcödé ✓", Attributes: map[string]string{"": "", "k": strings.Repeat("v", 300)},
			Created: time.Unix(0, math.MinInt64/2), Updated: time.Unix(0, math.MaxInt64/2)},
	}
	for _, it := range seeds {
		f.Add(encodeItem(it))
	}
	f.Add([]byte{})
	f.Add([]byte{itemFormatV1})
	f.Add([]byte{2, 0, 0, 0, 1})
	f.Add([]byte{itemFormatV1, 0, 0, 0, 1, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, data []byte) {
		it, err := decodeItem("id", data)
		if err != nil {
			return
		}
		// Whatever decodes must survive an encode/decode round trip unchanged.
		again, err := decodeItem("id", encodeItem(it))
		if err != nil {
			t.Fatalf("re-encoded item does not decode: %v", err)
		}
		if again.Key != it.Key || again.Category != it.Category || again.Title != it.Title ||
			again.ImageURL != it.ImageURL || again.ImageSHA256 != it.ImageSHA256 ||
			!again.Created.Equal(it.Created) || !again.Updated.Equal(it.Updated) || !maps.Equal(again.Attributes, it.Attributes) {
			t.Fatalf("round trip changed the item:\n%+v\n%+v", it, again)
		}
	})
}

// FuzzValidate feeds request-shaped input to the validation an Upsert runs first: it must
// never panic, and whatever it accepts must encode and decode to the same item.
func FuzzValidate(f *testing.F) {
	f.Add("sku-1", "shoes", "title", "colour", "red", strings.Repeat("0F", 32), []byte{0, 0, 128, 63, 0, 0, 0, 0})
	f.Add("", "", "", "", "", "", []byte{})
	f.Add("a\x00b", "\xff", "t", "", "v", "zz", []byte{0, 0, 192, 127, 0, 0, 0, 0})
	f.Add(strings.Repeat("x", MaxIDBytes+1), "c", "t", "k", "v", "", []byte{0, 0, 128, 127, 1, 2, 3, 4})
	f.Fuzz(func(t *testing.T, id, category, title, attrKey, attrValue, sha string, raw []byte) {
		const dim = 2
		vec := make([]float32, len(raw)/4)
		for i := range vec {
			vec[i] = math.Float32frombits(uint32(raw[4*i]) | uint32(raw[4*i+1])<<8 | uint32(raw[4*i+2])<<16 | uint32(raw[4*i+3])<<24)
		}
		in := Item{ID: id, Category: category, Title: title, ImageSHA256: sha, Vector: vec,
			Attributes: map[string]string{attrKey: attrValue}, Created: time.Unix(1700000000, 0), Updated: time.Unix(1700000001, 0)}
		it, err := validate(in, dim)
		if err != nil {
			return
		}
		out, err := decodeItem(it.ID, encodeItem(it))
		if err != nil {
			t.Fatalf("a valid item does not decode: %v", err)
		}
		if out.ID != it.ID || out.Category != it.Category || out.Title != it.Title || out.ImageSHA256 != it.ImageSHA256 ||
			!maps.Equal(out.Attributes, it.Attributes) {
			t.Fatalf("round trip changed a valid item:\n%+v\n%+v", it, out)
		}
	})
}
