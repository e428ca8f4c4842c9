package fedclient

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/internal/outbound"
)

func policy(t *testing.T, cidrs []string) *outbound.Policy {
	t.Helper()
	p, err := outbound.NewPolicy(cidrs)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestDenyNetworks: with the default deny list a federation request to a server on
// 127.0.0.1 never reaches it; with an empty list it does.
func TestDenyNetworks(t *testing.T) {
	rem := newRemote(t)
	name := spec.ServerName(fmt.Sprintf("127.0.0.1:%d", rem.port))
	_, key, _ := ed25519.GenerateKey(nil)
	for _, tc := range []struct {
		deny    []string
		reached bool
	}{{outbound.DefaultDenyNetworks, false}, {[]string{}, true}} {
		p := policy(t, tc.deny)
		r := testResolver(t)
		r.WellKnownClient.Transport = newHTTPTransport("", true, p)
		c := New(Options{ServerName: "origin.test", KeyID: "ed25519:a", PrivateKey: key, SkipVerify: true, Resolver: r, Deny: p, Timeout: 5 * time.Second})
		_, err := c.GetVersion(context.Background(), name)
		if tc.reached != (err == nil) || (!tc.reached && !errors.Is(err, outbound.ErrDenied)) {
			t.Fatalf("deny %v: %v", tc.deny, err)
		}
		if reached := rem.lastHost() != ""; reached != tc.reached {
			t.Fatalf("deny %v: server reached %v", tc.deny, reached)
		}
	}
}

// TestWellKnownRedirectDenied: a .well-known answer redirecting to a denied address is not
// followed there.
func TestWellKnownRedirectDenied(t *testing.T) {
	var insideHits atomic.Int32
	l, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	inside := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		insideHits.Add(1)
		_, _ = w.Write([]byte(`{"m.server":"elsewhere.test:443"}`))
	}))
	inside.Listener = l
	inside.StartTLS()
	t.Cleanup(inside.Close)
	redirector := httptest.NewTLSServer(http.RedirectHandler(inside.URL+"/.well-known/matrix/server", http.StatusFound))
	t.Cleanup(redirector.Close)

	for _, tc := range []struct {
		deny    string
		reached bool
	}{{"127.0.0.2/32", false}, {"192.0.2.0/24", true}} {
		r := NewResolver(true, policy(t, []string{tc.deny}))
		r.WellKnownPort = redirector.Listener.Addr().(*net.TCPAddr).Port
		before := insideHits.Load()
		delegated, _, err := r.wellKnown(context.Background(), "127.0.0.1")
		if reached := insideHits.Load() != before; reached != tc.reached {
			t.Fatalf("deny %s: redirect target reached %v (%q, %v)", tc.deny, reached, delegated, err)
		}
		if !tc.reached && !errors.Is(err, outbound.ErrDenied) {
			t.Fatalf("deny %s: %v, want ErrDenied", tc.deny, err)
		}
		if tc.reached && delegated != "elsewhere.test:443" {
			t.Fatalf("deny %s: delegated to %q, %v", tc.deny, delegated, err)
		}
	}
}
