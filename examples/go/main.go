// A minimal leader-elected app for leasekeeper, in Go (standard library only).
//
// It campaigns for one lock and "works" (prints a line every 500 ms) only while the agent says
// it leads. It keeps the whole contract of an app (proto/PROTOCOL.md):
//
//	LEADER    start leader work, fenced with the token
//	STEPDOWN  stop leader work, then ACK the token (the agent releases the lock only after that)
//	LOST      stop leader work at once; no ACK
//	STOP      the agent's drain is over: exit 0
//	EOF       the agent is gone and nobody can prove the lease any more: stop at once, exit 1
//
// usage: app [-s SOCKET] [-n NAME] LOCK
//
// The socket defaults to $LEASEKEEPER_SOCKET, then /run/leasekeeper/agent.sock. If the agent
// requires authentication (its banner says auth=hmac), the key is read from the file named by
// $LEASEKEEPER_AUTH_KEY_FILE (32 raw bytes or 64 hex digits).
//
// Every transition is printed on stdout as one line, a word then key=value pairs, in the same
// form as examples/python/leader_app.py: "LEADER token=42 ttl_ms=9950", "WORK token=42 n=1",
// "STEPDOWN token=42 -> ACK", "LOST token=42 reason=expired", "STOP", "EOF", ...
package main

