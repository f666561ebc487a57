// Package leasekeeper is the Go client of the leasekeeper agent: it campaigns for one lock over
// the agent's Unix socket and runs the app's leader work only while this replica leads.
//
// It keeps the app's side of the protocol (proto/PROTOCOL.md in the leasekeeper repository):
// the leader work gets a context.Context that is cancelled when leadership ends (STEPDOWN, LOST,
// EOF, or the tenure's deadline passing without a RENEWED, which holds even while the agent is
// frozen and says nothing); a STEPDOWN is acknowledged only once the work has returned. A
// tenure that ended at its deadline while the agent said neither LOST nor STEPDOWN for it (the
// app was frozen, or the lines came late) is handed back once the work has returned: RESIGN,
// then CAMPAIGN again, so that the agent does not go on holding the lock for nobody.
//
// Standard library only.
package leasekeeper

import (
	"bufio"
	"context"
	"crypto/hmac"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// DefaultSocket is where the agent listens unless $LEASEKEEPER_SOCKET or Config.SocketPath say
// otherwise.
const DefaultSocket = "/run/leasekeeper/agent.sock"

const (
	lineMax        = 4096 // bytes in one protocol line, '\n' included
	clockSlackMs   = 1000 // a banner mono_ms further off than this is another clock
	handshakeLimit = 10 * time.Second
)

// Config says which lock to campaign for and what to run while leading.
type Config struct {
	Lock        string
	SocketPath  string // "": $LEASEKEEPER_SOCKET, then DefaultSocket
	ClientName  string // sent as HELLO client=; "" to omit
	AuthKeyFile string // "": $LEASEKEEPER_AUTH_KEY_FILE; 32 raw bytes or 64 hex digits

	// OnStartedLeading runs on its own goroutine for each tenure; ctx is cancelled when the
	// tenure ends, and it must return soon after. token is the tenure's fencing token.
	OnStartedLeading func(ctx context.Context, token uint64)
	// OnStoppedLeading is called after OnStartedLeading returned, with why the tenure ended:
	// "stepdown", "lost:<reason>", "deadline", "eof", "follower", "stop" or "closed".
	OnStoppedLeading func(reason string)
	// OnNewLeader is called when the holder changes ("-": nobody); our own identity when we lead.
	OnNewLeader func(holder string)
	// OnMessage, if set, sees every line from the agent after the banner, before the Elector
	// acts on it: for logging, or for verbs this package does not know.
	OnMessage func(m Message)

	Reconnect      bool          // after EOF or a failed connect: again, with backoff
	BackoffInitial time.Duration // default 200ms; doubles up to BackoffMax, with jitter
	BackoffMax     time.Duration // default 5s
}

// Message is one line from the agent: its first word, all its words, and its key=value words.
type Message struct {
	Kind  string
	Words []string
	Attrs map[string]string
}

// ErrClosed is returned by Run when the agent closed the connection and Reconnect is off.
var ErrClosed = errors.New("leasekeeper: the agent closed the connection")

// RefusedError is the agent's ERR reply to HELLO or CAMPAIGN (auth_failed, unknown_lock,
// draining, ...), or, with Code "auth_key", a MAC the agent wants and we cannot make (no key
// file, a bad one). Run returns it even with Reconnect: trying again would not help.
type RefusedError struct {
	Request string // "HELLO" or "CAMPAIGN"
	Code    string // the agent's error code, or "auth_key"
	Text    string // the rest of the ERR line, or what is wrong with the key
}

func (e *RefusedError) Error() string {
	if e.Code == "auth_key" {
		return "leasekeeper: " + e.Text
	}
	return strings.TrimSpace(fmt.Sprintf("leasekeeper: %s refused: ERR %s %s", e.Request, e.Code,
		e.Text))
}

// Elector campaigns for one lock. Create it with New, then call Run.
type Elector struct {
	cfg Config

	mu      sync.Mutex
	leading bool
	token   uint64
	untilMs int64 // CLOCK_MONOTONIC ms
	holder  string
	shared  bool // the current connection's agent shares our CLOCK_MONOTONIC
	running bool
}

// New checks cfg and returns an Elector.
func New(cfg Config) (*Elector, error) {
	if cfg.Lock == "" {
		return nil, errors.New("leasekeeper: Config.Lock is empty")
	}
	if cfg.BackoffInitial <= 0 {
		cfg.BackoffInitial = 200 * time.Millisecond
	}
	if cfg.BackoffMax <= 0 {
		cfg.BackoffMax = 5 * time.Second
	}
	return &Elector{cfg: cfg}, nil
}

// IsLeader reports whether this replica leads now: a tenure started and its deadline has not
// passed. It reads the clock itself, so it turns false at the deadline.
func (e *Elector) IsLeader() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.leading && monoNowMs() < e.untilMs
}

