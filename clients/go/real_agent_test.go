package leasekeeper

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestRealAgentApp is an app on a real agent, run by tests/integration/test_client_go.py (built
// once with `go test -c`, one process per agent); without LK_TEST_SOCKET it is skipped.
//
// It campaigns for $LK_TEST_LOCK (default x) with Reconnect and prints each transition on stdout
// as "<CLOCK_MONOTONIC seconds> WORD attrs", the clock the driver reads with time.monotonic():
// STARTED, CANCELLED (the work saw its context done), RETURNED (the work returned, after
// $LK_TEST_WINDDOWN_MS of winding down), STOPPED, NEW_LEADER, MSG (every line from the agent)
// and RUN_RETURNED. The driver decides what happens to the agents and checks the order of
// these lines against the other replica's; this side checks what it alone can see, and fails
// (exit status 1) if the work's context outlived the tenure's deadline, if IsLeader() was true
// once the context was done, if OnStoppedLeading came before the work returned, or if any
// work was still running when Run returned. SIGTERM ends it: the context of Run is cancelled.
func TestRealAgentApp(t *testing.T) {
	sock := os.Getenv("LK_TEST_SOCKET")
	if sock == "" {
		t.Skip("LK_TEST_SOCKET is not set: run by tests/integration/test_client_go.py")
	}
	lock := os.Getenv("LK_TEST_LOCK")
	if lock == "" {
		lock = "x"
	}
	winddown, _ := strconv.Atoi(os.Getenv("LK_TEST_WINDDOWN_MS"))

	var outMu sync.Mutex
	say := func(format string, args ...interface{}) {
		outMu.Lock()
		defer outMu.Unlock()
		ns := monoNowNs()
		fmt.Printf("%d.%06d "+format+"\n", append([]interface{}{ns / 1e9, ns % 1e9 / 1e3},
			args...)...)
	}
	var violMu sync.Mutex
	var violations []string
	violation := func(format string, args ...interface{}) {
		v := fmt.Sprintf(format, args...)
		say("VIOLATION %s", v)
		violMu.Lock()
		violations = append(violations, v)
		violMu.Unlock()
	}
	// The deadline of the current or last tenure, even once it is over (Deadline() is 0 then).
	lastDeadline := func(e *Elector) int64 {
		e.mu.Lock()
		defer e.mu.Unlock()
		return e.untilMs
	}

	var working atomic.Bool
	var e *Elector
	e, err := New(Config{
		Lock: lock, SocketPath: sock, ClientName: "go-test-app", Reconnect: true,
		BackoffInitial: 100 * time.Millisecond, BackoffMax: time.Second,
		OnStartedLeading: func(ctx context.Context, token uint64) {
			working.Store(true)
			defer working.Store(false)
			say("STARTED token=%d deadline=%.3f shares_clock=%v leader=%v", token,
				float64(e.Deadline())/1000, e.SharesClock(), e.IsLeader())
			tick := time.NewTicker(5 * time.Millisecond)
			defer tick.Stop()
		work:
			for {
				select {
				case <-ctx.Done():
					break work
				case <-tick.C:
				}
				// The leader work: here, only checking that it is allowed to run.
				if d := e.Deadline(); d != 0 && MonoNowMs() > d+250 {
					violation("token=%d still working %d ms past the deadline", token,
						MonoNowMs()-d)
					break work
				}
			}
			<-ctx.Done()
			say("CANCELLED token=%d deadline=%.3f", token, float64(lastDeadline(e))/1000)
			if e.IsLeader() {
				violation("IsLeader() with the work's context done (token=%d)", token)
			}
			time.Sleep(time.Duration(winddown) * time.Millisecond)
			say("RETURNED token=%d", token)
		},
		OnStoppedLeading: func(reason string) {
			if working.Load() {
				violation("OnStoppedLeading(%s) before the work returned", reason)
			}
			say("STOPPED reason=%s deadline=%.3f", reason, float64(lastDeadline(e))/1000)
		},
		OnNewLeader: func(holder string) { say("NEW_LEADER holder=%s", holder) },
		OnMessage:   func(m Message) { say("MSG %s", strings.Join(m.Words, " ")) },
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		select {
		case <-sigs:
			cancel()
		case <-ctx.Done():
		}
	}()
	err = e.Run(ctx)
	say("RUN_RETURNED err=%q", fmt.Sprint(err))
	if working.Load() {
		violation("the work still runs after Run returned")
	}
	if e.IsLeader() {
		violation("IsLeader() after Run returned")
	}
	if err != nil && err != context.Canceled {
		t.Errorf("Run: %v", err)
	}
	for _, v := range violations {
		t.Error(v)
	}
}
