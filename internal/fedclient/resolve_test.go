package fedclient

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/internal/freeport"
)

// remote is a TLS test server (self-signed, so clients skip verification) answering
// /_matrix/federation/v1/version and, when wellKnown is set, /.well-known/matrix/server.
type remote struct {
	srv  *httptest.Server
	port int

	mu            sync.Mutex
	hosts         []string // Host headers of version requests
	wellKnownHits int
	wellKnown     string // body; "" answers 404
	cacheControl  string
}

func newRemote(t *testing.T) *remote {
	t.Helper()
	r := &remote{}
	r.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		defer r.mu.Unlock()
		switch req.URL.Path {
		case "/.well-known/matrix/server":
			r.wellKnownHits++
			if r.wellKnown == "" {
				http.NotFound(w, req)
				return
			}
			if r.cacheControl != "" {
				w.Header().Set("Cache-Control", r.cacheControl)
			}
			_, _ = w.Write([]byte(r.wellKnown))
		case "/_matrix/federation/v1/version":
			r.hosts = append(r.hosts, req.Host)
			_, _ = w.Write([]byte(`{"server":{"name":"remote","version":"1"}}`))
		default:
			http.NotFound(w, req)
		}
	}))
	t.Cleanup(r.srv.Close)
	r.port = r.srv.Listener.Addr().(*net.TCPAddr).Port
	return r
}

func (r *remote) lastHost() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.hosts) == 0 {
		return ""
	}
	return r.hosts[len(r.hosts)-1]
}

func (r *remote) hits() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.wellKnownHits
}

// closedPort is a loopback port nothing listens on, reserved for the test process
// (internal/freeport), so that no other test's listener takes it meanwhile.
func closedPort(t *testing.T) int {
	t.Helper()
	port, err := freeport.Port()
	if err != nil {
		t.Fatal(err)
	}
	return port
}

func noSRV(context.Context, string, string, string) (string, []*net.SRV, error) {
	return "", nil, &net.DNSError{Err: "no such host", IsNotFound: true}
}

// testResolver skips certificate checks, has no SRV records and fetches .well-known from a
// port where nothing listens unless told otherwise.
func testResolver(t *testing.T) *Resolver {
	r := NewResolver(true, nil)
	r.WellKnownPort, r.DefaultPort, r.LookupSRV = closedPort(t), closedPort(t), noSRV
	return r
}

func version(t *testing.T, r *Resolver, name spec.ServerName) error {
	t.Helper()
	_, key, _ := ed25519.GenerateKey(nil)
	c := New(Options{ServerName: "origin.test", KeyID: "ed25519:a", PrivateKey: key, SkipVerify: true, Resolver: r, Timeout: 5 * time.Second})
	_, err := c.GetVersion(context.Background(), name)
	return err
}

func TestResolveIPLiteralAndExplicitPort(t *testing.T) {
	rem := newRemote(t)
	r := testResolver(t)
	for _, tc := range []struct {
		name spec.ServerName
		host string
	}{
		{spec.ServerName(fmt.Sprintf("127.0.0.1:%d", rem.port)), fmt.Sprintf("127.0.0.1:%d", rem.port)},
		{spec.ServerName(fmt.Sprintf("localhost:%d", rem.port)), fmt.Sprintf("localhost:%d", rem.port)},
	} {
		if err := version(t, r, tc.name); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := rem.lastHost(); got != tc.host {
			t.Fatalf("%s: Host header %q, want %q", tc.name, got, tc.host)
		}
	}
	if rem.hits() != 0 {
		t.Fatal(".well-known was fetched for a name with a port")
	}
	// An IP literal without a port goes to the default port.
	r.DefaultPort = rem.port
	if err := version(t, r, "127.0.0.1"); err != nil || rem.lastHost() != "127.0.0.1" {
		t.Fatalf("IP literal on the default port: %v, Host %q", err, rem.lastHost())
	}
	res, err := r.Resolve(context.Background(), "[::1]")
	if err != nil || res[0].Destination != net.JoinHostPort("::1", strconv.Itoa(rem.port)) || res[0].TLSServerName != "::1" {
		t.Fatalf("IPv6 literal: %+v %v", res, err)
	}
	if _, err = r.Resolve(context.Background(), "bad name!"); err == nil {
		t.Fatal("an invalid server name resolved")
	}
}

