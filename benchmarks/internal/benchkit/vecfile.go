package benchkit

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"os"
)

// The .fvecs/.ivecs formats (used by the public ANN benchmarks and readable from numpy in a few
// lines) carry vectors to and results back from the Python peers: each row is a little-endian
// int32 dimension followed by that many float32 (fvecs) or int32 (ivecs) values.

// WriteFvecs writes rows of equal length to path.
func WriteFvecs(path string, rows [][]float32) error { return writeRows(path, rows) }

// WriteIvecs writes integer rows to path.
func WriteIvecs(path string, rows [][]int32) error { return writeRows(path, rows) }

func writeRows[T float32 | int32](path string, rows [][]T) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("benchkit: create %s: %w", path, err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	for i, row := range rows {
		err := binary.Write(w, binary.LittleEndian, int32(len(row)))
		if err == nil {
			err = binary.Write(w, binary.LittleEndian, row)
		}
		if err != nil {
			f.Close()
			return fmt.Errorf("benchkit: write %s row %d: %w", path, i, err)
		}
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return fmt.Errorf("benchkit: write %s: %w", path, err)
	}
	return f.Close()
}

// ReadFvecs reads a whole .fvecs file.
func ReadFvecs(path string) ([][]float32, error) { return readRows(path, math.Float32frombits) }

// ReadIvecs reads a whole .ivecs file.
func ReadIvecs(path string) ([][]int32, error) {
	return readRows(path, func(u uint32) int32 { return int32(u) })
}

// maxRowDim bounds a row so that a damaged file cannot ask for gigabytes.
const maxRowDim = 1 << 16

func readRows[T float32 | int32](path string, value func(uint32) T) ([][]T, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("benchkit: open %s: %w", path, err)
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 1<<20)
	var rows [][]T
	var head [4]byte
	var buf []byte
	for i := 0; ; i++ {
		if _, err := io.ReadFull(r, head[:]); err == io.EOF {
			return rows, nil
		} else if err != nil {
			return nil, fmt.Errorf("benchkit: %s row %d: %w", path, i, err)
		}
		dim := int(int32(binary.LittleEndian.Uint32(head[:])))
		if dim < 0 || dim > maxRowDim {
			return nil, fmt.Errorf("benchkit: %s row %d: bad dimension %d", path, i, dim)
		}
		if cap(buf) < 4*dim {
			buf = make([]byte, 4*dim)
		}
		buf = buf[:4*dim]
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, fmt.Errorf("benchkit: %s row %d: %w", path, i, err)
		}
		row := make([]T, dim)
		for j := range row {
			row[j] = value(binary.LittleEndian.Uint32(buf[4*j:]))
		}
		rows = append(rows, row)
	}
}
