package control

import (
	"context"
	"testing"

	"go.etcd.io/raft/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// A request raft dropped is sent again until it goes through; any other
// error (it may have been applied) comes back at once.
func TestRetryDropped(t *testing.T) {
	dropped := status.Error(codes.Unknown, raft.ErrProposalDropped.Error())
	other := status.Error(codes.Unavailable, "etcdserver: leader changed")
	for _, tc := range []struct {
		name    string
		answers []error
		calls   int
		want    error
	}{
		{"dropped twice, then applied", []error{dropped, dropped, nil}, 3, nil},
		{"another error", []error{other, nil}, 1, other},
		{"dropped, then another error", []error{dropped, other, nil}, 2, other},
	} {
		calls := 0
		invoker := func(context.Context, string, any, any, *grpc.ClientConn, ...grpc.CallOption) error {
			calls++
			return tc.answers[calls-1]
		}
		err := retryDropped(context.Background(), "/etcdserverpb.KV/Txn", nil, nil, nil, invoker)
		if err != tc.want || calls != tc.calls {
			t.Errorf("%s: %d calls, error %v; want %d calls, error %v", tc.name, calls, err, tc.calls, tc.want)
		}
	}
	// Bounded: a proposal dropped again and again is returned in the end.
	calls := 0
	err := retryDropped(context.Background(), "/etcdserverpb.KV/Txn", nil, nil, nil, func(context.Context, string, any, any, *grpc.ClientConn, ...grpc.CallOption) error {
		calls++
		return dropped
	})
	if !proposalDropped(err) || calls < 5 {
		t.Errorf("always dropped: %d calls, error %v", calls, err)
	}
}
