package weaviate

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"

	"lookalike/catalog"
)

// client speaks Weaviate's REST and GraphQL API to the nodes of one cluster. Any node
// coordinates any request, so a request goes to the next node in turn and, when a node
// cannot be reached, to the others: a node down costs a failed connection, not an error.
type client struct {
	nodes []*url.URL
	http  *http.Client
	next  atomic.Uint32
}

// statusError is a reply other than 2xx.
type statusError struct {
	Method, Path string
	Status       int
	Body         string
}

func (e *statusError) Error() string {
	return fmt.Sprintf("%s %s: HTTP %d: %s", e.Method, e.Path, e.Status, e.Body)
}

// maxReplyBytes bounds a reply read into memory; search replies of a few thousand photos
// with vectors are well below it.
const maxReplyBytes = 256 << 20

// do sends one request with a JSON body (nil for none) and decodes a JSON reply into out
// (nil to discard it). Query values go in query.
func (c *client) do(ctx context.Context, method, path string, query url.Values, body, out any) error {
	var payload []byte
	if body != nil {
		var err error
		if payload, err = json.Marshal(body); err != nil {
			return fmt.Errorf("encode %s %s: %w", method, path, err)
		}
	}
	start := int(c.next.Add(1))
	var lastErr error
	for i := range c.nodes {
		node := c.nodes[(start+i)%len(c.nodes)]
		u := *node
		u.Path = strings.TrimSuffix(u.Path, "/") + path
		u.RawQuery = query.Encode()
		req, err := http.NewRequestWithContext(ctx, method, u.String(), bytes.NewReader(payload))
		if err != nil {
			return err
		}
		if payload != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := c.http.Do(req)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			lastErr = err // unreachable node: try the next one
			continue
		}
		data, err := io.ReadAll(io.LimitReader(resp.Body, maxReplyBytes))
		resp.Body.Close()
		if err != nil {
			lastErr = err
			continue
		}
		if resp.StatusCode < 200 || resp.StatusCode > 299 {
			se := &statusError{Method: method, Path: path, Status: resp.StatusCode, Body: strings.TrimSpace(string(data))}
			if resp.StatusCode >= 500 {
				// The cluster's own trouble (too few replicas for the consistency level,
				// say): worth trying again, not the request's fault.
				return fmt.Errorf("%w: %w", catalog.ErrUnavailable, se)
			}
			return se
		}
		if out == nil || len(data) == 0 {
			return nil
		}
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("decode %s %s: %w", method, path, err)
		}
		return nil
	}
	return fmt.Errorf("%w: no Weaviate node answered %s %s: %w", catalog.ErrUnavailable, method, path, lastErr)
}

// isStatus reports whether err is a reply with that HTTP status.
func isStatus(err error, status int) bool {
	var se *statusError
	return errors.As(err, &se) && se.Status == status
}

// graphQL runs a GraphQL query and decodes its data into out; GraphQL errors are errors.
func (c *client) graphQL(ctx context.Context, query string, out any) error {
	var reply struct {
		Data   json.RawMessage `json:"data"`
		Errors []struct {
			Message string `json:"message"`
		} `json:"errors"`
	}
	if err := c.do(ctx, http.MethodPost, "/v1/graphql", nil, map[string]string{"query": query}, &reply); err != nil {
		return err
	}
	if len(reply.Errors) > 0 {
		msgs := make([]string, len(reply.Errors))
		for i, e := range reply.Errors {
			msgs[i] = e.Message
		}
		return fmt.Errorf("graphql: %s", strings.Join(msgs, "; "))
	}
	return json.Unmarshal(reply.Data, out)
}
