package leasekeeper

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// TestRealAgentFrozen runs against a real agent that tests/integration/test_client_go.py starts:
// it leads, then freezes its own agent with SIGSTOP (LK_TEST_AGENT_PID) for LK_TEST_FREEZE_MS,
// and checks that the work's context is cancelled at the tenure's deadline although the agent
// says nothing. It prints GO_STOPPED_MS=<CLOCK_MONOTONIC ms> for the driver, which checks that
// the other replica led only after that.
func TestRealAgentFrozen(t *testing.T) {
	sock := os.Getenv("LK_TEST_SOCKET")
	if sock == "" {
		t.Skip("LK_TEST_SOCKET is not set: run by tests/integration/test_client_go.py")
	}
	pid, err := strconv.Atoi(os.Getenv("LK_TEST_AGENT_PID"))
	if err != nil {
		t.Fatalf("LK_TEST_AGENT_PID: %v", err)
	}
	freezeMs, _ := strconv.Atoi(os.Getenv("LK_TEST_FREEZE_MS"))
	waitMs, _ := strconv.Atoi(os.Getenv("LK_TEST_STOP_AFTER_MS"))

	started := make(chan uint64, 4)
	cancelledAt := make(chan int64, 4)
	reasons := make(chan string, 4)
	e, err := New(Config{
		Lock: "x", SocketPath: sock, ClientName: "go-test",
		OnStartedLeading: func(ctx context.Context, token uint64) {
			started <- token
			<-ctx.Done()
			cancelledAt <- monoNowMs()
		},
		OnStoppedLeading: func(reason string) { reasons <- reason },
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go e.Run(ctx)

	select {
	case tok := <-started:
		fmt.Printf("GO_LEADING token=%d\n", tok)
	case <-time.After(30 * time.Second):
		t.Fatal("never led")
	}
	time.Sleep(time.Duration(waitMs) * time.Millisecond)
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stoppedAt := monoNowMs()
	defer syscall.Kill(pid, syscall.SIGCONT)
	deadline := e.Deadline()

	var at int64
	select {
	case at = <-cancelledAt:
	case <-time.After(time.Duration(freezeMs) * time.Millisecond):
		t.Fatalf("leader context not cancelled within %d ms of SIGSTOP", freezeMs)
	}
	reason := <-reasons
	fmt.Printf("GO_STOPPED_MS=%d REASON=%s DEADLINE_MS=%d SIGSTOP_MS=%d\n", at, reason, deadline,
		stoppedAt)
	if reason != "deadline" {
		t.Errorf("stopped for %q, want deadline", reason)
	}
	if e.IsLeader() {
		t.Error("IsLeader() after the deadline")
	}
	if at < deadline || at > deadline+500 {
		t.Errorf("cancelled at %d, deadline %d", at, deadline)
	}
	if rest := time.Duration(freezeMs)*time.Millisecond - time.Duration(monoNowMs()-stoppedAt)*time.Millisecond; rest > 0 {
		time.Sleep(rest)
	}
}
