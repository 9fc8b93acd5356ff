package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

// maxImageBytes bounds what the CLI reads for one photo; the server has its own, usually
// smaller, limit and rejects bigger photos with a clear status.
const maxImageBytes = 64 << 20

// imageLoader reads photos from disk or over HTTP.
type imageLoader struct {
	http *http.Client
}

func newImageLoader(timeout time.Duration) *imageLoader {
	if timeout <= 0 {
		timeout = time.Minute
	}
	return &imageLoader{http: &http.Client{Timeout: timeout}}
}

// load returns the bytes of a local path or an http(s) URL.
func (l *imageLoader) load(ctx context.Context, ref string) ([]byte, error) {
	if !isRemoteImage(ref) {
		f, err := os.Open(ref)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		return readLimited(f, ref)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, ref, nil)
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", ref, err)
	}
	resp, err := l.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetch %s: HTTP %s", ref, resp.Status)
	}
	return readLimited(resp.Body, ref)
}

func readLimited(r io.Reader, name string) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxImageBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	if len(b) > maxImageBytes {
		return nil, fmt.Errorf("%s is larger than %d MiB", name, maxImageBytes>>20)
	}
	if len(b) == 0 {
		return nil, fmt.Errorf("%s is empty", name)
	}
	return b, nil
}
