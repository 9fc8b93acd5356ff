package index

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
)

// Snapshot file layout, version 4, all integers little endian:
//
//	magic "LKHNSW\r\n" | version u32 | header (see snapshotHeader) |
//	quantisation header (see snapshotHeaderV3) |
//	tag length u32 | tag bytes |
//	keys [n]u32 | levels [n]u8 | deleted [n]u8 |
//	if flags has snapQuantizer: offsets [dim]f32 | scales [dim]f32 |
//	if flags has snapFullVectors: vectors [n*dim]f32 |
//	if flags has snapDeadVectors: vectors of the tombstoned nodes, in node order [t*dim]f32 |
//	if flags has snapQuantizer: codes [n*codeLen(dim)]u8 | code terms [n*2]f32 |
//	layer-0 links [n*(1+2M)]u32 | upper links: for each node with level > 0, [level*(1+M)]u32 |
//	CRC-32C of every byte before it, u32
//
// Version 3 is the same without snapDeadVectors. Version 2 is the same without the
// quantisation header and with the vectors always
// present (it loads as QuantizeNone); version 1 is version 2 without the tag (it loads with
// an empty tag). The store sequence number in the header tells the catalogue which changes
// to replay; the tag says which history those sequence numbers belong to.
const (
	snapshotMagic     = "LKHNSW\r\n"
	snapshotVersion   = 4
	snapshotVersionV3 = 3
	snapshotVersionV2 = 2
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
	// VectorsOutside, on a save, leaves the live nodes' float32 vectors out of the file:
	// the caller keeps them (the catalogue's store does) and gives them back to the load
	// through LoadOptions.Vectors, which is then required. Tombstones' vectors, which only the
	// graph still has and which keep routing searches, stay in the file. Snapshots are then
	// a fraction of the size, so that saving them costs the disk, and the writes sharing it,
	// little. A load reports whether the file was saved so.
	VectorsOutside bool
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

// snapshotHeaderV3 follows snapshotHeader from version 3 on.
type snapshotHeaderV3 struct {
	Quantize, Flags, Rerank uint32
}

// snapshotHeaderV3 flags: which optional sections the file holds.
const (
	snapFullVectors = 1 << iota
	snapQuantizer
	snapDeadVectors // float32 graphs saved with VectorsOutside
)

// LoadOptions are what a loaded index needs that its snapshot does not record.
type LoadOptions struct {
	// Logger becomes the loaded index's Config.Logger; nil discards its logs.
	Logger *slog.Logger
	// Vectors supplies live keys' vectors the file does not hold: it is required to load a
	// snapshot saved with SnapshotInfo.VectorsOutside or by an index that had a source. A
	// float32 graph copies them in; for a QuantizeInt8 one it becomes Config.Vectors (the
	// full vectors of a file that has them are then dropped after loading).
	Vectors func(Key) []float32
}

// Save writes the graph to path atomically (temporary file, fsync, rename, fsync of the
// directory), tagged with the store sequence number seq it reflects and an empty tag.
// Searches continue meanwhile; writers wait only while the graph is frozen (its deleted flags
// copied), not while it is written or made durable. The file is handed to the kernel's
// writeback as it is written (writeBehind), so that the store's own fsyncs do not queue
// behind the whole snapshot.
func (h *HNSW) Save(path string, seq uint64) error {
	return h.SaveSnapshot(path, SnapshotInfo{Seq: seq})
}

// SaveSnapshot is Save with the whole SnapshotInfo, tag included. Two saves to one path at
// once each leave a whole snapshot, either one.
func (h *HNSW) SaveSnapshot(path string, info SnapshotInfo) (err error) {
	if len(info.Tag) > MaxSnapshotTag {
		return fmt.Errorf("index: save snapshot: tag of %d bytes, at most %d", len(info.Tag), MaxSnapshotTag)
	}
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
	if err := h.encodeTo(tmp, info); err != nil {
		return fmt.Errorf("index: save snapshot: %w", err)
	}
	if h.savedEncoded != nil {
		h.savedEncoded()
	}
	// The file's content is final: the fsync, which can take long for a large graph on a
	// slow disk, runs with writers going again.
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

// encodeTo writes the whole snapshot, checksum included, to f. Writers are held back only
// while the graph is frozen (a copy of its flags and block lists); what they change after
// that in the frozen nodes, their links, is kept as it was for the save (frozen.keep).
// Saves run one at a time.
func (h *HNSW) encodeTo(f *os.File, info SnapshotInfo) error {
	h.saveMu.Lock()
	defer h.saveMu.Unlock()
	h.mu.Lock()
	fz := h.g.freeze(h.inserted.Load())
	h.saving = fz
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		h.saving = nil
		h.mu.Unlock()
	}()
	if h.savedFrozen != nil {
		h.savedFrozen()
	}
	bw := bufio.NewWriterSize(&writeBehind{f: f}, 1<<20)
	crc := crc32.New(castagnoli)
	w := &snapshotWriter{w: io.MultiWriter(bw, crc)}
	h.encode(w, fz, info)
	if w.err != nil {
		return w.err
	}
	var sum [4]byte
	binary.LittleEndian.PutUint32(sum[:], crc.Sum32())
	if _, err := bw.Write(sum[:]); err != nil {
		return err
	}
	return bw.Flush()
}

// frozen is a graph as it was at one moment, for a snapshot. Writers change a published
// node only in its links and its deleted flag (and, once, the codes when the quantiser is
// trained, which a frozen graph without a quantiser does not write). The flags are copied
// at the freeze; links are kept copy-on-write: a writer about to change a frozen node's
// links first keeps the old ones here, so the freeze costs no pass over the links.
// Everything else is shared with the live graph: vectors, codes, keys and levels
// (append-only) and its blocks, whose list is copied because growing the graph replaces the
// last block.
type frozen struct {
	g        graph  // a shallow copy: n, counters, block lists and deleted flags its own
	live     *graph // the graph frozen, where unchanged links are read
	inserted uint64
	// kept0 and keptU hold, by node, the layer-0 slot and the upper links as they were at
	// the freeze, for the frozen nodes a writer has changed since. Guarded by HNSW.mu.
	kept0, keptU map[uint32][]uint32
}

// freeze takes a frozen view of g; the caller holds HNSW.mu for writing.
func (g *graph) freeze(inserted uint64) *frozen {
	fz := &frozen{g: *g, live: g, inserted: inserted, kept0: map[uint32][]uint32{}, keptU: map[uint32][]uint32{}}
	c := &fz.g
	c.byKey = nil // not needed for writing, and it is not a copy
	c.elems = slices.Clone(g.elems)
	c.full = slices.Clone(g.full)
	c.keys = g.keys[:g.n:g.n]
	c.levels = g.levels[:g.n:g.n]
	c.deleted = slices.Clone(g.deleted[:g.n])
	c.upper = g.upper[:g.n:g.n]
	return fz
}

// keep saves node's links on level lvl as they are, before a writer changes them, if the
// node is one of fz's; the caller holds HNSW.mu for writing.
func (fz *frozen) keep(g *graph, node uint32, lvl int) {
	if g != fz.live || int(node) >= fz.g.n {
		return
	}
	if lvl == 0 {
		if _, ok := fz.kept0[node]; !ok {
			fz.kept0[node] = slices.Clone(g.links0Slot(node))
		}
		return
	}
	if _, ok := fz.keptU[node]; !ok {
		fz.keptU[node] = slices.Clone(g.upper[node])
	}
}

// linkBatch is how many nodes' links the encoder copies per hold of the read lock.
const linkBatch = 4096

// frozenLinks appends the links of nodes [lo, hi) as they were at the freeze: layer-0
// slots, or with upper the upper links of those that have any.
func (h *HNSW) frozenLinks(dst []uint32, fz *frozen, lo, hi int, upper bool) []uint32 {
	h.mu.RLock()
	defer h.mu.RUnlock()
	for node := uint32(lo); node < uint32(hi); node++ {
		switch {
		case !upper:
			if k, ok := fz.kept0[node]; ok {
				dst = append(dst, k...)
			} else {
				dst = append(dst, fz.live.links0Slot(node)...)
			}
		case fz.g.levels[node] == 0:
		default:
			if k, ok := fz.keptU[node]; ok {
				dst = append(dst, k...)
			} else {
				dst = append(dst, fz.live.upper[node]...)
			}
		}
	}
	return dst
}

// encode streams a frozen graph.
func (h *HNSW) encode(w *snapshotWriter, fz *frozen, info SnapshotInfo) {
	g := &fz.g
	w.bytes([]byte(snapshotMagic))
	w.u32s([]uint32{snapshotVersion})
	hdr := snapshotHeader{
		Metric: uint32(h.cfg.Metric), Dim: uint32(h.dim), M: uint32(h.cfg.M),
		EFConstruction: uint32(h.cfg.EFConstruction), EFSearch: uint32(h.cfg.EFSearch),
		Seed: h.cfg.Seed, MaxTombstoneFraction: h.cfg.MaxTombstoneFraction, Seq: info.Seq,
		Inserted: fz.inserted, Nodes: uint32(g.n), Tombstones: uint32(g.tombstones),
		Entry: g.entry, MaxLevel: int32(g.maxLevel),
	}
	ext := snapshotHeaderV3{Quantize: uint32(h.cfg.Quantize), Rerank: uint32(h.cfg.Rerank)}
	switch {
	case !g.codes && info.VectorsOutside:
		ext.Flags |= snapDeadVectors
	case !g.codes:
		ext.Flags |= snapFullVectors
	case g.full != nil && !(info.VectorsOutside && g.quant != nil):
		// Codes before training are no vectors: the full ones stay in the file.
		ext.Flags |= snapFullVectors
	}
	if g.quant != nil {
		ext.Flags |= snapQuantizer
	}
	if w.err == nil {
		w.err = binary.Write(w.w, binary.LittleEndian, &hdr)
	}
	if w.err == nil {
		w.err = binary.Write(w.w, binary.LittleEndian, &ext)
	}
	w.u32s([]uint32{uint32(len(info.Tag))})
	w.bytes([]byte(info.Tag))
	w.u32s(g.keys)
	w.bytes(g.levels)
	flags := make([]byte, g.n)
	for i, d := range g.deleted {
		if d {
			flags[i] = 1
		}
	}
	w.bytes(flags)
	if g.quant != nil {
		w.f32s(g.quant.offset)
		w.f32s(g.quant.scale)
	}
	if ext.Flags&snapFullVectors != 0 {
		for node := range g.n {
			w.f32s(g.fullVec(uint32(node)))
		}
	}
	if ext.Flags&snapDeadVectors != 0 {
		for node := range g.n {
			if g.deleted[node] {
				w.f32s(g.fullVec(uint32(node)))
			}
		}
	}
	if g.quant != nil {
		for node := range g.n {
			w.bytes(g.codesOf(uint32(node)))
		}
		for node := range g.n {
			w.f32s(g.scalars(uint32(node))[:])
		}
	}
	var buf []uint32
	for _, upper := range []bool{false, true} {
		for lo := 0; lo < g.n; lo += linkBatch {
			buf = h.frozenLinks(buf[:0], fz, lo, min(g.n, lo+linkBatch), upper)
			w.u32s(buf)
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
// rebuilds from the store. It is LoadSnapshotWith with no options.
func LoadSnapshot(path string) (*HNSW, SnapshotInfo, error) {
	return LoadSnapshotWith(path, LoadOptions{})
}

// LoadSnapshotWith is LoadSnapshot with the options a snapshot cannot carry. A file saved
// with a Config.Vectors source and loaded without one is an error wrapping ErrNoVectors.
func LoadSnapshotWith(path string, opt LoadOptions) (*HNSW, SnapshotInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, SnapshotInfo{}, fmt.Errorf("index: load snapshot: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, SnapshotInfo{}, fmt.Errorf("index: load snapshot: %w", err)
	}
	h, info, err := decodeSnapshot(bufio.NewReaderSize(f, 1<<20), st.Size(), opt)
	if err != nil {
		return nil, SnapshotInfo{}, fmt.Errorf("index: load snapshot %s: %w", path, err)
	}
	return h, info, nil
}

func decodeSnapshot(src io.Reader, size int64, opt LoadOptions) (*HNSW, SnapshotInfo, error) {
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
	if version[0] < snapshotVersionV1 || version[0] > snapshotVersion {
		return nil, info, fmt.Errorf("%w: %d (this build reads %d to %d)", ErrBadVersion, version[0], snapshotVersionV1, snapshotVersion)
	}
	var hdr snapshotHeader
	if r.err == nil {
		r.err = binary.Read(r, binary.LittleEndian, &hdr)
	}
	ext := snapshotHeaderV3{Flags: snapFullVectors}
	if version[0] >= snapshotVersionV3 && r.err == nil {
		r.err = binary.Read(r, binary.LittleEndian, &ext)
	}
	if r.err != nil {
		return nil, info, r.fail()
	}
	if err := hdr.validate(size, ext); err != nil {
		return nil, info, err
	}
	hasFull, hasQuant := ext.Flags&snapFullVectors != 0, ext.Flags&snapQuantizer != 0
	hasDead := ext.Flags&snapDeadVectors != 0
	if !hasFull && opt.Vectors == nil {
		return nil, info, ErrNoVectors
	}
	info.VectorsOutside = !hasFull
	info.Seq = hdr.Seq
	if version[0] >= snapshotVersionV2 {
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
		Logger: opt.Logger, Quantize: Quantization(ext.Quantize), Rerank: int(ext.Rerank), Vectors: opt.Vectors,
	}
	h := NewHNSW(int(hdr.Dim), cfg)
	h.inserted.Store(hdr.Inserted)
	g := h.g
	n := int(hdr.Nodes)
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
	var quant *quantizer
	if hasQuant {
		offset, scale := make([]float32, g.dim), make([]float32, g.dim)
		r.f32s(offset)
		r.f32s(scale)
		if r.err != nil {
			return nil, info, r.fail()
		}
		for d := range g.dim {
			o, sc := float64(offset[d]), float64(scale[d])
			if math.IsNaN(o) || math.IsInf(o, 0) || !(sc > 0) || math.IsInf(sc, 0) || math.IsInf(1/sc, 0) {
				return nil, info, fmt.Errorf("%w: quantiser range of dimension %d is offset %v, scale %v", ErrBadSnapshot, d, o, sc)
			}
		}
		quant = quantizerFrom(offset, scale)
	}
	// Blocks as large as the nodes need: a later insertion grows the last one.
	for b := 0; b*blockSize < n; b++ {
		rows := min(blockSize, n-b*blockSize)
		g.elems = append(g.elems, g.newElemBlock(rows))
		if g.codes && hasFull {
			g.full = append(g.full, make([]float32, rows*g.dim))
		}
	}
	g.n = n
	if hasFull {
		for node := range n {
			if g.codes {
				off := (node & blockMask) * g.dim
				r.f32s(g.full[node>>blockShift][off : off+g.dim])
			} else {
				r.f32s(g.fvec(uint32(node)))
			}
		}
	}
	if hasDead {
		for node := range n {
			if g.deleted[node] {
				r.f32s(g.fvec(uint32(node)))
			}
		}
	}
	if hasQuant {
		for node := range n {
			r.bytes(g.codesOf(uint32(node)))
		}
		for node := range n {
			r.f32s(g.scalars(uint32(node))[:])
		}
	}
	for node := range n {
		r.u32s(g.links0Slot(uint32(node)))
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
				count = g.links0Slot(uint32(node))[0]
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
		if hasQuant {
			for _, x := range g.scalars(uint32(node)) {
				if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
					return nil, info, fmt.Errorf("%w: node %d has code terms %v", ErrBadSnapshot, node, *g.scalars(uint32(node)))
				}
			}
			for _, c := range g.codesOf(uint32(node))[g.dim:] {
				if c != 0 {
					return nil, info, fmt.Errorf("%w: node %d has codes in its padding", ErrBadSnapshot, node)
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
	if !g.codes {
		for node := range n {
			if !hasFull && !g.deleted[node] {
				continue // filled from the source below
			}
			if err := checkVector(g.dim, g.fvec(uint32(node))); err != nil {
				return nil, info, fmt.Errorf("%w: node %d: %w", ErrBadSnapshot, node, err)
			}
		}
	}
	if hasDead {
		// A live key the source no longer has was deleted after the save; its deletion is
		// among the changes the caller replays next. Until then its node keeps a zero vector.
		for node := range n {
			if g.deleted[node] {
				continue
			}
			if v := opt.Vectors(g.keys[node]); len(v) == g.dim {
				copy(g.fvec(uint32(node)), v)
			}
		}
	}
	g.quant = quant
	if g.codes && g.src != nil && g.quant != nil {
		// The source supplies full vectors from now on.
		g.full = nil
	}
	return h, info, nil
}

func (hdr snapshotHeader) validate(size int64, ext snapshotHeaderV3) error {
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
	case !Quantization(ext.Quantize).valid():
		return bad("quantisation %d", ext.Quantize)
	case ext.Flags&^(snapFullVectors|snapQuantizer|snapDeadVectors) != 0:
		return bad("section flags %#x", ext.Flags)
	case Quantization(ext.Quantize) == QuantizeNone && ext.Flags != snapFullVectors && ext.Flags != snapDeadVectors:
		return bad("section flags %#x without quantisation", ext.Flags)
	case Quantization(ext.Quantize) != QuantizeNone && (ext.Flags&snapDeadVectors != 0 || ext.Flags == 0):
		return bad("section flags %#x with quantisation", ext.Flags)
	case ext.Rerank > 1<<20:
		return bad("rerank %d", ext.Rerank)
	}
	// Refuse to allocate more than the file could possibly hold.
	perNode := int64(4 + 2 + 4*(1+2*int64(hdr.M)))
	if ext.Flags&snapFullVectors != 0 {
		perNode += 4 * int64(hdr.Dim)
	}
	if ext.Flags&snapQuantizer != 0 {
		perNode += int64(hdr.Dim) + 8
	}
	fixed := int64(0)
	if ext.Flags&snapDeadVectors != 0 {
		fixed = int64(hdr.Tombstones) * 4 * int64(hdr.Dim)
	}
	if int64(hdr.Nodes)*perNode+fixed > size {
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
