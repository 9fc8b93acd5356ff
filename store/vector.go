package store

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math"
	"unsafe"
)

// encodeVector writes v as little-endian float32s followed by their CRC-32C (big endian),
// so a damaged vector is refused on read instead of being served as a changed one.
func encodeVector(v []float32) []byte {
	b := make([]byte, 4*len(v), 4*len(v)+4)
	if hostIsLittleEndian() && len(v) > 0 {
		copy(b, unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(v))), 4*len(v)))
	} else {
		for i, x := range v {
			binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
		}
	}
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

// hostIsLittleEndian reports whether float32s sit in memory in the store's byte order.
func hostIsLittleEndian() bool {
	return binary.NativeEndian.Uint16([]byte{1, 0}) == 1
}

// decodeVector verifies and copies a vector written by encodeVector out of b (which may be
// bbolt memory).
func decodeVector(b []byte, dim int) ([]float32, error) {
	if len(b) != 4*dim+4 {
		return nil, fmt.Errorf("%w: vector of %d bytes, want %d", ErrCorrupt, len(b), 4*dim+4)
	}
	raw := b[:4*dim]
	if crc32.Checksum(raw, castagnoli) != binary.BigEndian.Uint32(b[4*dim:]) {
		return nil, fmt.Errorf("%w: vector checksum mismatch", ErrCorrupt)
	}
	return decodeRawVector(raw, dim), nil
}

// decodeRawVector copies dim little-endian float32s out of raw (len(raw) == 4*dim).
func decodeRawVector(raw []byte, dim int) []float32 {
	v := make([]float32, dim)
	if hostIsLittleEndian() {
		// The stored layout is the in-memory layout: one copy instead of dim conversions.
		copy(unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(v))), 4*dim), raw)
		return v
	}
	for i := range v {
		v[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
	}
	return v
}

// encodeKept appends a kept photo's CRC-32C to a copy of it, as encodeVector does.
func encodeKept(jpeg []byte) []byte {
	b := make([]byte, len(jpeg), len(jpeg)+4)
	copy(b, jpeg)
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(jpeg, castagnoli))
}

// decodeKept verifies and copies a kept photo out of b.
func decodeKept(b []byte) ([]byte, error) {
	if len(b) < 4 {
		return nil, fmt.Errorf("%w: kept photo of %d bytes", ErrCorrupt, len(b))
	}
	body := b[:len(b)-4]
	if crc32.Checksum(body, castagnoli) != binary.BigEndian.Uint32(b[len(b)-4:]) {
		return nil, fmt.Errorf("%w: kept photo checksum mismatch", ErrCorrupt)
	}
	return append([]byte(nil), body...), nil
}
