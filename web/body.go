package web

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"google.golang.org/grpc/codes"
)

// readBody reads a request body whole before the service is called, as the service reads a
// request: the token is checked first (an upload without it is refused unread), its bytes
// are reserved in the server's request budget (released by the returned func), it may be at
// most limit bytes, and it must arrive within the server's idle timeout.
func (f *frontEnd) readBody(w http.ResponseWriter, r *http.Request, rt route, limit int64) ([]byte, func(), error) {
	if err := f.gw.Authorize(rt.fullMethod, r.Header); err != nil {
		return nil, nil, err
	}
	if r.ContentLength > limit {
		return nil, nil, tooLarge(limit)
	}
	reserve := limit
	if r.ContentLength >= 0 {
		reserve = r.ContentLength
	}
	release, err := f.gw.Reserve(rt.fullMethod, reserve)
	if err != nil {
		return nil, nil, err
	}
	rc := http.NewResponseController(w)
	if f.gw.IdleTimeout > 0 {
		_ = rc.SetReadDeadline(time.Now().Add(f.gw.IdleTimeout))
		// Cleared once the body is in: a slow answer must not be cut off by it.
		defer func() { _ = rc.SetReadDeadline(time.Time{}) }()
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		release()
		return nil, nil, bodyError(err, limit, f.gw.IdleTimeout)
	}
	return body, release, nil
}

// bodyError says why a request body could not be read.
func bodyError(err error, limit int64, idle time.Duration) error {
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return tooLarge(limit)
	case errors.Is(err, os.ErrDeadlineExceeded):
		return httpStatus(http.StatusRequestTimeout, codes.DeadlineExceeded, "the request did not arrive within %v", idle)
	}
	return httpStatus(http.StatusBadRequest, codes.InvalidArgument, "reading the request: %v", err)
}

// tooLarge refuses a request over the size limit: 413, with INVALID_ARGUMENT (sending it
// again cannot help).
func tooLarge(limit int64) error {
	return httpStatus(http.StatusRequestEntityTooLarge, codes.InvalidArgument,
		"the request is over the server's limit of %.1f MiB (--max-message-mib, for the photo)", float64(limit)/(1<<20))
}

// serveJSON passes a unary JSON request to the gateway once its body is in.
func (f *frontEnd) serveJSON(w http.ResponseWriter, r *http.Request, rt route) {
	body, release, err := f.readBody(w, r, rt, f.jsonLimit)
	if err != nil {
		f.writeError(w, r, err)
		return
	}
	defer release()
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.ContentLength = int64(len(body))
	f.gwmux.ServeHTTP(w, r)
}

// serveStream passes a client-streaming request (newline-delimited JSON messages) to the
// gateway, which reads one message at a time: each line may be at most the JSON limit, and
// the stream holds one such message in the request budget while it runs. The service
// counts the messages it holds itself and ends a stream that goes idle.
func (f *frontEnd) serveStream(w http.ResponseWriter, r *http.Request, rt route) {
	if err := f.gw.Authorize(rt.fullMethod, r.Header); err != nil {
		f.writeError(w, r, err)
		return
	}
	release, err := f.gw.Reserve(rt.fullMethod, f.jsonLimit)
	if err != nil {
		f.writeError(w, r, err)
		return
	}
	defer release()
	r.Body = &lineLimitReader{r: bufio.NewReader(r.Body), c: r.Body, limit: f.jsonLimit}
	f.gwmux.ServeHTTP(w, r)
}

// lineLimitReader fails a read once a line grows past limit bytes.
type lineLimitReader struct {
	r     *bufio.Reader
	c     io.Closer
	limit int64
	line  int64 // bytes of the current line so far
}

func (l *lineLimitReader) Read(p []byte) (int, error) {
	n, err := l.r.Read(p)
	for _, b := range p[:n] {
		if b == '\n' {
			l.line = 0
			continue
		}
		l.line++
		if l.line > l.limit {
			return 0, fmt.Errorf("a line of the stream is over %d bytes: one message per line, each at most the server's limit", l.limit)
		}
	}
	return n, err
}

func (l *lineLimitReader) Close() error { return l.c.Close() }
