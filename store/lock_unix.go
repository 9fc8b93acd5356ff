//go:build unix

package store

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// lockIfExists takes the same exclusive lock bbolt takes, without waiting, so Restore cannot
// replace a file a running store holds. A missing file needs no lock.
func lockIfExists(path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if errors.Is(err, os.ErrNotExist) {
		return func() {}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s is open in a running store", ErrInUse, path)
		}
		return nil, fmt.Errorf("store: lock %s: %w", path, err)
	}
	return func() { _ = f.Close() }, nil
}
