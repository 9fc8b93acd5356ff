package benchkit

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
)

// FuzzReadVecFiles feeds arbitrary bytes to the .fvecs/.ivecs readers, which read files the
// Python peers wrote: they must return rows or an error, never panic or over-allocate.
func FuzzReadVecFiles(f *testing.F) {
	row := func(dim int32, vals ...uint32) []byte {
		b := binary.LittleEndian.AppendUint32(nil, uint32(dim))
		for _, v := range vals {
			b = binary.LittleEndian.AppendUint32(b, v)
		}
		return b
	}
	f.Add([]byte{})
	f.Add(row(2, 1, 2))
	f.Add(append(row(1, 7), row(1, 8)...))
	f.Add(row(3, 1))    // truncated row
	f.Add(row(-1))      // negative dimension
	f.Add(row(1 << 30)) // absurd dimension
	f.Add([]byte{1, 0}) // truncated header
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(t.TempDir(), "x")
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		if rows, err := ReadIvecs(path); err == nil {
			n := 0
			for _, r := range rows {
				n += 4 + 4*len(r)
			}
			if n != len(data) {
				t.Fatalf("read %d bytes worth of rows from %d bytes", n, len(data))
			}
		}
		_, _ = ReadFvecs(path)
	})
}