// SharesClock reports whether the agent of the current (or last) connection shares our
// CLOCK_MONOTONIC: its banner's mono_ms was within 1 s of ours. Then deadlines are the agent's
// until_mono_ms; otherwise each LEADER or RENEWED line's arrival plus two thirds of its ttl_ms.
func (e *Elector) SharesClock() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.shared
}

// MonoNowMs is CLOCK_MONOTONIC in milliseconds, the clock of Deadline() and of the agent's
// until_mono_ms.
func MonoNowMs() int64 { return monoNowMs() }

// Token is the fencing token of the current or last tenure (0 if none).
func (e *Elector) Token() uint64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.token
}

// Deadline is the CLOCK_MONOTONIC ms at which the current tenure ends unless renewed, 0 if none.
func (e *Elector) Deadline() int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.leading {
		return 0
	}
	return e.untilMs
}

// Run campaigns until ctx is done (returns ctx.Err()), the agent's drain is over (STOP: returns
// nil), the agent refuses us (a *RefusedError: a wrong key, an unknown lock), or, without
// Reconnect, the connection ends (ErrClosed) or cannot be made. Leadership never outlives Run:
// the work's context is cancelled and OnStartedLeading has returned before Run does.
func (e *Elector) Run(ctx context.Context) error {
	e.mu.Lock()
	if e.running {
		e.mu.Unlock()
		return errors.New("leasekeeper: Run is already running")
	}
	e.running = true
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		e.running = false
		e.mu.Unlock()
	}()
	jitter := rand.New(rand.NewSource(time.Now().UnixNano()))
	backoff := e.cfg.BackoffInitial
	for {
		s, err := e.dial(ctx)
		if err == nil {
			backoff = e.cfg.BackoffInitial
			var end string
			end, err = s.run(ctx)
			if end == "stop" {
				return nil
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var refused *RefusedError
		if errors.As(err, &refused) {
			return err
		}
		if !e.cfg.Reconnect {
			if err == nil {
				err = ErrClosed
			}
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff/2 + time.Duration(jitter.Int63n(int64(backoff/2)+1))):
		}
		if backoff *= 2; backoff > e.cfg.BackoffMax {
			backoff = e.cfg.BackoffMax
		}
	}
}

// ---- one connection ------------------------------------------------------------------------

type line struct {
	words []string
	attrs map[string]string
	at    int64 // arrival, CLOCK_MONOTONIC ms
	err   error
}

type session struct {
	e      *Elector
	conn   net.Conn
	lines  chan line
	quit   chan struct{} // closed when the session ends: the reader stops
	shared bool          // the agent's CLOCK_MONOTONIC is ours
	id     string        // the agent's identity, from its banner

	cancel context.CancelFunc // of the running tenure's ctx
	done   chan struct{}      // closed when OnStartedLeading returned

	ended     uint64   // the last tenure that ended on this connection: never resumed
	resign    uint64   // a tenure that ended at its deadline, to hand back; 0 if none
	resigning bool     // RESIGN sent, its reply not read yet: LEADERs are from before it
	pending   []string // verbs sent without waiting (ACK, RESIGN, CAMPAIGN), oldest first
}

func parseLine(s string, at int64) line {
	l := line{words: strings.Fields(s), attrs: map[string]string{}, at: at}
	for _, w := range l.words[min(1, len(l.words)):] {
		if k, v, ok := strings.Cut(w, "="); ok {
			l.attrs[k] = v
		}
	}
	return l
}

func min(a, b int) int {
	if a < b {
		return a
	}
	return b
}

func (e *Elector) socketPath() string {
	if e.cfg.SocketPath != "" {
		return e.cfg.SocketPath
	}
	if p := os.Getenv("LEASEKEEPER_SOCKET"); p != "" {
		return p
	}
	return DefaultSocket
}