// TestResolveDefaultPort: no .well-known, no SRV record: the hostname on port 8448 (here the
// test server's port), with the bare hostname as Host header.
func TestResolveDefaultPort(t *testing.T) {
	rem := newRemote(t)
	r := testResolver(t)
	r.DefaultPort = rem.port
	if err := version(t, r, "localhost"); err != nil || rem.lastHost() != "localhost" {
		t.Fatalf("default port: %v, Host %q", err, rem.lastHost())
	}
}

// TestResolveWellKnown delegates localhost to the test server's IP and port; the answer is
// cached for its max-age, then fetched again.
func TestResolveWellKnown(t *testing.T) {
	rem := newRemote(t)
	rem.wellKnown = fmt.Sprintf(`{"m.server": "127.0.0.1:%d"}`, rem.port)
	rem.cacheControl = "public, max-age=3600"
	r := testResolver(t)
	r.WellKnownPort = rem.port
	now := time.Now()
	r.Now = func() time.Time { return now }
	for i := 0; i < 3; i++ {
		if err := version(t, r, "localhost"); err != nil {
			t.Fatal(err)
		}
	}
	if want := fmt.Sprintf("127.0.0.1:%d", rem.port); rem.lastHost() != want || rem.hits() != 1 {
		t.Fatalf("Host %q (want %q), .well-known fetched %d times (want 1)", rem.lastHost(), want, rem.hits())
	}
	now = now.Add(time.Hour + time.Second)
	if err := version(t, r, "localhost"); err != nil || rem.hits() != 2 {
		t.Fatalf("after max-age: %v, .well-known fetched %d times (want 2)", err, rem.hits())
	}
	// A delegated name without a port goes through SRV and the default port in its turn.
	rem.wellKnown = `{"m.server": "localhost"}`
	r.Forget("localhost")
	r.DefaultPort = rem.port
	if err := version(t, r, "localhost"); err != nil || rem.lastHost() != "localhost" {
		t.Fatalf("delegated without port: %v, Host %q", err, rem.lastHost())
	}
}

// TestResolveSRV: without .well-known, _matrix-fed._tcp wins over the default port; the
// Host header and certificate name stay the server name.
func TestResolveSRV(t *testing.T) {
	rem := newRemote(t)
	r := testResolver(t)
	var asked []string
	r.LookupSRV = func(_ context.Context, service, proto, name string) (string, []*net.SRV, error) {
		asked = append(asked, service+"."+proto+"."+name)
		if service != "matrix-fed" {
			return noSRV(nil, "", "", "")
		}
		return "", []*net.SRV{{Target: "127.0.0.1.", Port: uint16(rem.port)}}, nil
	}
	if err := version(t, r, "localhost"); err != nil || rem.lastHost() != "localhost" {
		t.Fatalf("SRV: %v, Host %q", err, rem.lastHost())
	}
	res, _ := r.Resolve(context.Background(), "localhost")
	if len(asked) != 1 || res[0].TLSServerName != "localhost" {
		t.Fatalf("SRV lookups %v, result %+v", asked, res)
	}
}

// TestUnreachable reports the destinations tried.
func TestUnreachable(t *testing.T) {
	err := version(t, testResolver(t), spec.ServerName(fmt.Sprintf("127.0.0.1:%d", closedPort(t))))
	var opErr *net.OpError
	if err == nil || !errors.As(err, &opErr) {
		t.Fatalf("want a dial error, got %v", err)
	}
}

func TestCacheTTL(t *testing.T) {
	now := time.Now()
	for _, tc := range []struct {
		h    http.Header
		want time.Duration
	}{
		{http.Header{}, 24 * time.Hour},
		{http.Header{"Cache-Control": {"max-age=60"}}, time.Minute},
		{http.Header{"Cache-Control": {"max-age=999999"}}, 48 * time.Hour},
		{http.Header{"Cache-Control": {"no-store"}}, 0},
		{http.Header{"Expires": {now.Add(2 * time.Hour).UTC().Format(http.TimeFormat)}}, 2 * time.Hour},
	} {
		if got := cacheTTL(tc.h, now); (got - tc.want).Abs() > 2*time.Second {
			t.Errorf("%v: %v, want %v", tc.h, got, tc.want)
		}
	}
}
