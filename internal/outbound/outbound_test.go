package outbound

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"
)

func mustPolicy(t *testing.T, cidrs []string) *Policy {
	t.Helper()
	p, err := NewPolicy(cidrs)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestAllowed(t *testing.T) {
	def := mustPolicy(t, DefaultDenyNetworks)
	cases := []struct {
		ip   string
		want bool
	}{
		{"127.0.0.1", false}, {"127.255.0.9", false}, {"10.1.2.3", false}, {"172.16.0.1", false}, {"172.31.255.255", false},
		{"192.168.1.1", false}, {"100.64.0.1", false}, {"169.254.169.254", false}, {"224.0.0.1", false}, {"0.0.0.0", false},
		{"::1", false}, {"::", false}, {"fe80::1", false}, {"fd00::1", false}, {"ff02::1", false},
		{"::ffff:127.0.0.1", false}, {"::ffff:10.0.0.1", false}, {"::ffff:169.254.169.254", false},
		{"8.8.8.8", true}, {"172.32.0.1", true}, {"100.128.0.1", true}, {"2001:db8::1", true}, {"::ffff:8.8.8.8", true},
	}
	for _, c := range cases {
		if got := def.Allowed(netip.MustParseAddr(c.ip)); got != c.want {
			t.Errorf("default policy, %s: allowed %v, want %v", c.ip, got, c.want)
		}
	}
	empty := mustPolicy(t, []string{})
	var nilPolicy *Policy
	for _, ip := range []string{"127.0.0.1", "10.0.0.1", "::1"} {
		if !empty.Allowed(netip.MustParseAddr(ip)) || !nilPolicy.Allowed(netip.MustParseAddr(ip)) {
			t.Errorf("%s refused by an empty policy", ip)
		}
	}
	// A mapped prefix in the list covers the plain IPv4 address too.
	mapped := mustPolicy(t, []string{"::ffff:203.0.113.0/120"})
	if mapped.Allowed(netip.MustParseAddr("203.0.113.7")) || !mapped.Allowed(netip.MustParseAddr("203.0.114.7")) {
		t.Error("an IPv4-mapped prefix does not match its IPv4 addresses")
	}
	if _, err := NewPolicy([]string{"10.0.0.0"}); err == nil {
		t.Error("an address without a prefix length was accepted")
	}
}

func serve(t *testing.T, addr string, h http.Handler) string {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.Listener = l
	srv.Start()
	t.Cleanup(srv.Close)
	return srv.URL
}

func client(p *Policy) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: p.Dialer(5*time.Second, 0).DialContext}}
}

func ok() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) })
}

// TestDialDenied: with the default list, 127.0.0.1 and localhost (resolved at dial time)
// are refused; with an empty list they are reached.
func TestDialDenied(t *testing.T) {
	url := serve(t, "127.0.0.1:0", ok())
	_, port, _ := net.SplitHostPort(url[len("http://"):])
	for _, target := range []string{url, "http://localhost:" + port} {
		_, err := client(mustPolicy(t, DefaultDenyNetworks)).Get(target)
		if !errors.Is(err, ErrDenied) {
			t.Errorf("default policy, GET %s: %v, want ErrDenied", target, err)
		}
	}
	res, err := client(mustPolicy(t, []string{})).Get(url)
	if err != nil {
		t.Fatalf("empty policy: %v", err)
	}
	_ = res.Body.Close() // empty body
	if res.StatusCode != http.StatusNoContent {
		t.Fatalf("empty policy: status %d", res.StatusCode)
	}
	d := mustPolicy(t, DefaultDenyNetworks).Dialer(time.Second, 0)
	if _, err := d.DialContext(context.Background(), "tcp", "[::ffff:127.0.0.1]:"+port); !errors.Is(err, ErrDenied) {
		t.Errorf("IPv4-mapped loopback: %v, want ErrDenied", err)
	}
}

// TestRedirectDenied: an allowed server redirecting to a denied address does not get the
// client there; the target is reachable directly when allowed.
func TestRedirectDenied(t *testing.T) {
	target := serve(t, "127.0.0.2:0", ok())
	redirector := serve(t, "127.0.0.1:0", http.RedirectHandler(target+"/inside", http.StatusFound))
	p := mustPolicy(t, []string{"127.0.0.2/32"})
	if _, err := client(p).Get(redirector); !errors.Is(err, ErrDenied) {
		t.Fatalf("redirect to a denied address: %v, want ErrDenied", err)
	}
	res, err := client(mustPolicy(t, []string{"127.0.0.3/32"})).Get(redirector)
	if err != nil {
		t.Fatalf("redirect to an allowed address: %v", err)
	}
	_ = res.Body.Close() // empty body
	if res.StatusCode != http.StatusNoContent {
		t.Fatalf("redirect to an allowed address: status %d", res.StatusCode)
	}
}