// loadKey reads a key file: 32 raw bytes, or 64 hex digits (a trailing newline allowed).
func loadKey(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if len(b) == 32 {
		return b, nil
	}
	if t := strings.TrimSpace(string(b)); len(t) == 64 {
		if k, err := hex.DecodeString(t); err == nil {
			return k, nil
		}
	}
	return nil, fmt.Errorf("%s is neither 32 raw bytes nor 64 hex digits", path)
}

// mac is HMAC-SHA-512 of the nonce's bytes, cut to 32 bytes (libsodium's crypto_auth).
func mac(key []byte, nonceHex string) (string, error) {
	nonce, err := hex.DecodeString(nonceHex)
	if err != nil || len(nonce) != 32 {
		return "", errors.New("leasekeeper: the agent's nonce is not 64 hex digits")
	}
	h := hmac.New(sha512.New, key)
	h.Write(nonce)
	return hex.EncodeToString(h.Sum(nil)[:32]), nil
}

func (e *Elector) dial(ctx context.Context) (*session, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", e.socketPath())
	if err != nil {
		return nil, err
	}
	s := &session{e: e, conn: conn, lines: make(chan line, 64), quit: make(chan struct{})}
	if err := s.handshake(); err != nil {
		close(s.quit)
		conn.Close()
		return nil, err
	}
	return s, nil
}

func (s *session) message(l line) {
	if s.e.cfg.OnMessage != nil && len(l.words) > 0 {
		s.e.cfg.OnMessage(Message{Kind: l.words[0], Words: l.words, Attrs: l.attrs})
	}
}

func (s *session) send(format string, args ...interface{}) error {
	_, err := fmt.Fprintf(s.conn, format+"\n", args...)
	return err
}

func (s *session) handshake() error {
	s.conn.SetDeadline(time.Now().Add(handshakeLimit))
	defer s.conn.SetDeadline(time.Time{})
	r := bufio.NewReaderSize(s.conn, lineMax)
	go s.read(r)
	b := <-s.lines
	if b.err != nil {
		return b.err
	}
	if len(b.words) == 0 || b.words[0] != "LEASEKEEPER" {
		return fmt.Errorf("leasekeeper: the agent refused the connection: %s",
			strings.Join(b.words, " "))
	}
	s.id = b.attrs["id"]
	if m, err := strconv.ParseInt(b.attrs["mono_ms"], 10, 64); err == nil && m > 0 {
		diff := m - b.at
		s.shared = diff <= clockSlackMs && diff >= -clockSlackMs
	}
	s.e.mu.Lock()
	s.e.shared = s.shared
	s.e.mu.Unlock()
	hello := "HELLO 1"
	if s.e.cfg.ClientName != "" {
		hello += " client=" + s.e.cfg.ClientName
	}
	if b.attrs["auth"] == "hmac" {
		file := s.e.cfg.AuthKeyFile
		if file == "" {
			file = os.Getenv("LEASEKEEPER_AUTH_KEY_FILE")
		}
		if file == "" {
			return &RefusedError{"HELLO", "auth_key", "the agent wants a MAC (auth=hmac): " +
				"set Config.AuthKeyFile or LEASEKEEPER_AUTH_KEY_FILE"}
		}
		key, err := loadKey(file)
		if err != nil {
			return &RefusedError{"HELLO", "auth_key", err.Error()}
		}
		m, err := mac(key, b.attrs["nonce"])
		if err != nil {
			return err
		}
		hello += " mac=" + m
	}
	// One request at a time: an agent that refuses the HELLO closes the connection, and a
	// CAMPAIGN written after it would hide its ERR behind a broken pipe.
	if err := s.request("HELLO", "%s", hello); err != nil {
		return err
	}
	return s.request("CAMPAIGN", "CAMPAIGN %s", s.e.cfg.Lock)
}

// request sends one request and waits for its reply: nil for OK <verb>, an error for ERR.
func (s *session) request(verb, format string, args ...interface{}) error {
	werr := s.send(format, args...)
	for {
		l := <-s.lines
		if l.err != nil {
			if werr != nil {
				return werr
			}
			return l.err
		}
		s.message(l)
		if len(l.words) >= 2 && l.words[0] == "OK" && l.words[1] == verb {
			return werr
		}
		if len(l.words) >= 1 && l.words[0] == "ERR" {
			e := &RefusedError{Request: verb}
			if len(l.words) > 1 {
				e.Code = l.words[1]
				e.Text = strings.Join(l.words[2:], " ")
			}
			return e
		}
		// An event before the reply (the lock's state after CAMPAIGN comes after it).
	}
}

