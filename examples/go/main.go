// A minimal leader-elected app for leasekeeper, in Go: a thin user of the Go client in
// clients/go (standard library only).
//
// It campaigns for one lock and "works" (prints a line every 500 ms) only while it leads. The
// client keeps the contract of an app (proto/PROTOCOL.md): the work's context is cancelled on
// STEPDOWN (and the ACK follows once the work returned), on LOST, at EOF, and at the tenure's
// deadline when no RENEWED came in time (a frozen agent says nothing).
//
// usage: app [-s SOCKET] [-n NAME] LOCK
//
// The socket defaults to $LEASEKEEPER_SOCKET, then /run/leasekeeper/agent.sock. If the agent
// requires authentication, the key is read from the file named by $LEASEKEEPER_AUTH_KEY_FILE.
//
// Every transition is printed on stdout as one line, in the same form as
// examples/python/leader_app.py: "LEADER token=42 ttl_ms=9950", "WORK token=42 n=1",
// "STEPDOWN token=42 -> ACK", "LOST token=42 reason=expired", "DEADLINE token=42", "STOP",
// "EOF", "EXIT signal=SIGTERM".
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	leasekeeper "leasekeeper.dev/client"
)

const workInterval = 500 * time.Millisecond // between two slices of leader work

func say(format string, a ...interface{}) {
	fmt.Printf(format+"\n", a...) // os.Stdout is not buffered: every line goes out at once
}

// work stands in for the app's leader work. stop() returns only once no slice is running, so
// nothing is printed after the line that follows it.
type work struct {
	mu    sync.Mutex
	token uint64
}

func (w *work) stop() (token uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	token, w.token = w.token, 0
	return token
}

func (w *work) run(ctx context.Context, e *leasekeeper.Elector, token uint64) {
	w.mu.Lock()
	w.token = token
	w.mu.Unlock()
	t := time.NewTicker(workInterval)
	defer t.Stop()
	for n := 1; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		w.mu.Lock()
		if w.token == token && e.IsLeader() {
			say("WORK token=%d n=%d", token, n) // e.g. a write, fenced with the token
		}
		w.mu.Unlock()
	}
}

func main() {
	socket := flag.String("s", "", "the agent's socket")
	name := flag.String("n", "go-example", "client name for the agent's logs")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: app [-s SOCKET] [-n NAME] LOCK")
		os.Exit(2)
	}
	lock := flag.Arg(0)

	var w work
	var e *leasekeeper.Elector
	e, err := leasekeeper.New(leasekeeper.Config{
		Lock: lock, SocketPath: *socket, ClientName: *name,
		OnStartedLeading: func(ctx context.Context, token uint64) { w.run(ctx, e, token) },
		OnStoppedLeading: func(reason string) {
			if t := w.stop(); t != 0 && reason == "deadline" {
				say("DEADLINE token=%d", t)
			}
		},
		OnMessage: func(m leasekeeper.Message) {
			a := m.Attrs
			switch m.Kind {
			case "OK":
				if len(m.Words) > 1 && m.Words[1] == "CAMPAIGN" {
					say("CAMPAIGN lock=%s", lock)
				}
			case "LEADER":
				say("LEADER token=%s ttl_ms=%s", a["token"], a["ttl_ms"])
			case "FOLLOWER":
				say("FOLLOWER holder=%s", a["holder"])
			case "STEPDOWN":
				w.stop() // first stop, then acknowledge (the client ACKs after the work returned)
				say("STEPDOWN token=%s -> ACK", a["token"])
			case "LOST":
				w.stop() // at once: another replica may lead already; no ACK
				say("LOST token=%s reason=%s", a["token"], a["reason"])
			case "RELEASED":
				say("RELEASED token=%s outcome=%s", a["token"], a["outcome"])
			case "STOP":
				w.stop()
				say("STOP")
			}
		},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "app:", err)
		os.Exit(2)
	}

	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	var got os.Signal
	go func() {
		got = <-sigs
		cancel() // closing the connection counts as stepping down for the agent
	}()
	err = e.Run(ctx)
	w.stop()
	switch {
	case err == nil:
		os.Exit(0)
	case ctx.Err() != nil:
		if got == syscall.SIGINT {
			say("EXIT signal=SIGINT")
		} else {
			say("EXIT signal=SIGTERM")
		}
		os.Exit(0)
	case err == leasekeeper.ErrClosed:
		say("EOF")
	default:
		fmt.Fprintln(os.Stderr, "app:", err)
	}
	os.Exit(1)
}
