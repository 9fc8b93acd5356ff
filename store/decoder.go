package store

import (
	"encoding/binary"
	"fmt"
)

// decoder reads fields in order and remembers the first failure, so the record decoders
// stay linear. Every read is bounds-checked: records may be damaged or hostile.
type decoder struct {
	data []byte
	err  error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("bad %s", what)
	}
}

func (d *decoder) byte() byte {
	if d.err != nil || len(d.data) < 1 {
		d.fail("length")
		return 0
	}
	b := d.data[0]
	d.data = d.data[1:]
	return b
}

func (d *decoder) uint32() uint32 {
	if d.err != nil || len(d.data) < 4 {
		d.fail("key")
		return 0
	}
	v := binary.BigEndian.Uint32(d.data)
	d.data = d.data[4:]
	return v
}

func (d *decoder) uint64() uint64 {
	if d.err != nil || len(d.data) < 8 {
		d.fail("uint64")
		return 0
	}
	v := binary.BigEndian.Uint64(d.data)
	d.data = d.data[8:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.data)
	if n <= 0 {
		d.fail("varint")
		return 0
	}
	d.data = d.data[n:]
	return v
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.data)
	if n <= 0 {
		d.fail("uvarint")
		return 0
	}
	d.data = d.data[n:]
	return v
}

func (d *decoder) string(max int) string {
	n := d.uvarint()
	if d.err != nil {
		return ""
	}
	if n > uint64(max) || n > uint64(len(d.data)) {
		d.fail("string length")
		return ""
	}
	s := string(d.data[:n])
	d.data = d.data[n:]
	return s
}

// attributes reads a count and that many name, value pairs, written sorted and unique.
func (d *decoder) attributes() map[string]string {
	n := d.uvarint()
	if d.err == nil && n > MaxAttributes {
		d.fail("attribute count")
	}
	if d.err != nil || n == 0 {
		return nil
	}
	attrs := make(map[string]string, n)
	prev := ""
	for i := uint64(0); i < n && d.err == nil; i++ {
		k := d.string(MaxAttributeKeyBytes)
		v := d.string(MaxAttributeValueBytes)
		if d.err == nil && i > 0 && k <= prev {
			d.fail("attribute order")
		}
		attrs[k] = v
		prev = k
	}
	return attrs
}
