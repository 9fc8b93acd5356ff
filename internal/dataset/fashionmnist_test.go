package dataset

import (
	"bytes"
	"encoding/binary"
	"errors"
	"path/filepath"
	"testing"
)

func idxBytes(count, rows, cols int, fill func(i int) byte) []byte {
	var b bytes.Buffer
	hdr := make([]byte, 16)
	binary.BigEndian.PutUint32(hdr[0:], idxImageMagic)
	binary.BigEndian.PutUint32(hdr[4:], uint32(count))
	binary.BigEndian.PutUint32(hdr[8:], uint32(rows))
	binary.BigEndian.PutUint32(hdr[12:], uint32(cols))
	b.Write(hdr)
	for i := range count * rows * cols {
		b.WriteByte(fill(i))
	}
	return b.Bytes()
}

func TestDecodeIDX(t *testing.T) {
	valid := idxBytes(3, 2, 2, func(i int) byte { return byte(i * 10) })
	tests := []struct {
		name      string
		data      []byte
		limit     int
		wantCount int
		wantErr   bool
	}{
		{"all", valid, 0, 3, false},
		{"limit", valid, 2, 2, false},
		{"limit above count", valid, 10, 3, false},
		{"truncated body", valid[:len(valid)-1], 0, 0, true},
		{"truncated header", valid[:10], 0, 0, true},
		{"bad magic", append([]byte{0, 0, 8, 1}, valid[4:]...), 0, 0, true},
		{"zero rows", idxBytes(1, 0, 2, func(int) byte { return 0 }), 0, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeIDX(bytes.NewReader(tt.data), tt.limit)
			if tt.wantErr {
				if !errors.Is(err, ErrIDX) {
					t.Fatalf("err = %v, want ErrIDX", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != tt.wantCount {
				t.Fatalf("got %d images, want %d", len(got), tt.wantCount)
			}
			for i, v := range got {
				for j, x := range v {
					if want := float32(byte((i*4 + j) * 10)); x != want {
						t.Fatalf("image %d value %d = %v, want %v", i, j, x, want)
					}
				}
			}
		})
	}
}

func TestFashionMNISTInstalled(t *testing.T) {
	train, err := FashionMNISTTrain(1000)
	if err != nil {
		t.Fatalf("Fashion-MNIST must be installed for the index tests: %v", err)
	}
	test, err := FashionMNISTTest(0)
	if err != nil {
		t.Fatal(err)
	}
	if len(train) != 1000 || len(test) != 10000 {
		t.Fatalf("got %d train and %d test images, want 1000 and 10000", len(train), len(test))
	}
	var maxV float32
	nonZero := 0
	for _, v := range train {
		if len(v) != 784 {
			t.Fatalf("dimension %d, want 784", len(v))
		}
		for _, x := range v {
			maxV = max(maxV, x)
			if x != 0 {
				nonZero++
			}
		}
	}
	if maxV != 255 || nonZero == 0 {
		t.Fatalf("pixel values look wrong: max %v, %d non-zero", maxV, nonZero)
	}
}

func TestFashionMNISTMissing(t *testing.T) {
	_, err := fashionMNISTFile(filepath.Join(t.TempDir(), "absent.gz"), 0)
	if !errors.Is(err, ErrFashionMNISTMissing) {
		t.Fatalf("err = %v, want ErrFashionMNISTMissing", err)
	}
}

func FuzzDecodeIDX(f *testing.F) {
	f.Add(idxBytes(2, 3, 3, func(i int) byte { return byte(i) }), 0)
	f.Add(idxBytes(1, 28, 28, func(i int) byte { return byte(i) }), 1)
	f.Add([]byte{0, 0, 8, 3, 0xff, 0xff, 0xff, 0xff, 0, 0, 0x7f, 0xff, 0, 0, 0x7f, 0xff}, 0)
	f.Fuzz(func(t *testing.T, data []byte, limit int) {
		vecs, err := decodeIDX(bytes.NewReader(data), limit)
		if err != nil {
			return
		}
		if len(data) < 16 {
			t.Fatal("decoded a stream shorter than the header")
		}
		dim := int(binary.BigEndian.Uint32(data[8:])) * int(binary.BigEndian.Uint32(data[12:]))
		if 16+len(vecs)*dim > len(data) {
			t.Fatalf("decoded %d images of %d values from %d bytes", len(vecs), dim, len(data))
		}
	})
}
