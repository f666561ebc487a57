package leasekeeper

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// The HMAC test vector of the C and Python clients (tests/check_auth.c).
const (
	testKey   = "leasekeeper-test-key-32-bytes!!!"
	testNonce = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
	testMAC   = "ddd566d49d16ac64bc3ee2b7a09fc87bd955f4cf8457a5a4c3ccce35d4d197ff"
)

// fakeAgent accepts connections on a socket in a temp dir and runs script on each, in turn.
type fakeAgent struct {
	t    *testing.T
	path string
	ln   net.Listener
}

type peer struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

func (p *peer) send(format string, args ...interface{}) {
	fmt.Fprintf(p.conn, format+"\n", args...)
}

func (p *peer) expect(prefix string) string {
	p.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	l, err := p.r.ReadString('\n')
	if err != nil {
		p.t.Errorf("fake agent: want %q, got error %v", prefix, err)
		return ""
	}
	l = strings.TrimRight(l, "\n")
	if !strings.HasPrefix(l, prefix) {
		p.t.Errorf("fake agent: want %q, got %q", prefix, l)
	}
	return l
}

// handshake plays banner, HELLO and CAMPAIGN x.
func (p *peer) handshake(auth string) string {
	p.send("LEASEKEEPER 1 id=pod-a nonce=%s auth=%s mono_ms=%d", testNonce, auth, monoNowMs())
	hello := p.expect("HELLO 1")
	p.send("OK HELLO 1 agent=test id=pod-a")
	p.expect("CAMPAIGN x")
	p.send("OK CAMPAIGN x")
	return hello
}

