package index

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"math"
	"os"
	"path/filepath"
)

// Snapshot file layout, version 2, all integers little endian:
//
//	magic "LKHNSW\r\n" | version u32 | header (see snapshotHeader) |
//	tag length u32 | tag bytes |
//	keys [n]u32 | levels [n]u8 | deleted [n]u8 | vectors [n*dim]f32 |
//	layer-0 links [n*(1+2M)]u32 | upper links: for each node with level > 0, [level*(1+M)]u32 |
//	CRC-32C of every byte before it, u32
//
// Version 1 is the same without the tag (it loads with an empty tag). The store sequence
// number in the header tells the catalogue which changes to replay; the tag says which
// history those sequence numbers belong to.
const (
	snapshotMagic     = "LKHNSW\r\n"
	snapshotVersion   = 2
	snapshotVersionV1 = 1
	ioChunk           = 1 << 16
	// MaxSnapshotTag bounds SnapshotInfo.Tag.
	MaxSnapshotTag = 1024
)

// SnapshotInfo is what a snapshot records besides the graph itself.
type SnapshotInfo struct {
	// Seq is the store sequence number the graph reflects.
	Seq uint64
	// Tag is opaque to the index: the caller's identity of the data the graph was built
	// from (the catalogue stores the store's generation id), at most MaxSnapshotTag bytes.
	Tag string
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

type snapshotHeader struct {
	Metric, Dim, M, EFConstruction, EFSearch uint32
	Seed                                     int64
	MaxTombstoneFraction                     float64
	Seq                                      uint64
	Inserted                                 uint64
	Nodes, Tombstones, Entry                 uint32
	MaxLevel                                 int32
}

// Save writes the graph to path atomically (temporary file, fsync, rename, fsync of the
// directory), tagged with the store sequence number seq it reflects and an empty tag.
// Searches continue meanwhile; writers wait until it finishes.
func (h *HNSW) Save(path string, seq uint64) error {
	return h.SaveSnapshot(path, SnapshotInfo{Seq: seq})
}

// SaveSnapshot is Save with the whole SnapshotInfo, tag included.
func (h *HNSW) SaveSnapshot(path string, info SnapshotInfo) (err error) {
	if len(info.Tag) > MaxSnapshotTag {
		return fmt.Errorf("index: save snapshot: tag of %d bytes, at most %d", len(info.Tag), MaxSnapshotTag)
	}
	h.writeMu.Lock()
	defer h.writeMu.Unlock()

	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("index: save snapshot: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	bw := bufio.NewWriterSize(tmp, 1<<20)
	crc := crc32.New(castagnoli)
	w := &snapshotWriter{w: io.MultiWriter(bw, crc)}
	h.encode(w, info)
	if w.err != nil {
		return fmt.Errorf("index: save snapshot: %w", w.err)
	}
	var sum [4]byte
	binary.LittleEndian.PutUint32(sum[:], crc.Sum32())
	if _, err := bw.Write(sum[:]); err != nil {
		return fmt.Errorf("index: save snapshot: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("index: save snapshot: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("index: save snapshot: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("index: save snapshot: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("index: save snapshot: %w", err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("index: save snapshot: sync dir: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("index: save snapshot: sync dir: %w", err)
	}
	return nil
}

// encode streams the graph; the caller holds writeMu, so nothing changes underneath.
func (h *HNSW) encode(w *snapshotWriter, info SnapshotInfo) {
	g := h.g
	w.bytes([]byte(snapshotMagic))
	w.u32s([]uint32{snapshotVersion})
	hdr := snapshotHeader{
		Metric: uint32(h.cfg.Metric), Dim: uint32(h.dim), M: uint32(h.cfg.M),
		EFConstruction: uint32(h.cfg.EFConstruction), EFSearch: uint32(h.cfg.EFSearch),
		Seed: h.cfg.Seed, MaxTombstoneFraction: h.cfg.MaxTombstoneFraction, Seq: info.Seq,
		Inserted: h.inserted.Load(), Nodes: uint32(g.n), Tombstones: uint32(g.tombstones),
		Entry: g.entry, MaxLevel: int32(g.maxLevel),
	}
	if w.err == nil {
		w.err = binary.Write(w.w, binary.LittleEndian, &hdr)
	}
	w.u32s([]uint32{uint32(len(info.Tag))})
	w.bytes([]byte(info.Tag))
	w.u32s(g.keys[:g.n])
	w.bytes(g.levels[:g.n])
	flags := make([]byte, g.n)
	for i, d := range g.deleted[:g.n] {
		if d {
			flags[i] = 1
		}
	}
	w.bytes(flags)
	for b := 0; b*blockSize < g.n; b++ {
		rows := min(blockSize, g.n-b*blockSize)
		w.f32s(g.vecs[b][:rows*g.dim])
	}
	for b := 0; b*blockSize < g.n; b++ {
		rows := min(blockSize, g.n-b*blockSize)
		w.u32s(g.links0[b][:rows*g.stride0])
	}
	for node := 0; node < g.n; node++ {
		if g.levels[node] > 0 {
			w.u32s(g.upper[node])
		}
	}
}

type snapshotWriter struct {
	w   io.Writer
	buf []byte
	err error
}

func (w *snapshotWriter) bytes(b []byte) {
	if w.err == nil {
		_, w.err = w.w.Write(b)
	}
}

func (w *snapshotWriter) u32s(v []uint32) {
	for len(v) > 0 && w.err == nil {
		n := min(len(v), ioChunk/4)
		w.buf = w.buf[:0]
		for _, x := range v[:n] {
			w.buf = binary.LittleEndian.AppendUint32(w.buf, x)
		}
		_, w.err = w.w.Write(w.buf)
		v = v[n:]
	}
}

func (w *snapshotWriter) f32s(v []float32) {
	for len(v) > 0 && w.err == nil {
		n := min(len(v), ioChunk/4)
		w.buf = w.buf[:0]
		for _, x := range v[:n] {
			w.buf = binary.LittleEndian.AppendUint32(w.buf, math.Float32bits(x))
		}
		_, w.err = w.w.Write(w.buf)
		v = v[n:]
	}
}

// LoadHNSW reads a snapshot written by Save or SaveSnapshot and returns the index and the
// store sequence number it reflects; see LoadSnapshot.
func LoadHNSW(path string) (*HNSW, uint64, error) {
	h, info, err := LoadSnapshot(path)
	return h, info.Seq, err
}

// LoadSnapshot reads a snapshot and returns the index with its SnapshotInfo (a version 1
// file has an empty tag). Any damage (truncation, a flipped bit, an impossible header, links
// to nodes that do not exist, trailing bytes) is an error wrapping ErrBadSnapshot,
// ErrNotASnapshot or ErrBadVersion; a missing file wraps fs.ErrNotExist. The caller then
// rebuilds from the store.
func LoadSnapshot(path string) (*HNSW, SnapshotInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, SnapshotInfo{}, fmt.Errorf("index: load snapshot: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, SnapshotInfo{}, fmt.Errorf("index: load snapshot: %w", err)
	}
	h, info, err := decodeSnapshot(bufio.NewReaderSize(f, 1<<20), st.Size())
	if err != nil {
		return nil, SnapshotInfo{}, fmt.Errorf("index: load snapshot %s: %w", path, err)
	}
	return h, info, nil
}

func decodeSnapshot(src io.Reader, size int64) (*HNSW, SnapshotInfo, error) {
	var info SnapshotInfo
	r := &snapshotReader{r: src, crc: crc32.New(castagnoli)}
	magic := make([]byte, len(snapshotMagic))
	r.bytes(magic)
	if r.err != nil || string(magic) != snapshotMagic {
		return nil, info, ErrNotASnapshot
	}
	version := make([]uint32, 1)
	r.u32s(version)
	if r.err != nil {
		return nil, info, r.fail()
	}
	if version[0] != snapshotVersion && version[0] != snapshotVersionV1 {
		return nil, info, fmt.Errorf("%w: %d (this build reads %d and %d)", ErrBadVersion, version[0], snapshotVersionV1, snapshotVersion)
	}
	var hdr snapshotHeader
	if r.err == nil {
		r.err = binary.Read(r, binary.LittleEndian, &hdr)
	}
	if r.err != nil {
		return nil, info, r.fail()
	}
	if err := hdr.validate(size); err != nil {
		return nil, info, err
	}
	info.Seq = hdr.Seq
	if version[0] >= 2 {
		tagLen := make([]uint32, 1)
		r.u32s(tagLen)
		if r.err != nil {
			return nil, info, r.fail()
		}
		if tagLen[0] > MaxSnapshotTag {
			return nil, info, fmt.Errorf("%w: tag of %d bytes, at most %d", ErrBadSnapshot, tagLen[0], MaxSnapshotTag)
		}
		tag := make([]byte, tagLen[0])
		r.bytes(tag)
		if r.err != nil {
			return nil, info, r.fail()
		}
		info.Tag = string(tag)
	}

	cfg := Config{
		Metric: Metric(hdr.Metric), M: int(hdr.M), EFConstruction: int(hdr.EFConstruction),
		EFSearch: int(hdr.EFSearch), Seed: hdr.Seed, MaxTombstoneFraction: hdr.MaxTombstoneFraction,
	}
	h := NewHNSW(int(hdr.Dim), cfg)
	h.inserted.Store(hdr.Inserted)
	g := h.g
	n := int(hdr.Nodes)
	g.n = n
	g.keys = make([]Key, n)
	r.u32s(g.keys)
	g.levels = make([]uint8, n)
	r.bytes(g.levels)
	flags := make([]byte, n)
	r.bytes(flags)
	if r.err != nil {
		return nil, info, r.fail()
	}
	g.deleted = make([]bool, n)
	tombstones := 0
	for i, fl := range flags {
		switch fl {
		case 0:
		case 1:
			g.deleted[i] = true
			tombstones++
		default:
			return nil, info, fmt.Errorf("%w: node %d has flag %d", ErrBadSnapshot, i, fl)
		}
	}
	blocks := (n + blockSize - 1) / blockSize
	g.vecs = make([][]float32, blocks)
	g.links0 = make([][]uint32, blocks)
	for b := range blocks {
		rows := min(blockSize, n-b*blockSize)
		g.vecs[b] = make([]float32, blockSize*g.dim)
		r.f32s(g.vecs[b][:rows*g.dim])
	}
	for b := range blocks {
		rows := min(blockSize, n-b*blockSize)
		g.links0[b] = make([]uint32, blockSize*g.stride0)
		r.u32s(g.links0[b][:rows*g.stride0])
	}
	g.upper = make([][]uint32, n)
	for node := range n {
		if lvl := int(g.levels[node]); lvl > 0 {
			if lvl > int(hdr.MaxLevel) {
				return nil, info, fmt.Errorf("%w: node %d is on level %d above the top %d", ErrBadSnapshot, node, lvl, hdr.MaxLevel)
			}
			g.upper[node] = make([]uint32, lvl*g.strideU)
			r.u32s(g.upper[node])
			if r.err != nil {
				return nil, info, r.fail()
			}
		}
	}
	if r.err != nil {
		return nil, info, r.fail()
	}
	want := r.crc.Sum32()
	var sum [4]byte
	if _, err := io.ReadFull(src, sum[:]); err != nil {
		return nil, info, fmt.Errorf("%w: checksum: %w", ErrBadSnapshot, err)
	}
	if got := binary.LittleEndian.Uint32(sum[:]); got != want {
		return nil, info, fmt.Errorf("%w: checksum %08x, computed %08x", ErrBadSnapshot, got, want)
	}
	if extra, _ := src.Read(sum[:1]); extra != 0 {
		return nil, info, fmt.Errorf("%w: trailing bytes after the checksum", ErrBadSnapshot)
	}

	// The checksum proves the bytes are the ones written; these checks make sure a snapshot
	// from a buggy writer cannot index out of range later.
	if tombstones != int(hdr.Tombstones) {
		return nil, info, fmt.Errorf("%w: %d tombstones, header says %d", ErrBadSnapshot, tombstones, hdr.Tombstones)
	}
	g.tombstones = tombstones
	g.maxLevel = int(hdr.MaxLevel)
	g.entry = hdr.Entry
	if n > 0 && int(g.levels[g.entry]) != g.maxLevel {
		return nil, info, fmt.Errorf("%w: entry point is not on the top level", ErrBadSnapshot)
	}
	for node := range n {
		for lvl := 0; lvl <= int(g.levels[node]); lvl++ {
			var count uint32
			if lvl == 0 {
				count = g.links0[node>>blockShift][int(node&blockMask)*g.stride0]
			} else {
				count = g.upper[node][(lvl-1)*g.strideU]
			}
			if int(count) > g.maxLinks(lvl) {
				return nil, info, fmt.Errorf("%w: node %d has %d links on level %d", ErrBadSnapshot, node, count, lvl)
			}
			for _, nb := range g.links(uint32(node), lvl) {
				if int(nb) >= n || int(g.levels[nb]) < lvl {
					return nil, info, fmt.Errorf("%w: node %d links to %d on level %d", ErrBadSnapshot, node, nb, lvl)
				}
			}
		}
		if !g.deleted[node] {
			if _, dup := g.byKey[g.keys[node]]; dup {
				return nil, info, fmt.Errorf("%w: key %d is live twice", ErrBadSnapshot, g.keys[node])
			}
			g.byKey[g.keys[node]] = uint32(node)
		}
	}
	return h, info, nil
}

func (hdr snapshotHeader) validate(size int64) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrBadSnapshot, fmt.Sprintf(format, args...))
	}
	switch {
	case !Metric(hdr.Metric).valid():
		return bad("metric %d", hdr.Metric)
	case hdr.Dim == 0 || hdr.Dim > 1<<16:
		return bad("dimension %d", hdr.Dim)
	case hdr.M < 2 || hdr.M > 1<<10:
		return bad("M %d", hdr.M)
	case hdr.EFConstruction == 0 || hdr.EFSearch == 0:
		return bad("ef %d/%d", hdr.EFConstruction, hdr.EFSearch)
	case !(hdr.MaxTombstoneFraction > 0 && hdr.MaxTombstoneFraction < 1):
		return bad("tombstone fraction %v", hdr.MaxTombstoneFraction)
	case hdr.MaxLevel < -1 || hdr.MaxLevel > maxLevelCap:
		return bad("top level %d", hdr.MaxLevel)
	case (hdr.Nodes == 0) != (hdr.MaxLevel == -1):
		return bad("%d nodes with top level %d", hdr.Nodes, hdr.MaxLevel)
	case hdr.Nodes > 0 && hdr.Entry >= hdr.Nodes:
		return bad("entry point %d of %d nodes", hdr.Entry, hdr.Nodes)
	case hdr.Tombstones > hdr.Nodes:
		return bad("%d tombstones of %d nodes", hdr.Tombstones, hdr.Nodes)
	}
	// Refuse to allocate more than the file could possibly hold.
	perNode := int64(4 + 2 + 4*int64(hdr.Dim) + 4*(1+2*int64(hdr.M)))
	if int64(hdr.Nodes)*perNode > size {
		return bad("%d nodes of dimension %d cannot fit in %d bytes", hdr.Nodes, hdr.Dim, size)
	}
	return nil
}

// snapshotReader reads fixed-size sections and hashes every byte it hands out.
type snapshotReader struct {
	r   io.Reader
	crc hash.Hash32
	buf []byte
	err error
}

func (r *snapshotReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.crc.Write(p[:n])
	return n, err
}

func (r *snapshotReader) fail() error {
	if errors.Is(r.err, io.EOF) || errors.Is(r.err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: truncated: %w", ErrBadSnapshot, io.ErrUnexpectedEOF)
	}
	return fmt.Errorf("%w: %w", ErrBadSnapshot, r.err)
}

func (r *snapshotReader) bytes(p []byte) {
	if r.err == nil {
		_, r.err = io.ReadFull(r, p)
	}
}

func (r *snapshotReader) fill(n int) []byte {
	if cap(r.buf) < n {
		r.buf = make([]byte, ioChunk)
	}
	r.buf = r.buf[:n]
	r.bytes(r.buf)
	return r.buf
}

func (r *snapshotReader) u32s(v []uint32) {
	for len(v) > 0 && r.err == nil {
		n := min(len(v), ioChunk/4)
		b := r.fill(4 * n)
		for i := range v[:n] {
			v[i] = binary.LittleEndian.Uint32(b[4*i:])
		}
		v = v[n:]
	}
}

func (r *snapshotReader) f32s(v []float32) {
	for len(v) > 0 && r.err == nil {
		n := min(len(v), ioChunk/4)
		b := r.fill(4 * n)
		for i := range v[:n] {
			v[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
		}
		v = v[n:]
	}
}
