package server

import (
	"sync"
	"time"

	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "lookalike/proto/lookalike/v1"
)

// recentErrorsKept is how many failed calls Stats reports.
const recentErrorsKept = 20

// recentErrors remembers the last failed or refused calls for Stats (an operator's status
// page): a fixed ring, newest last.
type recentErrors struct {
	mu   sync.Mutex
	ring []*pb.CallError
	next int // where the next error goes once the ring is full
}

func newRecentErrors() *recentErrors { return &recentErrors{} }

// add records a failed call.
func (r *recentErrors) add(method string, c codes.Code, msg string, at time.Time) {
	e := &pb.CallError{Method: method, Code: code.Code(c).String(), Message: msg, At: timestamppb.New(at)}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.ring) < recentErrorsKept {
		r.ring = append(r.ring, e)
		return
	}
	r.ring[r.next] = e
	r.next = (r.next + 1) % recentErrorsKept
}

// list returns the recorded errors, newest first.
func (r *recentErrors) list() []*pb.CallError {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*pb.CallError, 0, len(r.ring))
	for i := range r.ring {
		// The newest is just before next (or the last appended while filling).
		j := (r.next - 1 - i + 2*len(r.ring)) % len(r.ring)
		out = append(out, r.ring[j])
	}
	return out
}
