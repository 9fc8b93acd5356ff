package index

import "os"

// writeBehindChunk is how much of a snapshot is written between two hand-overs to the
// kernel's writeback (see writeBehind).
const writeBehindChunk = 8 << 20

// writeBehind writes a large file and has the kernel write it out a chunk at a time while it
// is still being written, waiting each time for the chunk before the last to reach the disk.
// Without it a snapshot leaves hundreds of megabytes of dirty pages for its final fsync,
// and every small fsync of the store that comes meanwhile (each acknowledged write's) queues
// behind them; with it the disk sees a steady stream and the final fsync has little left to
// do. RocksDB's bytes_per_sync does the same. Where the system has no such call
// (writebehind_other.go) it only writes.
type writeBehind struct {
	f *os.File
	// written counts the bytes written; handed and waited the bytes handed to writeback
	// and waited for.
	written, handed, waited int64
}

func (w *writeBehind) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	w.written += int64(n)
	if err == nil && w.written-w.handed >= writeBehindChunk {
		w.handOver()
	}
	return n, err
}
