package server

import (
	"context"
	"crypto/subtle"
	"log/slog"
	"runtime/debug"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// healthPrefix marks the methods that stay open to everyone and are never shed: load
// balancers and orchestrators must always be able to ask.
const healthPrefix = "/grpc.health.v1.Health/"

func isHealth(fullMethod string) bool { return strings.HasPrefix(fullMethod, healthPrefix) }

// methodName shortens "/lookalike.v1.Lookalike/Upsert" to "Upsert" for labels and logs.
func methodName(fullMethod string) string {
	if i := strings.LastIndexByte(fullMethod, '/'); i >= 0 {
		return fullMethod[i+1:]
	}
	return fullMethod
}

// recoverer turns a panic in a handler into INTERNAL for that one call.
type recoverer struct{ log *slog.Logger }

func (r recoverer) caught(method string, p any) error {
	r.log.Error("panic in handler", "method", method, "panic", p, "stack", string(debug.Stack()))
	return status.Error(codes.Internal, internalMessage)
}

func (r recoverer) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (resp any, err error) {
	defer func() {
		if p := recover(); p != nil {
			resp, err = nil, r.caught(info.FullMethod, p)
		}
	}()
	return h(ctx, req)
}

func (r recoverer) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = r.caught(info.FullMethod, p)
		}
	}()
	return h(srv, ss)
}

// authenticator demands "authorization: Bearer <token>" on everything but health. The
// limiter's tap asks it when a call's headers arrive, before its message is read.
type authenticator struct{ token []byte }

func (a authenticator) check(md metadata.MD) error {
	for _, v := range md.Get("authorization") {
		scheme, tok, ok := strings.Cut(v, " ")
		if ok && strings.EqualFold(scheme, "bearer") &&
			subtle.ConstantTimeCompare([]byte(strings.TrimSpace(tok)), a.token) == 1 {
			return nil
		}
	}
	return status.Error(codes.Unauthenticated, "missing or wrong bearer token")
}

// observer records every call's code and latency, and logs failures.
type observer struct {
	log     *slog.Logger
	metrics *metrics
	recent  *recentErrors // nil: not remembered
}

func (o observer) done(fullMethod string, start time.Time, err error) {
	code := status.Code(err)
	method := methodName(fullMethod)
	elapsed := time.Since(start)
	o.metrics.requests.WithLabelValues(method, code.String()).Inc()
	o.metrics.latency.WithLabelValues(method, code.String()).Observe(elapsed.Seconds())
	switch code {
	case codes.OK, codes.NotFound, codes.Canceled:
		o.log.Debug("call", "method", method, "code", code.String(), "took", elapsed)
	case codes.Internal, codes.Unknown, codes.DataLoss:
		o.log.Error("call failed", "method", method, "code", code.String(), "took", elapsed, "err", err)
	default:
		o.log.Info("call failed", "method", method, "code", code.String(), "took", elapsed, "err", err)
	}
	switch code {
	case codes.OK, codes.NotFound, codes.Canceled:
	default:
		if o.recent != nil && !isHealth(fullMethod) {
			o.recent.add(method, code, status.Convert(err).Message(), time.Now())
		}
	}
}

func (o observer) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	start := time.Now()
	resp, err := h(ctx, req)
	o.done(info.FullMethod, start, err)
	return resp, err
}

func (o observer) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	start := time.Now()
	err := h(srv, ss)
	o.done(info.FullMethod, start, err)
	return err
}