// read hands lines to the session until the connection fails; the last item carries the error.
func (s *session) read(r *bufio.Reader) {
	for {
		var l line
		raw, err := r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			err = errors.New("leasekeeper: a line over 4096 bytes from the agent")
		}
		if err != nil {
			l = line{err: err}
		} else {
			l = parseLine(strings.TrimRight(string(raw), "\r\n"), monoNowMs())
		}
		select {
		case s.lines <- l:
		case <-s.quit:
			return
		}
		if err != nil {
			return
		}
	}
}

func (s *session) startLeading(ctx context.Context, token uint64, until int64) {
	e := s.e
	e.mu.Lock()
	e.leading, e.token, e.untilMs = true, token, until
	e.mu.Unlock()
	// Not a child of Run's ctx for cancelling: stopLeading cancels it, once IsLeader() is false,
	// so that the work never sees its context done while IsLeader() still says true.
	lctx, cancel := context.WithCancel(valuesOnly{ctx})
	s.cancel, s.done = cancel, make(chan struct{})
	go func(done chan struct{}) {
		defer close(done)
		if e.cfg.OnStartedLeading != nil {
			e.cfg.OnStartedLeading(lctx, token)
		}
	}(s.done)
}

// valuesOnly is a context with the values of its parent but neither its deadline nor its
// cancellation (context.WithoutCancel, before Go 1.21).
type valuesOnly struct{ context.Context }

func (valuesOnly) Deadline() (time.Time, bool) { return time.Time{}, false }
func (valuesOnly) Done() <-chan struct{}       { return nil }
func (valuesOnly) Err() error                  { return nil }

// stopLeading ends the running tenure, if any: cancel its context, wait for the work to return,
// then tell the app why.
func (s *session) stopLeading(reason string) bool {
	if s.cancel == nil {
		return false
	}
	e := s.e
	e.mu.Lock()
	e.leading = false
	token := e.token
	e.mu.Unlock()
	s.ended = token
	if reason == "deadline" {
		s.resign = token // handed back by run once the work and the callback returned
	}
	s.cancel()
	<-s.done
	s.cancel, s.done = nil, nil
	if e.cfg.OnStoppedLeading != nil {
		e.cfg.OnStoppedLeading(reason)
	}
	return true
}

// deadlineOf is when a LEADER or RENEWED line says the tenure ends, on our clock.
func (s *session) deadlineOf(l line) (uint64, int64, bool) {
	token, err1 := strconv.ParseUint(l.attrs["token"], 10, 64)
	ttl, err2 := strconv.ParseInt(l.attrs["ttl_ms"], 10, 64)
	if err1 != nil || err2 != nil || ttl < 0 {
		return 0, 0, false
	}
	until, err := strconv.ParseInt(l.attrs["until_mono_ms"], 10, 64)
	if !s.shared || err != nil || until <= 0 {
		until = l.at + ttl*2/3
	}
	return token, until, true
}

func (s *session) run(ctx context.Context) (string, error) {
	defer close(s.quit)
	defer s.conn.Close()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	arm := func(until int64) {
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(time.Duration(until-monoNowMs()) * time.Millisecond)
	}
	for {
		select {
		case <-ctx.Done():
			s.stopLeading("closed")
			return "closed", ctx.Err()
		case <-timer.C:
			if s.cancel != nil {
				if left := s.e.Deadline() - monoNowMs(); left > 0 {
					arm(s.e.Deadline())
					continue
				}
				s.stopLeading("deadline")
			}
		case l := <-s.lines:
			if l.err != nil {
				s.stopLeading("eof")
				return "eof", nil
			}
			if end := s.dispatch(ctx, l, arm); end != "" {
				return end, nil
			}
		}
		if s.resign != 0 {
			if end, err := s.handBack(ctx, arm); end != "" {
				return end, err
			}
		}
	}
}