func startAgent(t *testing.T, scripts ...func(p *peer)) *fakeAgent {
	path := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	a := &fakeAgent{t: t, path: path, ln: ln}
	go func() {
		for _, script := range scripts {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			script(&peer{t: t, conn: c, r: bufio.NewReader(c)})
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return a
}

// recorder keeps what the callbacks saw, in order.
type recorder struct {
	mu     sync.Mutex
	events []string
	ch     chan string
}

func newRecorder() *recorder { return &recorder{ch: make(chan string, 64)} }

func (r *recorder) add(s string) {
	r.mu.Lock()
	r.events = append(r.events, s)
	r.mu.Unlock()
	r.ch <- s
}

func (r *recorder) wait(t *testing.T, want string) {
	t.Helper()
	for {
		select {
		case s := <-r.ch:
			if s == want {
				return
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no %q; saw %v", want, r.events)
		}
	}
}

func config(a *fakeAgent, r *recorder) Config {
	return Config{
		Lock: "x", SocketPath: a.path, ClientName: "test",
		OnStartedLeading: func(ctx context.Context, token uint64) {
			r.add(fmt.Sprintf("started %d", token))
			<-ctx.Done()
			r.add("returned")
		},
		OnStoppedLeading: func(reason string) { r.add("stopped " + reason) },
		OnNewLeader:      func(holder string) { r.add("leader " + holder) },
	}
}

func run(t *testing.T, cfg Config) (context.CancelFunc, chan error) {
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	t.Cleanup(cancel)
	return cancel, done
}

func TestDeadlineCancelsTheWorkWhileTheAgentIsSilent(t *testing.T) {
	var until int64
	hold := make(chan struct{})
	a := startAgent(t, func(p *peer) {
		p.handshake("none")
		until = monoNowMs() + 300
		p.send("LEADER x token=5 ttl_ms=3000 until_mono_ms=%d", until)
		<-hold // frozen: says nothing more
	})
	defer close(hold)
	r := newRecorder()
	run(t, config(a, r))
	r.wait(t, "started 5")
	r.wait(t, "returned")
	r.wait(t, "stopped deadline")
	if now := monoNowMs(); now < until || now > until+500 {
		t.Errorf("stopped at %d, deadline %d", now, until)
	}
}

func TestRenewedMovesTheDeadline(t *testing.T) {
	var until int64
	hold := make(chan struct{})
	a := startAgent(t, func(p *peer) {
		p.handshake("none")
		p.send("LEADER x token=5 ttl_ms=3000 until_mono_ms=%d", monoNowMs()+300)
		time.Sleep(100 * time.Millisecond)
		p.send("RENEWED x token=4 ttl_ms=3000 until_mono_ms=%d", monoNowMs()+5000) // not ours
		until = monoNowMs() + 700
		p.send("RENEWED x token=5 ttl_ms=3000 until_mono_ms=%d", until)
		<-hold
	})
	defer close(hold)
	r := newRecorder()
	run(t, config(a, r))
	r.wait(t, "stopped deadline")
	if now := monoNowMs(); now < until {
		t.Errorf("stopped at %d, before the renewed deadline %d", now, until)
	}
}

func TestStepdownCancelsWaitsThenAcks(t *testing.T) {
	r := newRecorder()
	a := startAgent(t, func(p *peer) {
		p.handshake("none")
		p.send("SOMEDAY x token=1 new=yes") // a newer agent's event: skipped
		p.send("LEADER x token=7 ttl_ms=3000 until_mono_ms=%d", monoNowMs()+2000)
		time.Sleep(50 * time.Millisecond)
		p.send("STEPDOWN x token=7 deadline_ms=5000")
		p.expect("ACK x 7")
		r.add("acked")
		p.send("OK ACK x")
		p.send("RELEASED x token=7 outcome=released")
		p.send("STOP deadline_ms=1000")
	})
	_, done := run(t, config(a, r))
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after STOP")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	want := []string{"leader pod-a", "started 7", "returned", "stopped stepdown", "acked"}
	if strings.Join(r.events, ",") != strings.Join(want, ",") {
		t.Errorf("events %v, want %v", r.events, want)
	}
}

func TestHMACAndReconnectAfterEOF(t *testing.T) {
	key := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(key, []byte(testKey), 0o600); err != nil {
		t.Fatal(err)
	}
	hello := make(chan string, 2)
	a := startAgent(t,
		func(p *peer) {
			hello <- p.handshake("hmac")
			p.send("LEADER x token=8 ttl_ms=3000 until_mono_ms=%d", monoNowMs()+2000)
			time.Sleep(50 * time.Millisecond) // then EOF
		},
		func(p *peer) {
			hello <- p.handshake("hmac")
			p.send("FOLLOWER x holder=pod-b")
			time.Sleep(time.Second)
		})
	r := newRecorder()
	cfg := config(a, r)
	cfg.AuthKeyFile = key
	cfg.Reconnect = true
	cfg.BackoffInitial = 10 * time.Millisecond
	run(t, cfg)
	r.wait(t, "stopped eof")
	r.wait(t, "leader pod-b")
	for i := 0; i < 2; i++ {
		if h := <-hello; h != "HELLO 1 client=test mac="+testMAC {
			t.Errorf("HELLO %q", h)
		}
	}
}

func TestAnotherClockCountsTwoThirdsOfTheTTL(t *testing.T) {
	hold := make(chan struct{})
	var sent int64
	a := startAgent(t, func(p *peer) {
		p.send("LEASEKEEPER 1 id=pod-a nonce=%s auth=none mono_ms=%d", testNonce,
			monoNowMs()+60000)
		p.expect("HELLO 1")
		p.send("OK HELLO 1 agent=test id=pod-a")
		p.expect("CAMPAIGN x")
		p.send("OK CAMPAIGN x")
		sent = monoNowMs()
		// Its until_mono_ms is on another clock, a minute ahead: it means nothing here.
		p.send("LEADER x token=5 ttl_ms=600 until_mono_ms=%d", sent+60000)
		<-hold
	})
	defer close(hold)
	r := newRecorder()
	run(t, config(a, r))
	r.wait(t, "stopped deadline")
	if now := monoNowMs(); now < sent+400 || now > sent+1000 {
		t.Errorf("stopped %d ms after LEADER, want about 400", now-sent)
	}
}

func TestMacMatchesTheTestVector(t *testing.T) {
	m, err := mac([]byte(testKey), testNonce)
	if err != nil || m != testMAC {
		t.Fatalf("mac %q %v", m, err)
	}
	if _, err := mac([]byte(testKey), "zz"); err == nil {
		t.Fatal("a bad nonce gave a MAC")
	}
}

func TestAuthFailedIsReportedNotABrokenPipe(t *testing.T) {
	key := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(key, []byte(strings.Repeat("ab", 32)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a := startAgent(t, func(p *peer) {
		p.send("LEASEKEEPER 1 id=pod-a nonce=%s auth=hmac mono_ms=%d", testNonce, monoNowMs())
		p.expect("HELLO 1 client=test mac=")
		p.send("ERR auth_failed bad mac")
	})
	r := newRecorder()
	cfg := config(a, r)
	cfg.AuthKeyFile = key
	cfg.Reconnect = true // a wrong key is not worth another try
	_, done := run(t, cfg)
	select {
	case err := <-done:
		var refused *RefusedError
		if !errors.As(err, &refused) || refused.Code != "auth_failed" ||
			!strings.Contains(err.Error(), "ERR auth_failed") {
			t.Fatalf("Run: %v, want the agent's ERR auth_failed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return")
	}
}

func TestMissingKeyAndUnknownLockEndRun(t *testing.T) {
	t.Setenv("LEASEKEEPER_AUTH_KEY_FILE", "")
	a := startAgent(t,
		func(p *peer) {
			p.send("LEASEKEEPER 1 id=pod-a nonce=%s auth=hmac mono_ms=%d", testNonce, monoNowMs())
		},
		func(p *peer) {
			p.send("LEASEKEEPER 1 id=pod-a nonce=%s auth=none mono_ms=%d", testNonce, monoNowMs())
			p.expect("HELLO 1")
			p.send("OK HELLO 1 agent=test id=pod-a")
			p.expect("CAMPAIGN x")
			p.send("ERR unknown_lock no lock x")
		})
	for _, want := range []string{"auth_key", "unknown_lock"} {
		cfg := config(a, newRecorder())
		cfg.Reconnect = true
		_, done := run(t, cfg)
		select {
		case err := <-done:
			var refused *RefusedError
			if !errors.As(err, &refused) || refused.Code != want {
				t.Fatalf("Run: %v, want a RefusedError %s", err, want)
			}
			if want == "auth_key" && !strings.Contains(err.Error(), "LEASEKEEPER_AUTH_KEY_FILE") {
				t.Errorf("%v does not name LEASEKEEPER_AUTH_KEY_FILE", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("Run did not return (%s)", want)
		}
	}
}

type ctxKey struct{}

func TestCancellingRunEndsTheTenureFirst(t *testing.T) {
	hold := make(chan struct{})
	defer close(hold)
	a := startAgent(t, func(p *peer) {
		p.handshake("none")
		p.send("LEADER x token=9 ttl_ms=3000 until_mono_ms=%d", monoNowMs()+5000)
		<-hold
	})
	var e *Elector
	leading := make(chan bool, 1)
	after := make(chan string, 4)
	e, err := New(Config{Lock: "x", SocketPath: a.path,
		OnStartedLeading: func(ctx context.Context, token uint64) {
			leading <- e.IsLeader() && e.Token() == 9 && ctx.Value(ctxKey{}) == "v"
			<-ctx.Done()
			after <- fmt.Sprintf("done leader=%v", e.IsLeader())
		},
		OnStoppedLeading: func(reason string) { after <- "stopped " + reason },
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.WithValue(context.Background(), ctxKey{}, "v"))
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	select {
	case ok := <-leading:
		if !ok {
			t.Error("in OnStartedLeading: not IsLeader(), a wrong token, or no ctx value")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("never led")
	}
	cancel()
	if err := <-done; err != context.Canceled {
		t.Errorf("Run: %v", err)
	}
	close(after)
	var got []string
	for s := range after {
		got = append(got, s)
	}
	if strings.Join(got, ",") != "done leader=false,stopped closed" {
		t.Errorf("saw %v", got)
	}
	if e.IsLeader() || e.Deadline() != 0 {
		t.Error("still leading after Run returned")
	}
}

func TestAnOlderAgentWithoutUntilMonoMs(t *testing.T) {
	hold := make(chan struct{})
	defer close(hold)
	var sent int64
	a := startAgent(t, func(p *peer) {
		// A 1.0 agent: no mono_ms, no until_mono_ms, no RENEWED.
		p.send("LEASEKEEPER 1 id=pod-a nonce=%s auth=none", testNonce)
		p.expect("HELLO 1")
		p.send("OK HELLO 1 agent=0.0.9 id=pod-a")
		p.expect("CAMPAIGN x")
		p.send("OK CAMPAIGN x")
		sent = monoNowMs()
		p.send("LEADER x token=3 ttl_ms=600")
		<-hold
	})
	r := newRecorder()
	run(t, config(a, r))
	r.wait(t, "started 3")
	r.wait(t, "stopped deadline")
	if now := monoNowMs(); now < sent+400 || now > sent+1000 {
		t.Errorf("stopped %d ms after LEADER, want about 400 (2/3 of ttl_ms)", now-sent)
	}
}

func TestLostStopsAtOnceAndALateRenewedDoesNotResume(t *testing.T) {
	r := newRecorder()
	next := make(chan struct{})
	a := startAgent(t, func(p *peer) {
		p.handshake("none")
		p.send("LEADER x token=5 ttl_ms=3000 until_mono_ms=%d", monoNowMs()+5000)
		<-next
		p.send("LOST x token=5 reason=taken")
		<-next
		p.send("LEADER x token=6 ttl_ms=3000 until_mono_ms=%d", monoNowMs()+200)
		<-next
		// The deadline has passed: a RENEWED now is too late to move it.
		p.send("RENEWED x token=6 ttl_ms=3000 until_mono_ms=%d", monoNowMs()+5000)
		p.send("FOLLOWER x holder=pod-b")
		<-next
	})
	_, done := run(t, config(a, r))
	r.wait(t, "started 5")
	next <- struct{}{}
	r.wait(t, "stopped lost:taken")
	next <- struct{}{}
	r.wait(t, "started 6")
	r.wait(t, "stopped deadline")
	next <- struct{}{}
	r.wait(t, "leader pod-b")
	close(next)
	if err := <-done; err != ErrClosed {
		t.Errorf("Run after EOF without Reconnect: %v, want ErrClosed", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	want := "leader pod-a,started 5,returned,stopped lost:taken,leader pod-a,started 6,returned," +
		"stopped deadline,leader pod-b"
	if got := strings.Join(r.events, ","); got != want {
		t.Errorf("events %s\nwant   %s", got, want)
	}
}

// expectNothing: the client sends no line within d.
func (p *peer) expectNothing(d time.Duration) {
	p.conn.SetReadDeadline(time.Now().Add(d))
	if l, err := p.r.ReadString('\n'); err == nil {
		p.t.Errorf("fake agent: want nothing from the client, got %q", strings.TrimRight(l, "\n"))
	}
}

func (r *recorder) joined() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.events, ",")
}

// The app (not the agent) was frozen past its deadline: the agent kept renewing and says
// nothing. Once the work returned and OnStoppedLeading ran, the Elector hands the lock back
// (RESIGN) and campaigns again; lines from before the RESIGN start nothing.
func TestDeadlineWithoutLostResignsThenCampaigns(t *testing.T) {
	r := newRecorder()
	hold := make(chan struct{})
	defer close(hold)
	a := startAgent(t, func(p *peer) {
		p.handshake("none")
		p.send("LEADER x token=7 ttl_ms=3000 until_mono_ms=%d", monoNowMs()+300)
		p.expect("RESIGN x")
		r.add("resign")
		p.expect("CAMPAIGN x")
		// Sent before the agent read the RESIGN: a late RENEWED, and a tenure it gives up.
		p.send("RENEWED x token=7 ttl_ms=3000 until_mono_ms=%d", monoNowMs()+2000)
		p.send("LEADER x token=8 ttl_ms=3000 until_mono_ms=%d", monoNowMs()+2000)
		p.send("OK RESIGN x")
		p.send("OK CAMPAIGN x")
		p.send("FOLLOWER x holder=-")
		p.send("LEADER x token=9 ttl_ms=3000 until_mono_ms=%d", monoNowMs()+2000)
		p.expectNothing(300 * time.Millisecond)
		r.add("quiet")
		<-hold
	})
	run(t, config(a, r))
	r.wait(t, "started 9")
	r.wait(t, "quiet")
	want := "leader pod-a,started 7,returned,stopped deadline,resign,leader -,leader pod-a," +
		"started 9,quiet"
	if got := r.joined(); got != want {
		t.Errorf("events %s\nwant   %s", got, want)
	}
}

// The agent itself was frozen: RESIGN and CAMPAIGN waited in the socket; after the thaw the
// agent sends its LOST first, then answers them. Nothing gets confused; a new tenure starts.
func TestFrozenAgentLostAfterTheResign(t *testing.T) {
	r := newRecorder()
	hold := make(chan struct{})
	defer close(hold)
	a := startAgent(t, func(p *peer) {
		p.handshake("none")
		p.send("LEADER x token=7 ttl_ms=3000 until_mono_ms=%d", monoNowMs()+300)
		p.expect("RESIGN x")
		p.expect("CAMPAIGN x")
		p.send("RENEWED x token=7 ttl_ms=3000 until_mono_ms=%d", monoNowMs()+2000)
		p.send("LOST x token=7 reason=renew_deadline")
		p.send("FOLLOWER x holder=pod-b")
		p.send("OK RESIGN x")
		p.send("OK CAMPAIGN x")
		p.send("FOLLOWER x holder=pod-b")
		p.send("LEADER x token=12 ttl_ms=3000 until_mono_ms=%d", monoNowMs()+2000)
		p.expectNothing(300 * time.Millisecond)
		r.add("quiet")
		<-hold
	})
	run(t, config(a, r))
	r.wait(t, "quiet")
	want := "leader pod-a,started 7,returned,stopped deadline,leader pod-b,leader pod-a," +
		"started 12,quiet"
	if got := r.joined(); got != want {
		t.Errorf("events %s\nwant   %s", got, want)
	}
}

// A LOST (or STEPDOWN) that came in while the app was stopping makes the RESIGN moot; the
// STEPDOWN is ACKed as always.
func TestDeadlineThenLostOrStepdownDoesNotResign(t *testing.T) {
	for _, kind := range []string{"LOST", "STEPDOWN"} {
		t.Run(kind, func(t *testing.T) {
			r := newRecorder()
			hold := make(chan struct{})
			defer close(hold)
			stopping := make(chan struct{})
			a := startAgent(t, func(p *peer) {
				p.handshake("none")
				p.send("LEADER x token=7 ttl_ms=3000 until_mono_ms=%d", monoNowMs()+300)
				<-stopping
				if kind == "LOST" {
					p.send("LOST x token=7 reason=renew_deadline")
				} else {
					p.send("STEPDOWN x token=7 deadline_ms=5000")
					p.expect("ACK x 7")
					p.send("OK ACK x")
				}
				p.expectNothing(400 * time.Millisecond)
				r.add("quiet")
				<-hold
			})
			cfg := config(a, r)
			cfg.OnStoppedLeading = func(reason string) {
				r.add("stopped " + reason)
				close(stopping)
				time.Sleep(300 * time.Millisecond) // the line arrives meanwhile
			}
			run(t, cfg)
			r.wait(t, "quiet")
			want := "leader pod-a,started 7,returned,stopped deadline,quiet"
			if got := r.joined(); got != want {
				t.Errorf("events %s\nwant   %s", got, want)
			}
		})
	}
}

// A LEADER that arrives past its deadline starts nothing and is handed back; the same tenure
// offered again after the CAMPAIGN is still over; a new one starts.
func TestLeaderPastItsDeadlineIsHandedBack(t *testing.T) {
	r := newRecorder()
	hold := make(chan struct{})
	defer close(hold)
	a := startAgent(t, func(p *peer) {
		p.handshake("none")
		p.send("LEADER x token=4 ttl_ms=3000 until_mono_ms=%d", monoNowMs()-50)
		p.expect("RESIGN x")
		p.expect("CAMPAIGN x")
		p.send("OK RESIGN x")
		p.send("OK CAMPAIGN x")
		p.send("LEADER x token=4 ttl_ms=3000 until_mono_ms=%d", monoNowMs()+2000)
		p.send("LEADER x token=5 ttl_ms=3000 until_mono_ms=%d", monoNowMs()+2000)
		p.expectNothing(300 * time.Millisecond)
		r.add("quiet")
		<-hold
	})
	run(t, config(a, r))
	r.wait(t, "quiet")
	if got, want := r.joined(), "leader pod-a,started 5,quiet"; got != want {
		t.Errorf("events %s\nwant   %s", got, want)
	}
}
