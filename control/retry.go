package control

import (
	"context"
	"time"

	"go.etcd.io/raft/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
)

// droppedRetryMax bounds how long a request whose proposal raft dropped is
// sent again.
const droppedRetryMax = 3 * time.Second

// retryDropped is a gRPC interceptor for the etcd client: it sends a
// request again when the member answers that raft dropped its proposal.
// Raft drops a proposal, before it enters the log, while the cluster has
// no leader or moves leadership (a hand-off, an election after a member
// died): the write was not applied, so sending it again is safe, and
// callers need not each tell this moment from a real failure. Other errors
// (a leader change after the proposal entered the log, a timeout) may have
// been applied and are returned as they are.
func retryDropped(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	deadline := time.Now().Add(droppedRetryMax)
	wait := 25 * time.Millisecond
	for {
		err := invoker(ctx, method, req, reply, cc, opts...)
		if err == nil || !proposalDropped(err) || time.Now().Add(wait).After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
		wait = min(2*wait, 400*time.Millisecond)
	}
}

// proposalDropped reports whether err is raft's ErrProposalDropped as the
// etcd server returns it (gRPC code Unknown, raft's message).
func proposalDropped(err error) bool {
	s, ok := status.FromError(err)
	return ok && s.Message() == raft.ErrProposalDropped.Error()
}
