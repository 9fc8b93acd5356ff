package benchkit

import (
	"bufio"
	"compress/gzip"
	"encoding/binary"
	"fmt"
	"io"
	"os"
)

// FashionMNISTDir is where Debian's dataset-fashion-mnist puts the IDX files.
const FashionMNISTDir = "/usr/share/datasets/fashion-mnist"

// maxIDXBytes bounds an IDX payload so a damaged header cannot ask for gigabytes.
const maxIDXBytes = 1 << 30

// ReadIDXImages reads a gzipped IDX3 image file (magic 0x00000803) into one float32 row per
// image with the raw 0..255 pixel values, as the public fashion-mnist-784-euclidean set uses.
func ReadIDXImages(path string) ([][]float32, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("benchkit: %w (install Debian's dataset-fashion-mnist: make setup)", err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(bufio.NewReader(f))
	if err != nil {
		return nil, fmt.Errorf("benchkit: %s: %w", path, err)
	}
	var head [4]uint32
	if err := binary.Read(gz, binary.BigEndian, &head); err != nil {
		return nil, fmt.Errorf("benchkit: %s header: %w", path, err)
	}
	if head[0] != 0x803 {
		return nil, fmt.Errorf("benchkit: %s: magic %#x is not an IDX3 image file", path, head[0])
	}
	n, dim := int(head[1]), int(head[2])*int(head[3])
	if n*dim > maxIDXBytes || n <= 0 || dim <= 0 {
		return nil, fmt.Errorf("benchkit: %s: implausible shape %d x %d", path, n, dim)
	}
	raw := make([]byte, n*dim)
	if _, err := io.ReadFull(gz, raw); err != nil {
		return nil, fmt.Errorf("benchkit: %s pixels: %w", path, err)
	}
	flat := make([]float32, n*dim)
	for i, b := range raw {
		flat[i] = float32(b)
	}
	rows := make([][]float32, n)
	for i := range rows {
		rows[i] = flat[i*dim : (i+1)*dim : (i+1)*dim]
	}
	return rows, nil
}