import (
	"bufio"
	"crypto/hmac"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

const (
	workInterval  = 500 * time.Millisecond // between two slices of leader work
	maxLine       = 4096                   // the protocol's longest line, newline included
	defaultSocket = "/run/leasekeeper/agent.sock"
)

func say(format string, a ...interface{}) {
	fmt.Printf(format+"\n", a...) // os.Stdout is not buffered: every line goes out at once
}

// attributes returns the key=value words of a line.
func attributes(words []string) map[string]string {
	m := make(map[string]string)
	for _, w := range words {
		if k, v, ok := strings.Cut(w, "="); ok {
			m[k] = v
		}
	}
	return m
}

// loadKey reads a key file: 32 raw bytes, or 64 hex digits (whitespace around them is fine).
func loadKey(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if len(data) == 32 {
		return data, nil
	}
	text := strings.TrimSpace(string(data))
	if len(text) != 64 {
		return nil, fmt.Errorf("%s: expected 32 raw bytes or 64 hex digits", path)
	}
	return hex.DecodeString(text)
}

// macHex is HMAC-SHA-512-256 (libsodium's crypto_auth) of the 32 nonce bytes, as hex.
func macHex(key []byte, nonceHex string) (string, error) {
	nonce, err := hex.DecodeString(nonceHex)
	if err != nil || len(nonce) != 32 {
		return "", errors.New("bad nonce in the agent's banner")
	}
	m := hmac.New(sha512.New, key)
	m.Write(nonce)
	return hex.EncodeToString(m.Sum(nil)[:32]), nil
}

func send(conn net.Conn, line string) error {
	_, err := conn.Write([]byte(line + "\n"))
	return err
}

// connect connects, reads the banner, sends HELLO (with a MAC if the agent asks for one) and
// reads its reply.
func connect(path, name string) (net.Conn, *bufio.Scanner, error) {
	conn, err := net.Dial("unix", path)
	if err != nil {
		return nil, nil, err
	}
	lines := bufio.NewScanner(conn) // splits at "\n", drops a "\r" before it
	lines.Buffer(make([]byte, maxLine), maxLine)
	fail := func(err error) (net.Conn, *bufio.Scanner, error) {
		conn.Close()
		return nil, nil, err
	}

	// readLine reads one line, within 10 s: only for the handshake, before the event loop.
	readLine := func() (string, error) {
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		defer conn.SetReadDeadline(time.Time{})
		if lines.Scan() {
			return lines.Text(), nil
		}
		if lines.Err() != nil {
			return "", lines.Err()
		}
		return "", errors.New("the agent closed the connection")
	}

	banner, err := readLine()
	if err != nil {
		return fail(err)
	}
	words := strings.Fields(banner)
	if len(words) == 0 || words[0] != "LEASEKEEPER" {
		return fail(errors.New(banner)) // e.g. ERR too_many_clients
	}
	hello := "HELLO 1 client=" + name
	if attrs := attributes(words); attrs["auth"] == "hmac" {
		keyFile := os.Getenv("LEASEKEEPER_AUTH_KEY_FILE")
		if keyFile == "" {
			return fail(errors.New("the agent requires authentication: " +
				"set LEASEKEEPER_AUTH_KEY_FILE to its key file"))
		}
		key, err := loadKey(keyFile)
		if err != nil {
			return fail(err)
		}
		mac, err := macHex(key, attrs["nonce"])
		if err != nil {
			return fail(err)
		}
		hello += " mac=" + mac
	}
	if err := send(conn, hello); err != nil {
		return fail(err)
	}
	reply, err := readLine() // no events come before HELLO's reply
	if err != nil {
		return fail(err)
	}
	if !strings.HasPrefix(reply, "OK HELLO") {
		return fail(errors.New(reply)) // e.g. ERR auth_failed
	}
	return conn, lines, nil
}

func run() int {
	socket := flag.String("s", "", "the agent's socket (default: $LEASEKEEPER_SOCKET, then "+defaultSocket+")")
	name := flag.String("n", "go-example", "client name for the agent's logs")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: %s [-s SOCKET] [-n NAME] LOCK\n", os.Args[0])
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 1 {
		flag.Usage()
		return 2
	}
	lock := flag.Arg(0)
	path := *socket
	if path == "" {
		path = os.Getenv("LEASEKEEPER_SOCKET")
	}
	if path == "" {
		path = defaultSocket
	}

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)

	conn, scanner, err := connect(path, *name)
	if err == nil {
		err = send(conn, "CAMPAIGN "+lock)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "app: %s: %v\n", path, err)
		return 1
	}
	defer conn.Close()

	// A goroutine reads the agent's lines; the channel is closed at EOF (or a read error).
	lines := make(chan string)
	var readErr error
	go func() {
		for scanner.Scan() {
			lines <- scanner.Text()
		}
		readErr = scanner.Err()
		close(lines)
	}()

	// Leader work: one slice per tick while leading. A nil channel never fires.
	var token string // the fencing token we lead under, "" when not leading
	var ticker *time.Ticker
	var tick <-chan time.Time
	n := 0
	startWork := func(t string) {
		token, n = t, 0
		ticker = time.NewTicker(workInterval)
		tick = ticker.C
	}
	stopWork := func() {
		// A real app cancels or finishes its in-flight leader work here, before returning.
		if ticker != nil {
			ticker.Stop()
		}
		ticker, tick, token = nil, nil, ""
	}
	defer stopWork()

	for {
		select {
		case <-tick:
			n++
			say("WORK token=%s n=%d", token, n) // e.g. a write, fenced with the token

		case s := <-sigs:
			// Closing the connection counts as stepping down for the agent.
			stopWork()
			if s == syscall.SIGTERM {
				say("EXIT signal=SIGTERM")
			} else {
				say("EXIT signal=SIGINT")
			}
			return 0

		case line, ok := <-lines:
			if !ok {
				// The agent is gone: nobody can prove our lease is still valid. Stop leader
				// work at once, then exit (or reconnect, in a real app).
				stopWork()
				say("EOF")
				if readErr != nil {
					fmt.Fprintf(os.Stderr, "app: %v\n", readErr)
				}
				return 1
			}
			words := strings.Fields(line)
			if len(words) == 0 {
				continue
			}
			a := attributes(words[1:])
			switch words[0] {
			case "ERR": // our CAMPAIGN or ACK was refused
				stopWork()
				say("%s", line)
				return 1
			case "OK":
				if len(words) > 1 && words[1] == "CAMPAIGN" {
					say("CAMPAIGN lock=%s", lock)
				}
			case "LEADER":
				if a["token"] != token {
					stopWork()
					startWork(a["token"])
					say("LEADER token=%s ttl_ms=%s", a["token"], a["ttl_ms"])
				}
			case "FOLLOWER":
				stopWork() // someone else leads (or nobody yet): never work as a follower
				say("FOLLOWER holder=%s", a["holder"])
			case "STEPDOWN":
				stopWork() // first stop, then acknowledge: the agent waits for this ACK
				say("STEPDOWN token=%s -> ACK", a["token"])
				if err := send(conn, "ACK "+lock+" "+a["token"]); err != nil {
					say("EOF")
					fmt.Fprintf(os.Stderr, "app: %v\n", err)
					return 1
				}
			case "LOST":
				stopWork() // at once: another replica may lead already; no ACK
				say("LOST token=%s reason=%s", a["token"], a["reason"])
			case "RELEASED":
				say("RELEASED token=%s outcome=%s", a["token"], a["outcome"])
			case "STOP":
				stopWork()
				say("STOP")
				return 0
			}
		}
	}
}

func main() {
	os.Exit(run())
}
