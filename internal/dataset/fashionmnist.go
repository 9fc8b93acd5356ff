package dataset

import (
	"bufio"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// fashionMNISTDir is where Debian's dataset-fashion-mnist package installs the IDX files.
const fashionMNISTDir = "/usr/share/datasets/fashion-mnist"

// Fashion-MNIST file names inside fashionMNISTDir.
const (
	fashionMNISTTrainImages = "train-images-idx3-ubyte.gz"
	fashionMNISTTestImages  = "t10k-images-idx3-ubyte.gz"
)

// ErrFashionMNISTMissing is returned (wrapped) when the IDX files are not installed.
var ErrFashionMNISTMissing = errors.New("dataset: Fashion-MNIST is not installed (run `make setup`, which installs the Debian package dataset-fashion-mnist)")

// ErrIDX is returned (wrapped) for an IDX stream that is not a well-formed image file.
var ErrIDX = errors.New("dataset: malformed IDX image file")

// idxImageMagic is the IDX header of an unsigned-byte, three-dimensional array.
const idxImageMagic = 0x00000803

// maxIDXValues bounds what a header may claim, so that a damaged header cannot make the
// decoder allocate without limit.
const maxIDXValues = 1 << 30

// FashionMNISTTrain loads the 60,000 training images as 784-d vectors of raw pixel values
// (0-255 as float32, as in ann-benchmarks' fashion-mnist-784-euclidean). limit > 0 keeps the
// first limit images.
func FashionMNISTTrain(limit int) ([][]float32, error) {
	return fashionMNISTFile(filepath.Join(fashionMNISTDir, fashionMNISTTrainImages), limit)
}

// FashionMNISTTest loads the 10,000 test images, like FashionMNISTTrain.
func FashionMNISTTest(limit int) ([][]float32, error) {
	return fashionMNISTFile(filepath.Join(fashionMNISTDir, fashionMNISTTestImages), limit)
}

// fashionMNISTFile loads a gzip-compressed IDX image file.
func fashionMNISTFile(path string, limit int) ([][]float32, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrFashionMNISTMissing, path)
	}
	if err != nil {
		return nil, fmt.Errorf("dataset: open %s: %w", path, err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(bufio.NewReader(f))
	if err != nil {
		return nil, fmt.Errorf("dataset: %s: %w", path, err)
	}
	defer zr.Close()
	vecs, err := decodeIDX(zr, limit)
	if err != nil {
		return nil, fmt.Errorf("dataset: %s: %w", path, err)
	}
	return vecs, nil
}

// decodeIDX decodes an uncompressed IDX image stream (magic 0x803, count, rows, columns,
// then bytes) into one float32 vector of rows*columns pixel values per image. limit > 0
// stops after limit images.
func decodeIDX(r io.Reader, limit int) ([][]float32, error) {
	var hdr [16]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, fmt.Errorf("%w: header: %w", ErrIDX, err)
	}
	if magic := binary.BigEndian.Uint32(hdr[0:]); magic != idxImageMagic {
		return nil, fmt.Errorf("%w: magic %#x, want %#x", ErrIDX, magic, idxImageMagic)
	}
	count := int(binary.BigEndian.Uint32(hdr[4:]))
	rows := int(binary.BigEndian.Uint32(hdr[8:]))
	cols := int(binary.BigEndian.Uint32(hdr[12:]))
	if rows <= 0 || cols <= 0 || rows > 1<<15 || cols > 1<<15 || count < 0 {
		return nil, fmt.Errorf("%w: %d images of %dx%d", ErrIDX, count, rows, cols)
	}
	if limit > 0 && limit < count {
		count = limit
	}
	dim := rows * cols
	if count*dim > maxIDXValues {
		return nil, fmt.Errorf("%w: %d images of %d values is too large", ErrIDX, count, dim)
	}
	raw := make([]byte, dim)
	out := make([][]float32, 0, min(count, 1<<16))
	for i := range count {
		if _, err := io.ReadFull(r, raw); err != nil {
			return nil, fmt.Errorf("%w: image %d of %d: %w", ErrIDX, i, count, err)
		}
		vec := make([]float32, dim)
		for j, b := range raw {
			vec[j] = float32(b)
		}
		out = append(out, vec)
	}
	return out, nil
}
