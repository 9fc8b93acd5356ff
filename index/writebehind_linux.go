package index

import "golang.org/x/sys/unix"

// handOver starts writeback of what was written since the last call and waits for the
// range handed over the time before. Errors are left to the final fsync, which reports
// any that matter.
func (w *writeBehind) handOver() {
	fd := int(w.f.Fd())
	_ = unix.SyncFileRange(fd, w.handed, w.written-w.handed, unix.SYNC_FILE_RANGE_WRITE)
	if w.waited < w.handed {
		_ = unix.SyncFileRange(fd, w.waited, w.handed-w.waited,
			unix.SYNC_FILE_RANGE_WAIT_BEFORE|unix.SYNC_FILE_RANGE_WRITE|unix.SYNC_FILE_RANGE_WAIT_AFTER)
	}
	w.waited, w.handed = w.handed, w.written
}
