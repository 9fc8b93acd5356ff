package server

import (
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
)

// TestRecentErrors: the ring keeps the last recentErrorsKept failures, newest first.
func TestRecentErrors(t *testing.T) {
	for _, n := range []int{0, 1, recentErrorsKept - 1, recentErrorsKept, recentErrorsKept + 7, 3 * recentErrorsKept} {
		r := newRecentErrors()
		start := time.Unix(1_700_000_000, 0)
		for i := range n {
			r.add(fmt.Sprint("M", i), codes.InvalidArgument, "bad", start.Add(time.Duration(i)*time.Second))
		}
		got := r.list()
		if want := min(n, recentErrorsKept); len(got) != want {
			t.Fatalf("%d errors: kept %d, want %d", n, len(got), want)
		}
		for j, e := range got {
			if want := fmt.Sprint("M", n-1-j); e.GetMethod() != want || e.GetCode() != "INVALID_ARGUMENT" {
				t.Errorf("%d errors: #%d is %s %s, want %s INVALID_ARGUMENT", n, j, e.GetMethod(), e.GetCode(), want)
			}
		}
	}
	var none *recentErrors
	if none.list() != nil {
		t.Error("a nil ring lists something")
	}
}
