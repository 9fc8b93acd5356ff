package catalog

import (
	"context"
	"fmt"
	"io"
	"time"
)

// BackupInfo describes the state a backup captured.
type BackupInfo struct {
	// Bytes is the size of the copy of the store file.
	Bytes int64
	// Seq is the store sequence number in the copy: every write acknowledged before the
	// backup began is inside.
	Seq uint64
	// Products and Photos count what the copy holds.
	Products int
	Photos   int
}

// Backup writes a consistent copy of the store file to w while the catalogue keeps serving:
// it shows the store as it was when Backup began, and writes made meanwhile proceed but are
// not in it. The graph snapshot is derived data and is not part of a backup. Cancelling ctx
// stops the copy at the next write to w. Close waits for a running backup.
func (c *Catalog) Backup(ctx context.Context, w io.Writer) (BackupInfo, error) {
	if err := c.enter(); err != nil {
		return BackupInfo{}, err
	}
	defer c.life.RUnlock()
	if err := ctx.Err(); err != nil {
		return BackupInfo{}, err
	}
	b, ok := c.backend.(backuper)
	if !ok {
		return BackupInfo{}, fmt.Errorf("catalog: backup: %w (back the backend up with its own tools)", ErrUnsupported)
	}
	start := time.Now()
	info, err := b.Backup(ctx, w)
	if err != nil {
		return BackupInfo{}, fmt.Errorf("catalog: backup: %w", err)
	}
	c.log.Info("backup written", "bytes", info.Bytes, "seq", info.Seq, "products", info.Products, "photos", info.Photos,
		"took", time.Since(start).Round(time.Millisecond))
	return info, nil
}

// ctxWriter fails once ctx is done, so a cancelled caller does not keep the store's read
// transaction open until the whole file has been copied.
type ctxWriter struct {
	ctx context.Context
	w   io.Writer
}

func (cw ctxWriter) Write(p []byte) (int, error) {
	if err := cw.ctx.Err(); err != nil {
		return 0, err
	}
	return cw.w.Write(p)
}