// handBack: the tenure s.resign ended at its deadline (or its LEADER came past it) and the
// agent has said neither LOST nor STEPDOWN for it. If the app was the one frozen, or the lines
// came late, the agent still holds the lock and renews it for nobody, and no replica can lead
// until it loses it for another reason. RESIGN lets it release the lock (the work has returned
// already: that is safe), CAMPAIGN keeps this replica a candidate; their replies come back
// through dispatch. If the agent is the one that was frozen, both wait in the socket and run
// after its LOST: harmless.
func (s *session) handBack(ctx context.Context, arm func(int64)) (string, error) {
	// First the lines that are already here: a LOST or STEPDOWN makes it moot.
	for s.resign != 0 {
		select {
		case l := <-s.lines:
			if l.err != nil {
				s.stopLeading("eof")
				return "eof", nil
			}
			if end := s.dispatch(ctx, l, arm); end != "" {
				return end, nil
			}
			continue
		default:
		}
		break
	}
	if s.resign == 0 || s.cancel != nil {
		return "", nil
	}
	s.resign = 0
	s.resigning = true
	s.sendRequest("RESIGN", "RESIGN %s", s.e.cfg.Lock)
	s.sendRequest("CAMPAIGN", "CAMPAIGN %s", s.e.cfg.Lock)
	return "", nil
}

// sendRequest sends a request without waiting: its reply comes through dispatch, in order. A
// write error shows as EOF on the reader.
func (s *session) sendRequest(verb, format string, args ...interface{}) {
	s.pending = append(s.pending, verb)
	s.send(format, args...)
}

// dispatch acts on one line from the agent; it returns "stop" when the session is over.
func (s *session) dispatch(ctx context.Context, l line, arm func(int64)) string {
	if len(l.words) < 1 {
		return ""
	}
	s.message(l)
	mine := len(l.words) >= 2 && l.words[1] == s.e.cfg.Lock
	switch l.words[0] {
	case "OK", "ERR":
		// The reply to the oldest request sent without waiting.
		if len(s.pending) > 0 {
			verb := s.pending[0]
			s.pending = s.pending[1:]
			if verb == "RESIGN" {
				s.resigning = false
			}
		}
	case "LEADER":
		token, until, ok := s.deadlineOf(l)
		if !mine || !ok {
			return ""
		}
		if s.resign != 0 && token != s.resign {
			s.resign = 0 // the agent has moved on from that tenure
		}
		if until <= monoNowMs() {
			if s.cancel == nil && token != s.ended && !s.resigning {
				// Over before it reached us: the agent may hold it for nobody.
				s.ended, s.resign = token, token
			}
			return ""
		}
		if s.cancel != nil && s.e.Token() != token {
			s.stopLeading("superseded")
		}
		if s.cancel == nil && (token == s.ended || s.resigning) {
			// The tenure that ended, or one the agent gave up when it read our RESIGN.
			s.ended = token
			return ""
		}
		if s.cancel == nil {
			s.newLeader(s.id, true)
			s.startLeading(ctx, token, until)
		}
		arm(until)
	case "RENEWED":
		token, until, ok := s.deadlineOf(l)
		// Only the running tenure moves, and only before its deadline (past it, it is over).
		if !mine || !ok || s.cancel == nil || token != s.e.Token() || l.at >= s.e.Deadline() {
			return ""
		}
		s.e.mu.Lock()
		s.e.untilMs = until
		s.e.mu.Unlock()
		arm(until)
	case "STEPDOWN":
		if !mine {
			return ""
		}
		s.stopLeading("stepdown")
		if s.resign != 0 && l.attrs["token"] == strconv.FormatUint(s.resign, 10) {
			s.resign = 0 // the ACK hands it back
		}
		s.sendRequest("ACK", "ACK %s %s", s.e.cfg.Lock, l.attrs["token"])
	case "LOST":
		if mine {
			s.stopLeading("lost:" + l.attrs["reason"])
			if s.resign != 0 && l.attrs["token"] == strconv.FormatUint(s.resign, 10) {
				s.resign = 0 // the agent no longer holds it
			}
		}
	case "RELEASED":
		if mine && s.resign != 0 && l.attrs["token"] == strconv.FormatUint(s.resign, 10) {
			s.resign = 0
		}
	case "FOLLOWER":
		if mine {
			s.stopLeading("follower")
			s.newLeader(l.attrs["holder"], false)
		}
	case "STOP":
		s.stopLeading("stop")
		return "stop"
	}
	return ""
}

func (s *session) newLeader(holder string, self bool) {
	e := s.e
	e.mu.Lock()
	changed := holder != e.holder || self
	e.holder = holder
	e.mu.Unlock()
	if changed && e.cfg.OnNewLeader != nil && holder != "" {
		e.cfg.OnNewLeader(holder)
	}
}
